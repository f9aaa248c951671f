// MQTT 5 SUBSCRIBE / UNSUBSCRIBE: reason codes, subscription identifiers and subscription options
// (No Local, Retain As Published, Retain Handling). Raw sockets, no sleeps.
import { expect } from 'chai';
import type mqttPacket from 'mqtt-packet';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { RawClient, type AnyPacket } from '../helpers/raw-client.js';
import { ClientPool, unique } from '../helpers/flows.js';

function props(p: AnyPacket): Record<string, unknown> {
  return (p.properties ?? {}) as Record<string, unknown>;
}

async function connect5(port: number, pool: ClientPool, opts: Partial<mqttPacket.IConnectPacket> = {}): Promise<RawClient> {
  const c = pool.track(await RawClient.connectSocket(port, 5));
  c.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 5, clean: true, clientId: unique('v5s'), keepalive: 0, ...opts });
  const connack = await c.next();
  expect([connack.cmd, connack.reasonCode]).to.deep.equal(['connack', 0]);
  return c;
}

let nextMessageId = 1;

/** SUBSCRIBE (options as mqtt-packet names them) and return the SUBACK reason codes. */
async function subscribe(c: RawClient, subscriptions: mqttPacket.ISubscription[], subscriptionIdentifier?: number): Promise<number[]> {
  const messageId = nextMessageId++;
  c.send({
    cmd: 'subscribe', messageId, subscriptions,
    ...(subscriptionIdentifier !== undefined ? { properties: { subscriptionIdentifier } } : {}),
  });
  const ack = await c.nextOf('suback');
  expect(ack.messageId).to.equal(messageId);
  return ack.granted as number[];
}

async function unsubscribe(c: RawClient, topics: string[]): Promise<number[]> {
  const messageId = nextMessageId++;
  c.send({ cmd: 'unsubscribe', messageId, unsubscriptions: topics });
  const ack = await c.nextOf('unsuback');
  expect(ack.messageId).to.equal(messageId);
  return ack.granted as number[];
}

/** QoS 1 PUBLISH awaiting its PUBACK (so the broker has routed it before this returns). */
async function publish1(c: RawClient, topic: string, payload: string, retain = false): Promise<void> {
  const messageId = nextMessageId++;
  c.send({ cmd: 'publish', topic, payload: Buffer.from(payload), qos: 1, messageId, retain, dup: false });
  const ack = await c.nextOf('puback');
  expect(ack.messageId).to.equal(messageId);
}

async function expectNothingMore(c: RawClient): Promise<void> {
  const extra = await c.nothingPendingAfterPing();
  expect(extra.map((p) => `${p.cmd} ${(p.topic as string | undefined) ?? ''} ${(p.payload as Buffer | undefined)?.toString() ?? ''}`)).to.deep.equal([]);
}

function subIds(p: AnyPacket): number[] {
  const v = props(p).subscriptionIdentifier as number | number[] | undefined;
  if (v === undefined) return [];
  return (Array.isArray(v) ? [...v] : [v]).sort((a, b) => a - b);
}

describe('MQTT 5 SUBSCRIBE and UNSUBSCRIBE', () => {
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

  // --- reason codes ----------------------------------------------------------------------------

  it('answers an invalid filter with SUBACK 0x8F and grants the valid ones, in order [MQTT-3.9.3-1]', async () => {
    const c = await connect5(gw.port, pool);
    const codes = await subscribe(c, [
      { topic: unique('ok'), qos: 1 }, { topic: 'a/#/b', qos: 0 }, { topic: 'a+/b', qos: 2 }, { topic: unique('ok2'), qos: 2 },
    ]);
    expect(codes).to.deep.equal([1, 0x8f, 0x8f, 2]);
    expect(c.closed).to.equal(false);
  });

  it('answers UNSUBSCRIBE with 0x00 for a removed filter and 0x11 No subscription existed otherwise [MQTT-3.11.3-1]', async () => {
    const c = await connect5(gw.port, pool);
    const topic = unique('un');
    await subscribe(c, [{ topic, qos: 1 }]);
    expect(await unsubscribe(c, [topic, unique('never'), topic])).to.deep.equal([0x00, 0x11, 0x11]);
  });

  it('stops delivery after UNSUBSCRIBE [MQTT-3.10.4-1]', async () => {
    const c = await connect5(gw.port, pool);
    const pub = await connect5(gw.port, pool);
    const topic = unique('un/stop');
    await subscribe(c, [{ topic, qos: 1 }]);
    await unsubscribe(c, [topic]);
    await publish1(pub, topic, 'late');
    await expectNothingMore(c);
  });

  // --- subscription identifiers ----------------------------------------------------------------

  it('delivers one message carrying both identifiers to overlapping subscriptions 1 and 2 [MQTT-3.3.4-3] [MQTT-3.3.4-4]', async () => {
    const c = await connect5(gw.port, pool);
    const pub = await connect5(gw.port, pool);
    const base = unique('sid');
    expect(await subscribe(c, [{ topic: `${base}/+`, qos: 1 }], 1)).to.deep.equal([1]);
    expect(await subscribe(c, [{ topic: `${base}/#`, qos: 0 }], 2)).to.deep.equal([0]);
    await publish1(pub, `${base}/x`, 'both');
    const p = await c.nextOf('publish');
    expect(String(p.payload)).to.equal('both');
    expect(subIds(p)).to.deep.equal([1, 2]);
    if (p.qos === 1) c.send({ cmd: 'puback', messageId: p.messageId as number });
    await expectNothingMore(c);
  });

  it('delivers the identifier of the one matching subscription and none for a subscription without one [MQTT-3.3.4-3]', async () => {
    const c = await connect5(gw.port, pool);
    const pub = await connect5(gw.port, pool);
    const a = unique('sid/a');
    const b = unique('sid/b');
    await subscribe(c, [{ topic: a, qos: 0 }], 7);
    await subscribe(c, [{ topic: b, qos: 0 }]);
    await publish1(pub, a, 'a');
    await publish1(pub, b, 'b');
    const pa = await c.nextOf('publish');
    const pb = await c.nextOf('publish');
    expect([pa.topic, subIds(pa)]).to.deep.equal([a, [7]]);
    expect([pb.topic, subIds(pb)]).to.deep.equal([b, []]);
  });

  it('replaces the identifier when the same filter is subscribed again [MQTT-3.8.4-3]', async () => {
    const c = await connect5(gw.port, pool);
    const pub = await connect5(gw.port, pool);
    const t = unique('sid/re');
    await subscribe(c, [{ topic: t, qos: 0 }], 3);
    await subscribe(c, [{ topic: t, qos: 0 }], 4);
    await publish1(pub, t, 'x');
    expect(subIds(await c.nextOf('publish'))).to.deep.equal([4]);
    await expectNothingMore(c);
  });

  it('puts the identifier on retained messages sent for the subscription [MQTT-3.3.4-3]', async () => {
    const c = await connect5(gw.port, pool);
    const pub = await connect5(gw.port, pool);
    const t = unique('sid/ret');
    await publish1(pub, t, 'kept', true);
    await subscribe(c, [{ topic: t, qos: 0 }], 9);
    const p = await c.nextOf('publish');
    expect([p.retain, subIds(p)]).to.deep.equal([true, [9]]);
  });

  // --- No Local --------------------------------------------------------------------------------

  it('does not send a No Local subscriber its own messages, but does send others\' [MQTT-3.8.3-3]', async () => {
    const c = await connect5(gw.port, pool);
    const other = await connect5(gw.port, pool);
    const t = unique('nl');
    await subscribe(c, [{ topic: t, qos: 1, nl: true }]);
    await publish1(c, t, 'mine');
    await publish1(other, t, 'theirs');
    const p = await c.nextOf('publish');
    expect(String(p.payload)).to.equal('theirs');
    c.send({ cmd: 'puback', messageId: p.messageId as number });
    await expectNothingMore(c);
  });

  it('sends a client its own messages without No Local', async () => {
    const c = await connect5(gw.port, pool);
    const t = unique('nl/off');
    await subscribe(c, [{ topic: t, qos: 0, nl: false }]);
    c.send({ cmd: 'publish', topic: t, payload: Buffer.from('echo'), qos: 0, retain: false, dup: false });
    expect(String((await c.nextOf('publish')).payload)).to.equal('echo');
  });

  // --- Retain As Published ---------------------------------------------------------------------

  it('clears RETAIN on forwarded messages without Retain As Published [MQTT-3.3.1-12]', async () => {
    const c = await connect5(gw.port, pool);
    const pub = await connect5(gw.port, pool);
    const t = unique('rap/off');
    await subscribe(c, [{ topic: t, qos: 0, rap: false }]);
    await publish1(pub, t, 'r', true);
    expect((await c.nextOf('publish')).retain).to.equal(false);
  });

  it('keeps RETAIN on forwarded messages with Retain As Published [MQTT-3.3.1-13]', async () => {
    const c = await connect5(gw.port, pool);
    const pub = await connect5(gw.port, pool);
    const t = unique('rap/on');
    await subscribe(c, [{ topic: t, qos: 0, rap: true }]);
    await publish1(pub, t, 'r', true);
    await publish1(pub, t, 'n', false);
    const got = [await c.nextOf('publish'), await c.nextOf('publish')];
    expect(got.map((p) => [String(p.payload), p.retain])).to.deep.equal([['r', true], ['n', false]]);
  });

  // --- Retain Handling -------------------------------------------------------------------------

  async function retainedTopic(): Promise<string> {
    const pub = await connect5(gw.port, pool);
    const t = unique('rh');
    await publish1(pub, t, 'kept', true);
    return t;
  }

  it('Retain Handling 0 sends retained messages on every SUBSCRIBE, including a repeat [MQTT-3.3.1-9]', async () => {
    const t = await retainedTopic();
    const c = await connect5(gw.port, pool);
    await subscribe(c, [{ topic: t, qos: 0, rh: 0 }]);
    const first = await c.nextOf('publish');
    expect([String(first.payload), first.retain]).to.deep.equal(['kept', true]);
    await subscribe(c, [{ topic: t, qos: 0, rh: 0 }]);
    const again = await c.nextOf('publish');
    expect([String(again.payload), again.retain]).to.deep.equal(['kept', true]);
    await expectNothingMore(c);
  });

  it('Retain Handling 1 sends retained messages only for a new subscription [MQTT-3.3.1-10]', async () => {
    const t = await retainedTopic();
    const c = await connect5(gw.port, pool);
    await subscribe(c, [{ topic: t, qos: 0, rh: 1 }]);
    expect(String((await c.nextOf('publish')).payload)).to.equal('kept');
    await subscribe(c, [{ topic: t, qos: 0, rh: 1 }]);
    await expectNothingMore(c);
  });

  it('Retain Handling 2 never sends retained messages on SUBSCRIBE [MQTT-3.3.1-11]', async () => {
    const t = await retainedTopic();
    const c = await connect5(gw.port, pool);
    await subscribe(c, [{ topic: t, qos: 0, rh: 2 }]);
    await expectNothingMore(c);
    // Live messages still flow.
    const pub = await connect5(gw.port, pool);
    await publish1(pub, t, 'live');
    expect(String((await c.nextOf('publish')).payload)).to.equal('live');
  });
});
