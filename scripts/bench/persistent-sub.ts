// The persistent-session subscriber of the `durable-qos1` scenario, run as its own process; also
// the counting subscriber at HQ (`fleet/#`) of `uplink-drain`.
//
//   node dist/scripts/bench/persistent-sub.js --port P --expected N [--host H] [--client-id ID]
//        [--filter F] [--timeout S]
//
// mqttbench always connects with clean session 1, so it cannot be the subscriber whose messages
// a broker has to keep durably. This is a deliberately small MQTT 3.1.1 client on a raw socket
// (a general-purpose client library would be the bottleneck at 100k msgs/s): CONNECT with clean
// session 0 and a fixed client id, SUBSCRIBE at QoS 1, PUBACK every QoS 1 PUBLISH (the PUBACKs of
// one socket read go out in one write). It understands mqttbench's 32-byte payload header
// (run id, publisher, sequence number, topic index, send time on CLOCK_MONOTONIC) and counts
// unique messages, duplicates and redeliveries per mqttbench run, and the monotonic times of the
// first and last message received (first_rx_us, last_rx_us).
//
// stdout: `{"ready":true,...}` once the SUBACK arrived, then one JSON line with the result when
// `--expected` unique messages of one mqttbench run arrived (then DISCONNECT, exit 0), at the
// timeout (exit 3) or on SIGTERM (exit 3). Connection problems: exit 4.
import net from 'node:net';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    host: { type: 'string', default: '127.0.0.1' },
    port: { type: 'string' },
    'client-id': { type: 'string', default: 'bench-durable-sub' },
    filter: { type: 'string', default: 'bench/#' },
    expected: { type: 'string' },
    timeout: { type: 'string', default: '300' },
    keepalive: { type: 'string', default: '60' },
  },
  strict: true,
});

const port = Number(values.port);
const expected = Number(values.expected);
const timeoutS = Number(values.timeout);
const keepalive = Number(values.keepalive);
if (!Number.isInteger(port) || port <= 0 || !Number.isInteger(expected) || expected <= 0 || !(timeoutS > 0)) {
  process.stderr.write('usage: persistent-sub --port P --expected N [--host H] [--client-id ID] [--filter F] [--timeout S]\n');
  process.exit(1);
}
const clientId = values['client-id'];
const HDR_LEN = 32;

function remainingLength(n: number): Buffer {
  const out: number[] = [];
  do {
    let byte = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) byte |= 0x80;
    out.push(byte);
  } while (n > 0);
  return Buffer.from(out);
}

function packet(first: number, body: Buffer): Buffer {
  return Buffer.concat([Buffer.from([first]), remainingLength(body.length), body]);
}

function utf8Field(s: string): Buffer {
  const b = Buffer.from(s, 'utf8');
  const len = Buffer.alloc(2);
  len.writeUInt16BE(b.length, 0);
  return Buffer.concat([len, b]);
}

function connectPacket(): Buffer {
  const head = Buffer.alloc(4);
  head[0] = 4; // protocol level 4 = MQTT 3.1.1
  head[1] = 0x00; // connect flags: clean session 0, no will, no credentials
  head.writeUInt16BE(keepalive, 2);
  return packet(0x10, Buffer.concat([utf8Field('MQTT'), head, utf8Field(clientId)]));
}

function subscribePacket(filter: string): Buffer {
  return packet(0x82, Buffer.concat([Buffer.from([0, 1]), utf8Field(filter), Buffer.from([1])]));
}

interface RunStats {
  runId: number;
  received: number;
  unique: number;
  duplicates: number;
  redelivered: number;
  firstSend: bigint;
  firstRx: bigint;
  lastRx: bigint;
  seen: Map<number, Uint8Array>;
}

const runs = new Map<number, RunStats>();
let foreign = 0;
let protocolErrors = 0;
let sessionPresent: boolean | null = null;
let finished = false;
let ending = false;
const cpu0 = process.cpuUsage();
const t0 = process.hrtime.bigint();

function statsFor(runId: number): RunStats {
  let s = runs.get(runId);
  if (!s) {
    s = { runId, received: 0, unique: 0, duplicates: 0, redelivered: 0, firstSend: -1n, firstRx: -1n, lastRx: 0n, seen: new Map() };
    runs.set(runId, s);
  }
  return s;
}

/** Marks (pub, seq) as seen; false when it was seen before. */
function markSeen(s: RunStats, pub: number, seq: number): boolean {
  let bits = s.seen.get(pub);
  const byte = seq >>> 3;
  if (!bits || byte >= bits.length) {
    const grown = new Uint8Array(Math.max(byte + 1, (bits?.length ?? 0) * 2, 1024));
    if (bits) grown.set(bits);
    bits = grown;
    s.seen.set(pub, bits);
  }
  const mask = 1 << (seq & 7);
  if ((bits[byte] ?? 0) & mask) return false;
  bits[byte] = (bits[byte] ?? 0) | mask;
  return true;
}

/** The run the result is about: the one that completed, else the one with most messages. */
function mainRun(): RunStats | null {
  let best: RunStats | null = null;
  for (const s of runs.values()) if (!best || s.unique > best.unique) best = s;
  return best;
}

function result(error: string | null): Record<string, unknown> {
  const s = mainRun();
  const wallS = Number(process.hrtime.bigint() - t0) / 1e9;
  const cpu = process.cpuUsage(cpu0);
  const cpuS = (cpu.user + cpu.system) / 1e6;
  const durS = s && s.firstSend >= 0n && s.lastRx > s.firstSend ? Number(s.lastRx - s.firstSend) / 1e9 : 0;
  let other = 0;
  for (const r of runs.values()) if (r !== s) other += r.received;
  const out: Record<string, unknown> = {
    driver: 'persistent-sub',
    client_id: clientId,
    clean_session: false,
    session_present: sessionPresent,
    run_id: s?.runId ?? null,
    expected,
    received: s?.received ?? 0,
    unique: s?.unique ?? 0,
    lost: expected - (s?.unique ?? 0),
    duplicates: s?.duplicates ?? 0,
    redelivered: s?.redelivered ?? 0,
    other_runs: other,
    foreign,
    proto_errors: protocolErrors,
    duration_s: Number(durS.toFixed(4)),
    throughput: durS > 0 && s ? Number((s.received / durS).toFixed(1)) : 0,
    // CLOCK_MONOTONIC (process.hrtime), comparable with the harness's and mqttbench's clocks
    first_rx_us: s && s.firstRx >= 0n ? Number(s.firstRx / 1000n) : null,
    last_rx_us: s && s.lastRx > 0n ? Number(s.lastRx / 1000n) : null,
    loader_cpu_s: Number(cpuS.toFixed(3)),
    loader_cpu_pct: wallS > 0 ? Number(((100 * cpuS) / wallS).toFixed(1)) : 0,
  };
  if (error) out.error = error;
  return out;
}

function finish(code: number, error: string | null): void {
  if (finished) return;
  finished = true;
  process.stdout.write(`${JSON.stringify(result(error))}\n`, () => process.exit(code));
}

const sock = net.connect({ host: values.host, port });
sock.setNoDelay(true);
let pending: Buffer | null = null;

function onPublish(flags: number, b: Buffer, start: number, end: number, now: bigint, acks: Buffer[]): void {
  const qos = (flags >> 1) & 3;
  if (end - start < 2) {
    protocolErrors++;
    return;
  }
  const topicLen = b.readUInt16BE(start);
  let off = start + 2 + topicLen;
  if (qos > 0) {
    if (off + 2 > end) {
      protocolErrors++;
      return;
    }
    const id = b.readUInt16BE(off);
    off += 2;
    if (qos === 1) acks.push(Buffer.from([0x40, 2, id >> 8, id & 0xff]));
    else protocolErrors++; // subscribed at QoS 1: QoS 2 never arrives
  }
  if (end - off < HDR_LEN) {
    foreign++;
    return;
  }
  const s = statsFor(b.readUInt32LE(off));
  const pub = b.readUInt32LE(off + 4);
  const seq = b.readUInt32LE(off + 8);
  const sent = b.readBigUInt64LE(off + 16);
  s.received++;
  if (s.firstRx < 0n) s.firstRx = now;
  s.lastRx = now;
  if (s.firstSend < 0n || sent < s.firstSend) s.firstSend = sent;
  if (flags & 0x08) s.redelivered++;
  if (markSeen(s, pub, seq)) s.unique++;
  else s.duplicates++;
}

sock.on('connect', () => sock.write(connectPacket()));
sock.on('data', (chunk: Buffer) => {
  const b: Buffer = pending ? Buffer.concat([pending, chunk]) : chunk;
  pending = null;
  const now = process.hrtime.bigint();
  const acks: Buffer[] = [];
  let off = 0;
  let done = false;
  while (off < b.length) {
    // fixed header: type/flags byte, remaining length (1-4 bytes, 7 bits each)
    let len = 0;
    let mult = 1;
    let i = off + 1;
    let complete = false;
    for (; i < b.length && i < off + 5; i++) {
      const byte = b[i] ?? 0;
      len += (byte & 0x7f) * mult;
      mult *= 128;
      if ((byte & 0x80) === 0) {
        complete = true;
        i++;
        break;
      }
    }
    if (!complete || i + len > b.length) break;
    const first = b[off] ?? 0;
    const start = i;
    const end = i + len;
    switch (first >> 4) {
      case 3:
        onPublish(first & 0x0f, b, start, end, now, acks);
        break;
      case 2: {
        const rc = b[start + 1] ?? 255;
        if (rc !== 0) {
          process.stderr.write(`CONNACK return code ${rc}\n`);
          finish(4, `CONNACK return code ${rc}`);
          return;
        }
        sessionPresent = ((b[start] ?? 0) & 1) === 1;
        // Subscribe on every connect: idempotent for a resumed session, needed for a new one.
        sock.write(subscribePacket(values.filter));
        break;
      }
      case 9: {
        const granted = b[start + 2] ?? 0x80;
        if (granted === 0x80) {
          finish(4, 'SUBACK refused the filter');
          return;
        }
        process.stdout.write(`${JSON.stringify({ ready: true, session_present: sessionPresent, granted })}\n`);
        break;
      }
      case 13: // PINGRESP
        break;
      default:
        protocolErrors++;
    }
    off = end;
  }
  if (off < b.length) pending = Buffer.from(b.subarray(off));
  if (acks.length > 0) sock.write(acks.length === 1 ? (acks[0] as Buffer) : Buffer.concat(acks));
  for (const s of runs.values()) if (s.unique >= expected) done = true;
  if (done && !ending) {
    ending = true;
    // PUBACKs first (same socket, in order), then a clean DISCONNECT: the session stays.
    sock.end(Buffer.from([0xe0, 0]), () => finish(0, null));
  }
});
sock.on('error', (err) => finish(4, `socket: ${err.message}`));
sock.on('close', () => finish(3, 'connection closed by the broker'));

const ping = setInterval(() => sock.write(Buffer.from([0xc0, 0])), (keepalive * 1000) / 2);
ping.unref();
setTimeout(() => finish(3, 'timeout'), timeoutS * 1000).unref();
process.on('SIGTERM', () => finish(3, 'stopped by the harness before all messages arrived'));
