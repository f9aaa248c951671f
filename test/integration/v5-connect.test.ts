// MQTT 5 CONNECT / CONNACK properties and session expiry, over raw sockets (mqtt-packet encodes
// and parses, independently of the broker's codec). Time-based steps await broker events.
import { expect } from 'chai';
import type mqttPacket from 'mqtt-packet';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { RawClient, type AnyPacket } from '../helpers/raw-client.js';
import { ClientPool, unique } from '../helpers/flows.js';

type ConnectOpts = Partial<mqttPacket.IConnectPacket>;

/** Sends an MQTT 5 CONNECT and returns the client and whatever came back first (CONNACK). */
async function connect5(port: number, pool: ClientPool, opts: ConnectOpts = {}): Promise<{ c: RawClient; connack: AnyPacket }> {
  const c = pool.track(await RawClient.connectSocket(port, 5));
  c.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 5, clean: true, clientId: unique('v5c'), keepalive: 0, ...opts });
  const connack = await c.next();
  expect(connack.cmd).to.equal('connack');
  return { c, connack };
}

/** A packet's MQTT 5 properties (empty when it has none). */
function props(p: AnyPacket): Record<string, unknown> {
  return (p.properties ?? {}) as Record<string, unknown>;
}

/** Connects and requires CONNACK 0. */
async function connected5(port: number, pool: ClientPool, opts: ConnectOpts = {}): Promise<{ c: RawClient; connack: AnyPacket }> {
  const r = await connect5(port, pool, opts);
  expect(r.connack.reasonCode, 'CONNACK reason code').to.equal(0);
  return r;
}

async function subscribe5(c: RawClient, topic: string, qos: 0 | 1 | 2, messageId = 1): Promise<void> {
  c.send({ cmd: 'subscribe', messageId, subscriptions: [{ topic, qos }] });
  const ack = await c.nextOf('suback');
  expect(ack.granted).to.deep.equal([qos]);
}

/**
 * Resolves once at least `seconds` have passed on the broker's clock, without sleeping: a client
 * with a will delayed by `seconds` drops its connection and the will is awaited [MQTT-3.1.3-9].
 */
async function brokerClock(port: number, pool: ClientPool, seconds: number): Promise<void> {
  const topic = unique('clock');
  const { c: watcher } = await connected5(port, pool);
  await subscribe5(watcher, topic, 0);
  const { c: ticker } = await connected5(port, pool, {
    properties: { sessionExpiryInterval: seconds + 60 },
    will: { topic, payload: Buffer.from('tick'), qos: 0, retain: false, properties: { willDelayInterval: seconds } },
  });
  await ticker.close();
  const tick = await watcher.nextOf('publish', seconds * 1000 + 3000);
  expect(tick.topic).to.equal(topic);
}

describe('MQTT 5 CONNACK properties', () => {
  let gw: TestGateway;
  const pool = new ClientPool();

  before(async () => {
    gw = await startTestGateway({ limits: { keepalive_max: 30 } });
  });
  afterEach(async () => {
    await pool.closeAll();
  });
  after(async () => {
    await gw.stop();
  });

  it('assigns a client identifier to an empty one and returns it in CONNACK [MQTT-3.1.3-7] [MQTT-3.2.2-16]', async () => {
    const { connack } = await connected5(gw.port, pool, { clientId: '' });
    const assigned = props(connack).assignedClientIdentifier as string | undefined;
    expect(assigned).to.be.a('string').and.not.equal('');
    expect(gw.broker.clients.has(assigned!)).to.equal(true);
  });

  it('sends no Assigned Client Identifier when the client gave one', async () => {
    const { connack } = await connected5(gw.port, pool, { clientId: unique('named') });
    expect(props(connack).assignedClientIdentifier).to.equal(undefined);
  });

  it('answers a keepalive above keepalive_max with Server Keep Alive and uses it [MQTT-3.2.2-21] [MQTT-3.1.2-21]', async () => {
    const id = unique('ka');
    const { connack } = await connected5(gw.port, pool, { clientId: id, keepalive: 120 });
    expect(props(connack).serverKeepAlive).to.equal(30);
    expect(gw.broker.clients.get(id)!.keepaliveMs).to.equal(30_000);
  });

  it('sends no Server Keep Alive when the client keepalive is within the limit', async () => {
    const { connack } = await connected5(gw.port, pool, { keepalive: 20 });
    expect(props(connack).serverKeepAlive).to.equal(undefined);
  });

  it('announces receive maximum, maximum packet size, topic alias maximum and available features', async () => {
    const { connack } = await connected5(gw.port, pool);
    const p = props(connack);
    expect(p.receiveMaximum).to.equal(gw.broker.limits.receiveMaximum);
    expect(p.maximumPacketSize).to.equal(gw.broker.limits.maxPacketSize);
    expect(p.topicAliasMaximum).to.equal(gw.broker.limits.topicAliasMaximum);
    expect(p.topicAliasMaximum).to.be.greaterThan(0);
    // Absent means available; where present these must say 1 (the broker supports them).
    for (const k of ['retainAvailable', 'wildcardSubscriptionAvailable', 'subscriptionIdentifiersAvailable', 'sharedSubscriptionAvailable']) {
      expect(p[k], k).to.be.oneOf([true, undefined]);
    }
    // Maximum QoS 2 is signalled by absence [MQTT-3.2.2-9].
    expect(p.maximumQoS).to.equal(undefined);
  });

  it('sends Response Information only when requested [MQTT-3.1.2-28]', async () => {
    const { connack: plain } = await connected5(gw.port, pool);
    expect(props(plain).responseInformation).to.equal(undefined);
    const { connack: asked } = await connected5(gw.port, pool, { properties: { requestResponseInformation: true } });
    expect(props(asked).responseInformation).to.be.a('string').and.not.equal('');
  });

  it('refuses a CONNECT with a reason code and a reason string by default [MQTT-3.2.2-6]', async () => {
    // An unsupported authentication method is one way to be refused.
    const { c, connack } = await connect5(gw.port, pool, { properties: { authenticationMethod: 'NOPE' } });
    expect(connack.reasonCode).to.equal(0x8c);
    expect(connack.sessionPresent).to.equal(false);
    expect(props(connack).reasonString).to.be.a('string').and.not.equal('');
    await c.closedByServer();
  });

  // The spec lets a server send a Reason String on CONNACK even then [MQTT-3.1.2-29]; this broker
  // (connection.ts `fail`) promises to honour the client's wish, also for refusals.
  it('leaves the reason string out of a refusal when Request Problem Information is 0 (broker policy, [MQTT-3.1.2-29] allows it)', async () => {
    const { c, connack } = await connect5(gw.port, pool, {
      properties: { authenticationMethod: 'NOPE', requestProblemInformation: false },
    });
    expect(connack.reasonCode).to.equal(0x8c);
    expect(props(connack).reasonString).to.equal(undefined);
    await c.closedByServer();
  });

  it('does not put a reason string on a SUBACK when Request Problem Information is 0 [MQTT-3.1.2-29]', async () => {
    const { c } = await connected5(gw.port, pool, { properties: { requestProblemInformation: false } });
    c.send({ cmd: 'subscribe', messageId: 3, subscriptions: [{ topic: 'a/#/b', qos: 0 }] });
    const ack = await c.nextOf('suback');
    expect(ack.granted).to.deep.equal([0x8f]);
    expect(props(ack).reasonString).to.equal(undefined);
  });
});

describe('MQTT 5 session expiry', () => {
  let gw: TestGateway;
  const pool = new ClientPool();

  before(async () => {
    gw = await startTestGateway();
  });
  afterEach(async () => {
    await pool.closeAll();
  });
  after(async () => {
    await gw.stop();
  });

  async function publishQos1(topic: string, payload: string): Promise<void> {
    const { c } = await connected5(gw.port, pool);
    c.send({ cmd: 'publish', topic, payload: Buffer.from(payload), qos: 1, messageId: 7, retain: false, dup: false });
    const ack = await c.nextOf('puback');
    expect(ack.messageId).to.equal(7);
    await c.close();
  }

  it('keeps a session with expiry 2 s across a reconnect inside it and delivers what was queued [MQTT-3.1.2-23] [MQTT-3.2.2-3]', async () => {
    const id = unique('keep');
    const topic = unique('se/keep');
    const { c: first } = await connected5(gw.port, pool, { clientId: id, properties: { sessionExpiryInterval: 2 } });
    await subscribe5(first, topic, 1);
    first.send({ cmd: 'disconnect', reasonCode: 0 });
    await first.closedByServer();
    await publishQos1(topic, 'while away');
    const { c: again, connack } = await connected5(gw.port, pool, { clientId: id, clean: false, properties: { sessionExpiryInterval: 2 } });
    expect(connack.sessionPresent).to.equal(true);
    const p = await again.nextOf('publish');
    expect([p.topic, String(p.payload), p.qos]).to.deep.equal([topic, 'while away', 1]);
  });

  it('discards a session with expiry 2 s once it has expired [MQTT-3.1.2-23] [MQTT-3.2.2-2]', async () => {
    const id = unique('gone');
    const topic = unique('se/gone');
    const { c: first } = await connected5(gw.port, pool, { clientId: id, properties: { sessionExpiryInterval: 2 } });
    await subscribe5(first, topic, 1);
    first.send({ cmd: 'disconnect', reasonCode: 0 });
    await first.closedByServer();
    await brokerClock(gw.port, pool, 3);
    const { c: again, connack } = await connected5(gw.port, pool, { clientId: id, clean: false });
    expect(connack.sessionPresent).to.equal(false);
    // The subscription went with the session.
    await publishQos1(topic, 'nobody');
    expect(await again.nothingPendingAfterPing()).to.deep.equal([]);
  });

  it('ends a session with expiry 0 when the connection closes [MQTT-3.1.2-23]', async () => {
    const id = unique('zero');
    const { c: first } = await connected5(gw.port, pool, { clientId: id, clean: false });
    await subscribe5(first, unique('se/zero'), 1);
    first.send({ cmd: 'disconnect', reasonCode: 0 });
    await first.closedByServer();
    const { connack } = await connected5(gw.port, pool, { clientId: id, clean: false });
    expect(connack.sessionPresent).to.equal(false);
  });

  it('lets DISCONNECT shorten the session expiry to 0, ending the session [MQTT-3.14.2-2]', async () => {
    const id = unique('shorten');
    const { c: first } = await connected5(gw.port, pool, { clientId: id, properties: { sessionExpiryInterval: 60 } });
    first.send({ cmd: 'disconnect', reasonCode: 0, properties: { sessionExpiryInterval: 0 } });
    await first.closedByServer();
    const { connack } = await connected5(gw.port, pool, { clientId: id, clean: false });
    expect(connack.sessionPresent).to.equal(false);
  });

  it('lets DISCONNECT lengthen a non-zero session expiry', async () => {
    const id = unique('lengthen');
    const { c: first } = await connected5(gw.port, pool, { clientId: id, properties: { sessionExpiryInterval: 1 } });
    first.send({ cmd: 'disconnect', reasonCode: 0, properties: { sessionExpiryInterval: 600 } });
    await first.closedByServer();
    expect(gw.broker.sessions.get(id)?.expiryInterval).to.equal(600);
    await brokerClock(gw.port, pool, 2);
    const { connack } = await connected5(gw.port, pool, { clientId: id, clean: false });
    expect(connack.sessionPresent).to.equal(true);
  });

  it('treats DISCONNECT raising the expiry from 0 as a protocol error 0x82 [MQTT-3.14.2-2]', async () => {
    const id = unique('raise');
    const { c } = await connected5(gw.port, pool, { clientId: id });
    c.send({ cmd: 'disconnect', reasonCode: 0, properties: { sessionExpiryInterval: 30 } });
    const packets = await c.closedByServer();
    expect(packets.map((p) => [p.cmd, p.reasonCode])).to.deep.equal([['disconnect', 0x82]]);
    const { connack } = await connected5(gw.port, pool, { clientId: id, clean: false });
    expect(connack.sessionPresent).to.equal(false);
  });
});
