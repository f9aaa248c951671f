// The byte stream to HQ that MQTT.js runs on (given to it as its stream builder): a TCP or TLS
// socket behind a thin Duplex that takes the acknowledgements of our own uplink publishes
// (PUBACK; PUBREC and PUBCOMP of QoS 2) out of the inbound bytes before MQTT.js parses them.
//
// Why: link.ts publishes uplink messages with our own encoder, so their acknowledgements are ours
// to match. Left to MQTT.js, each one costs a packet object, a process.nextTick, a keepalive
// timer reschedule and several debug() calls — about 4 µs of main-thread CPU per message, a sixth
// of the whole uplink during a backlog drain — and MQTT.js would take them for acks of packets it
// never sent. Here an acknowledgement is a 4-byte frame read in place. Everything else (CONNACK,
// SUBACK, the downlink, acks for ids that are not ours) passes through unchanged and in order; an
// acknowledgement whose id is ours never reaches MQTT.js.
import net from 'node:net';
import tls from 'node:tls';
import { Duplex } from 'node:stream';

/** MQTT fixed header first bytes of the acknowledgements a tap may take. */
export const PUBACK = 0x40;
export const PUBREC = 0x50;
export const PUBCOMP = 0x70;

/**
 * Splits inbound MQTT bytes at frame boundaries and drops the acknowledgement frames (PUBACK, and
 * PUBREC / PUBCOMP where asked) that `onAck` claims. Frames may span chunks: a frame that passes
 * through is passed on as its bytes arrive; only a split fixed header or a split acknowledgement
 * (a few bytes) is held until the rest arrives.
 */
export class AckTap {
  /** Bytes of a passing frame still to come. */
  private skip = 0;
  /** An incomplete fixed header or acknowledgement, held. */
  private held: Buffer | null = null;
  /** 1 for each packet type (first byte >> 4) the tap offers to onAck. */
  private readonly tapped = new Uint8Array(16);

  /**
   * @param onAck an acknowledgement of a tapped type arrived (`type`: its first byte): true when
   *   it was ours (the frame is dropped).
   * @param types the first bytes of the acknowledgements to offer (PUBACK, PUBREC, PUBCOMP).
   */
  constructor(
    private readonly onAck: (packetId: number, reasonCode: number, type: number) => boolean,
    types: readonly number[] = [PUBACK],
  ) {
    for (const t of types) this.tapped[t >> 4] = 1;
  }

  /** The bytes to pass on (the chunk itself when nothing was taken out), or null for none. */
  filter(chunk: Buffer): Buffer | null {
    let buf = chunk;
    if (this.held !== null) {
      buf = Buffer.concat([this.held, chunk]);
      this.held = null;
    }
    const len = buf.length;
    let pieces: Buffer[] | null = null;
    let keepFrom = 0;
    let i = 0;
    while (i < len) {
      if (this.skip > 0) {
        const n = Math.min(this.skip, len - i);
        this.skip -= n;
        i += n;
        continue;
      }
      // Remaining length: 1-4 bytes of 7 bits each.
      let rem = 0;
      let mul = 1;
      let h = i + 1;
      let complete = false;
      for (let k = 0; k < 4 && h < len; k++) {
        const b = buf[h++]!;
        rem += (b & 0x7f) * mul;
        mul *= 128;
        if ((b & 0x80) === 0) {
          complete = true;
          break;
        }
      }
      if (!complete && h - i - 1 < 4) {
        // The header continues in the next chunk.
        this.held = Buffer.from(buf.subarray(i));
        break;
      }
      // (A malformed length — 4 continuation bytes — passes through: MQTT.js reports it.)
      const total = h - i + rem;
      const first = buf[i]!;
      if ((first & 0x0f) === 0 && this.tapped[first >> 4] === 1 && complete) {
        if (i + total > len) {
          this.held = Buffer.from(buf.subarray(i));
          break;
        }
        if (rem >= 2 && this.onAck(buf.readUInt16BE(h), rem >= 3 ? buf[h + 2]! : 0, first)) {
          // (Back-to-back acknowledgements leave nothing between them to keep.)
          if (i > keepFrom) (pieces ??= []).push(buf.subarray(keepFrom, i));
          else pieces ??= [];
          keepFrom = i + total;
        }
        i += total;
        continue;
      }
      if (i + total > len) {
        this.skip = i + total - len;
        i = len;
      } else {
        i += total;
      }
    }
    const end = this.held === null ? len : len - this.held.length;
    if (pieces === null) return end === len && buf === chunk ? chunk : end > 0 ? buf.subarray(0, end) : null;
    if (keepFrom < end) pieces.push(buf.subarray(keepFrom, end));
    if (pieces.length === 0) return null;
    const out = pieces.length === 1 ? pieces[0]! : Buffer.concat(pieces);
    return out.length > 0 ? out : null;
  }
}

export interface HqSocketOptions {
  host: string;
  port: number;
  /** TLS when set (rejectUnauthorized is always on: HQ must present a certificate the CA signed). */
  tls?: { ca?: Buffer | string; cert?: Buffer | string; key?: Buffer | string; servername?: string };
}

/**
 * A Duplex over a new TCP or TLS connection: writes go to the socket as they are, reads come
 * through `tap`. MQTT.js sees an ordinary stream (pipe, write, end, destroy, 'close', 'error').
 */
export class HqStream extends Duplex {
  readonly socket: net.Socket;

  constructor(opts: HqSocketOptions, private readonly tap: AckTap, onData: () => void) {
    super({ allowHalfOpen: false });
    if (opts.tls) {
      const t = opts.tls;
      // The server name is checked against HQ's certificate (the host itself unless configured).
      const servername = t.servername ?? (net.isIP(opts.host) === 0 ? opts.host : undefined);
      this.socket = tls.connect({
        host: opts.host,
        port: opts.port,
        rejectUnauthorized: true,
        ...(t.ca !== undefined ? { ca: t.ca } : {}),
        ...(t.cert !== undefined ? { cert: t.cert } : {}),
        ...(t.key !== undefined ? { key: t.key } : {}),
        ...(servername !== undefined ? { servername } : {}),
      });
    } else {
      this.socket = net.createConnection({ host: opts.host, port: opts.port });
    }
    const s = this.socket;
    s.on('data', (chunk: Buffer) => {
      onData();
      const pass = this.tap.filter(chunk);
      if (pass !== null && !this.push(pass)) s.pause();
    });
    s.on('end', () => this.push(null));
    s.on('error', (err) => this.destroy(err));
    s.on('close', () => this.destroy());
  }

  override _read(): void {
    this.socket.resume();
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.socket.write(chunk, cb);
  }

  override _final(cb: (err?: Error | null) => void): void {
    this.socket.end(cb);
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    this.socket.destroy();
    cb(err);
  }

  /** Bytes accepted but not yet handed to the kernel (this stream's and the socket's). */
  get bufferedBytes(): number {
    return this.writableLength + this.socket.writableLength;
  }
}
