// A socket-level MQTT client for tests: sends exact bytes or packet objects (encoded by
// mqtt-packet, an independent codec) and awaits parsed packets or the close. No sleeps: every
// wait is on an event, bounded by a timeout that fails the test.
import net from 'node:net';
import mqttPacket from 'mqtt-packet';

export type AnyPacket = mqttPacket.Packet & Record<string, unknown>;

export class RawClient {
  readonly socket: net.Socket;
  private readonly parser: ReturnType<typeof mqttPacket.parser>;
  private readonly packets: AnyPacket[] = [];
  private waiters: Array<() => void> = [];
  closed = false;
  parseError: Error | null = null;
  private readonly closedPromise: Promise<void>;

  private constructor(socket: net.Socket, readonly version: 3 | 4 | 5) {
    this.socket = socket;
    this.parser = mqttPacket.parser({ protocolVersion: version });
    this.parser.on('packet', (p: mqttPacket.Packet) => {
      this.packets.push(p as AnyPacket);
      this.wake();
    });
    this.parser.on('error', (e: Error) => {
      this.parseError = e;
      this.wake();
    });
    socket.on('data', (d: Buffer) => this.parser.parse(d));
    socket.on('error', () => undefined);
    this.closedPromise = new Promise((resolve) => socket.once('close', () => {
      this.closed = true;
      this.wake();
      resolve();
    }));
  }

  static connectSocket(port: number, version: 3 | 4 | 5 = 4): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const s = net.connect({ port, host: '127.0.0.1' }, () => resolve(new RawClient(s, version)));
      s.once('error', reject);
    });
  }

  /** Opens a socket and completes CONNECT/CONNACK. */
  static async connect(port: number, opts: Partial<mqttPacket.IConnectPacket> & { version?: 3 | 4 | 5 } = {}): Promise<RawClient> {
    const version = opts.version ?? 4;
    const c = await RawClient.connectSocket(port, version);
    c.send({
      cmd: 'connect', protocolId: version === 3 ? 'MQIsdp' : 'MQTT', protocolVersion: version, clean: true,
      clientId: `raw-${Math.random().toString(16).slice(2)}`, keepalive: 0, ...opts,
    });
    const ack = await c.next();
    if (ack.cmd !== 'connack') throw new Error(`expected CONNACK, got ${ack.cmd}`);
    const code = (ack.returnCode ?? ack.reasonCode) as number;
    if (code !== 0) throw new Error(`CONNACK refused: ${code}`);
    return c;
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  private until(cond: () => boolean, what: string, timeoutMs: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const check = (): boolean => {
        if (cond()) {
          clearTimeout(timer);
          resolve();
          return true;
        }
        return false;
      };
      const timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)), timeoutMs);
      const loop = (): void => {
        if (!check()) this.waiters.push(loop);
      };
      loop();
    });
  }

  send(p: mqttPacket.Packet | Buffer): void {
    this.socket.write(Buffer.isBuffer(p) ? p : mqttPacket.generate(p, { protocolVersion: this.version }));
  }

  /** The next packet; fails if the connection closes first. */
  async next(timeoutMs = 3000): Promise<AnyPacket> {
    await this.until(() => this.packets.length > 0 || this.closed || this.parseError !== null, 'a packet', timeoutMs);
    const p = this.packets.shift();
    if (p) return p;
    if (this.parseError) throw this.parseError;
    throw new Error('connection closed while waiting for a packet');
  }

  /** The next packet of a given type, skipping others (returned in `skipped`). */
  async nextOf(cmd: string, timeoutMs = 3000): Promise<AnyPacket> {
    for (;;) {
      const p = await this.next(timeoutMs);
      if (p.cmd === cmd) return p;
    }
  }

  /** Resolves when the server has closed the connection; returns packets received before. */
  async closedByServer(timeoutMs = 3000): Promise<AnyPacket[]> {
    await this.until(() => this.closed, 'the server to close the connection', timeoutMs);
    return this.packets.splice(0);
  }

  /** Packets received so far and not yet taken. */
  pending(): AnyPacket[] {
    return this.packets.slice();
  }

  /** True if no packet arrives before a PINGREQ round trip completes (an event, not a sleep). */
  async nothingPendingAfterPing(): Promise<AnyPacket[]> {
    this.send({ cmd: 'pingreq' });
    const before: AnyPacket[] = [];
    for (;;) {
      const p = await this.next();
      if (p.cmd === 'pingresp') return before;
      before.push(p);
    }
  }

  async close(): Promise<void> {
    if (!this.closed) {
      this.socket.destroy();
      await this.closedPromise;
    }
  }
}
