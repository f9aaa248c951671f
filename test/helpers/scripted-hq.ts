// A scripted "HQ" broker on raw sockets for uplink tests that need exact control over the QoS 2
// flow towards the gateway: it answers CONNECT (CONNACK with the session-present flag the test
// chose), SUBSCRIBE (granting what was asked), QoS 1 PUBLISH (PUBACK) and PINGREQ, and records
// every packet; the test sends the rest (PUBLISH, PUBREL) and awaits what the gateway answers.
// Packets are encoded and parsed by mqtt-packet, an independent codec. No sleeps: every wait is
// on an event, bounded by a timeout that fails the test.
import net from 'node:net';
import mqttPacket from 'mqtt-packet';

export type HqPacket = mqttPacket.Packet & Record<string, unknown>;

type Waiter = () => void;

function until(park: (w: Waiter) => void, cond: () => boolean, what: string, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`scripted HQ: timed out after ${timeoutMs} ms waiting for ${what}`)), timeoutMs);
    const loop = (): void => {
      if (cond()) {
        clearTimeout(timer);
        resolve();
      } else park(loop);
    };
    loop();
  });
}

/** One connection from the gateway. */
export class HqConnection {
  /** Packets received and not taken by waitFor yet. */
  private readonly packets: HqPacket[] = [];
  private waiters: Waiter[] = [];
  closed = false;

  constructor(readonly socket: net.Socket, private readonly version: 4 | 5) {
    socket.on('close', () => {
      this.closed = true;
      this.wake();
    });
  }

  /** Called by the server for every parsed packet. */
  received(p: HqPacket): void {
    this.packets.push(p);
    this.wake();
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  send(p: mqttPacket.Packet): void {
    this.socket.write(mqttPacket.generate(p, { protocolVersion: this.version }));
  }

  /** Takes the first received packet of type `cmd` (matching `pred`); fails if the connection closes first. */
  async waitFor(cmd: string, pred: (p: HqPacket) => boolean = () => true, timeoutMs = 5000): Promise<HqPacket> {
    const find = (): number => this.packets.findIndex((p) => p.cmd === cmd && pred(p));
    await until((w) => this.waiters.push(w), () => find() >= 0 || this.closed, `${cmd} from the gateway`, timeoutMs);
    const i = find();
    if (i < 0) throw new Error(`scripted HQ: the connection closed while waiting for ${cmd}`);
    return this.packets.splice(i, 1)[0]!;
  }

  /** A QoS 2 PUBLISH from HQ (without waiting for anything). */
  publishQos2(id: number, topic: string, payload: string, properties?: mqttPacket.IPublishPacket['properties']): void {
    this.send({ cmd: 'publish', messageId: id, topic, payload: Buffer.from(payload), qos: 2, dup: false, retain: false, ...(properties ? { properties } : {}) });
  }

  /** A whole QoS 2 order from HQ: PUBLISH, PUBREC, PUBREL, PUBCOMP. */
  async order(id: number, topic: string, payload: string): Promise<void> {
    this.publishQos2(id, topic, payload);
    await this.waitFor('pubrec', (p) => p.messageId === id);
    this.send({ cmd: 'pubrel', messageId: id });
    await this.waitFor('pubcomp', (p) => p.messageId === id);
  }

  destroy(): void {
    this.socket.destroy();
  }
}

export class ScriptedQos2Hq {
  readonly server: net.Server;
  /** Session-present flag of the next CONNACKs. */
  sessionPresent = true;
  /** MQTT 5 properties of the next CONNACKs (a Topic Alias Maximum, for instance). */
  connackProperties: mqttPacket.IConnackPacket['properties'] | undefined = undefined;
  readonly connections: HqConnection[] = [];
  private readonly sockets = new Set<net.Socket>();
  private waiters: Waiter[] = [];

  constructor(readonly version: 4 | 5 = 5) {
    this.server = net.createServer((s) => this.accept(s));
  }

  private accept(s: net.Socket): void {
    s.on('error', () => undefined);
    this.sockets.add(s);
    s.on('close', () => this.sockets.delete(s));
    const conn = new HqConnection(s, this.version);
    const parser = mqttPacket.parser({ protocolVersion: this.version });
    parser.on('error', () => s.destroy());
    parser.on('packet', (packet: mqttPacket.Packet) => {
      const p = packet as HqPacket;
      if (p.cmd === 'connect') {
        conn.send(this.version === 5
          ? { cmd: 'connack', sessionPresent: this.sessionPresent, reasonCode: 0, ...(this.connackProperties ? { properties: this.connackProperties } : {}) }
          : { cmd: 'connack', sessionPresent: this.sessionPresent, returnCode: 0 });
        this.connections.push(conn);
        this.wake();
      } else if (p.cmd === 'subscribe') {
        conn.send({ cmd: 'suback', messageId: p.messageId, granted: p.subscriptions.map((x) => x.qos) });
      } else if (p.cmd === 'publish' && p.qos === 1) {
        conn.send({ cmd: 'puback', messageId: p.messageId! });
      } else if (p.cmd === 'pingreq') {
        conn.send({ cmd: 'pingresp' });
      }
      conn.received(p);
    });
    s.on('data', (d: Buffer) => parser.parse(d));
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  async listen(): Promise<number> {
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    return (this.server.address() as net.AddressInfo).port;
  }

  /** The n-th connection (0-based) that completed CONNECT/CONNACK, once it has subscribed. */
  async connection(n: number, timeoutMs = 10_000): Promise<HqConnection> {
    await until((w) => this.waiters.push(w), () => this.connections.length > n, `connection ${n}`, timeoutMs);
    const c = this.connections[n]!;
    await c.waitFor('subscribe', () => true, timeoutMs);
    return c;
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((r) => this.server.close(() => r()));
  }
}
