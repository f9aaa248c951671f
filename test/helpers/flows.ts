// Small MQTT 3.1.1 exchanges over a RawClient for the integration tests: subscribe, publish with
// the full acknowledgement flow, and receive-and-acknowledge. Every step awaits packets; none sleeps.
import { expect } from 'chai';
import type mqttPacket from 'mqtt-packet';
import { RawClient, type AnyPacket } from './raw-client.js';

export type QoS = 0 | 1 | 2;

let uniq = 0;
/** A topic prefix (or client id) unused by any other test in this process. */
export function unique(name: string): string {
  return `${name}-${process.pid}-${++uniq}`;
}

/** Keeps every client a test opens so afterEach can close them all. */
export class ClientPool {
  private readonly clients: RawClient[] = [];

  async connect(port: number, opts: Parameters<typeof RawClient.connect>[1] = {}): Promise<RawClient> {
    return this.track(await RawClient.connect(port, opts));
  }

  track(c: RawClient): RawClient {
    this.clients.push(c);
    return c;
  }

  async closeAll(): Promise<void> {
    await Promise.all(this.clients.splice(0).map((c) => c.close()));
  }
}

/** Sends a raw CONNECT and returns the CONNACK (for tests that look at sessionPresent). */
export async function connectRaw(port: number, pool: ClientPool, opts: Partial<mqttPacket.IConnectPacket>): Promise<{ c: RawClient; connack: AnyPacket }> {
  const c = pool.track(await RawClient.connectSocket(port, 4));
  c.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, clientId: unique('c'), keepalive: 0, ...opts });
  const connack = await c.next();
  expect(connack.cmd).to.equal('connack');
  expect(connack.returnCode).to.equal(0);
  return { c, connack };
}

/** SUBSCRIBE and await its SUBACK (which must be the next packet); returns the granted codes. */
export async function subscribe(c: RawClient, subscriptions: Array<{ topic: string; qos: QoS }>, messageId = 1): Promise<number[]> {
  c.send({ cmd: 'subscribe', messageId, subscriptions });
  const ack = await c.next();
  expect(ack.cmd).to.equal('suback');
  expect(ack.messageId).to.equal(messageId);
  return ack.granted as number[];
}

/** UNSUBSCRIBE and await its UNSUBACK. */
export async function unsubscribe(c: RawClient, topics: string[], messageId = 1): Promise<void> {
  c.send({ cmd: 'unsubscribe', messageId, unsubscriptions: topics });
  const ack = await c.next();
  expect(ack.cmd).to.equal('unsuback');
  expect(ack.messageId).to.equal(messageId);
}

/**
 * PUBLISH from a client with its whole flow: QoS 1 awaits PUBACK, QoS 2 PUBREC → PUBREL → PUBCOMP.
 * For QoS 0 a PINGREQ round trip makes sure the broker processed it before returning.
 */
export async function publish(c: RawClient, topic: string, payload: string | Buffer, qos: QoS = 0,
  opts: { retain?: boolean; messageId?: number } = {}): Promise<void> {
  const messageId = opts.messageId ?? 1;
  c.send({ cmd: 'publish', topic, payload, qos, retain: opts.retain ?? false, dup: false, ...(qos > 0 ? { messageId } : {}) });
  if (qos === 0) {
    expect(await c.nothingPendingAfterPing()).to.deep.equal([]);
    return;
  }
  if (qos === 1) {
    const ack = await c.next();
    expect([ack.cmd, ack.messageId]).to.deep.equal(['puback', messageId]);
    return;
  }
  const rec = await c.next();
  expect([rec.cmd, rec.messageId]).to.deep.equal(['pubrec', messageId]);
  c.send({ cmd: 'pubrel', messageId });
  const comp = await c.next();
  expect([comp.cmd, comp.messageId]).to.deep.equal(['pubcomp', messageId]);
}

/** The next packet, which must be a PUBLISH. */
export async function nextPublish(c: RawClient, timeoutMs?: number): Promise<AnyPacket> {
  const p = await c.next(timeoutMs);
  expect(p.cmd, `expected PUBLISH, got ${p.cmd}`).to.equal('publish');
  return p;
}

/**
 * Acknowledges a received PUBLISH as its QoS requires (QoS 2: PUBREC, await PUBREL, PUBCOMP).
 * For QoS 2 the PUBREL must be the next packet: take any further pending PUBLISHes first.
 */
export async function ack(c: RawClient, p: AnyPacket): Promise<void> {
  if (p.qos === 1) c.send({ cmd: 'puback', messageId: p.messageId as number });
  if (p.qos === 2) {
    c.send({ cmd: 'pubrec', messageId: p.messageId as number });
    const rel = await c.next();
    expect([rel.cmd, rel.messageId]).to.deep.equal(['pubrel', p.messageId]);
    c.send({ cmd: 'pubcomp', messageId: p.messageId as number });
  }
}

/** Receives one PUBLISH, acknowledges it, and returns it. */
export async function receive(c: RawClient, timeoutMs?: number): Promise<AnyPacket> {
  const p = await nextPublish(c, timeoutMs);
  await ack(c, p);
  return p;
}

/** topic, payload (as text), QoS and retain of a PUBLISH, for compact assertions. */
export function summary(p: AnyPacket): { topic: string; payload: string; qos: number; retain: boolean } {
  return { topic: p.topic as string, payload: String(p.payload), qos: p.qos as number, retain: p.retain as boolean };
}

/** Asserts nothing else arrives (a PINGREQ round trip). */
export async function expectNothingMore(c: RawClient): Promise<void> {
  const extra = await c.nothingPendingAfterPing();
  expect(extra.map((p) => `${p.cmd} ${typeof p.topic === 'string' ? p.topic : ''}`)).to.deep.equal([]);
}

/** DISCONNECT and await the server closing the connection (the session is then offline). */
export async function disconnect(c: RawClient): Promise<void> {
  c.send({ cmd: 'disconnect' });
  await c.closedByServer();
}
