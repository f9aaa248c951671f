// MQTT 5 PUBLISH: reason codes on acknowledgements, properties carried end to end, message
// expiry, inbound topic aliases, payload format, receive maximum and maximum packet size in both
// directions. Raw sockets; time-based steps await broker events instead of sleeping.
import { expect } from 'chai';
import type mqttPacket from 'mqtt-packet';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { RawClient, type AnyPacket } from '../helpers/raw-client.js';
import { ClientPool, unique } from '../helpers/flows.js';

type ConnectOpts = Partial<mqttPacket.IConnectPacket>;

function props(p: AnyPacket): Record<string, unknown> {
  return (p.properties ?? {}) as Record<string, unknown>;
}

async function connect5(port: number, pool: ClientPool, opts: ConnectOpts = {}): Promise<{ c: RawClient; connack: AnyPacket }> {
  const c = pool.track(await RawClient.connectSocket(port, 5));
  c.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 5, clean: true, clientId: unique('v5p'), keepalive: 0, ...opts });
  const connack = await c.next();
  expect([connack.cmd, connack.reasonCode]).to.deep.equal(['connack', 0]);
  return { c, connack };
}

async function subscribe5(c: RawClient, topic: string, qos: 0 | 1 | 2, messageId = 1): Promise<void> {
  c.send({ cmd: 'subscribe', messageId, subscriptions: [{ topic, qos }] });
  const ack = await c.nextOf('suback');
  expect(ack.granted).to.deep.equal([qos]);
}

/** Asserts that nothing but the PINGRESP comes back to a PINGREQ. */
async function expectNothingMore(c: RawClient): Promise<void> {
  const extra = await c.nothingPendingAfterPing();
  expect(extra.map((p) => `${p.cmd} ${(p.topic as string | undefined) ?? ''}`)).to.deep.equal([]);
}

/** Resolves once `seconds` have passed on the broker's clock: a delayed will is awaited [MQTT-3.1.3-9]. */
async function brokerClock(port: number, pool: ClientPool, seconds: number): Promise<void> {
  const topic = unique('clock');
  const { c: watcher } = await connect5(port, pool);
  await subscribe5(watcher, topic, 0);
  const { c: ticker } = await connect5(port, pool, {
    properties: { sessionExpiryInterval: seconds + 60 },
    will: { topic, payload: Buffer.from('tick'), qos: 0, retain: false, properties: { willDelayInterval: seconds } },
  });
  await ticker.close();
  expect((await watcher.nextOf('publish', seconds * 1000 + 3000)).topic).to.equal(topic);
}

// --- a tiny MQTT 5 PUBLISH encoder, for property layouts mqtt-packet's object form cannot express

function varint(n: number): Buffer {
  const out: number[] = [];
  do {
    let b = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) b |= 0x80;
    out.push(b);
  } while (n > 0);
  return Buffer.from(out);
}

function utf8Field(s: string): Buffer {
  const b = Buffer.from(s, 'utf8');
  const len = Buffer.alloc(2);
  len.writeUInt16BE(b.length);
  return Buffer.concat([len, b]);
}

/** A User Property (0x26) list in the given order. */
function userPropertyBytes(pairs: Array<[string, string]>): Buffer {
  return Buffer.concat(pairs.map(([k, v]) => Buffer.concat([Buffer.from([0x26]), utf8Field(k), utf8Field(v)])));
}

/** QoS 0 PUBLISH with the given raw property bytes. */
function rawPublish5(topic: string, propertyBytes: Buffer, payload: Buffer): Buffer {
  const body = Buffer.concat([utf8Field(topic), varint(propertyBytes.length), propertyBytes, payload]);
  return Buffer.concat([Buffer.from([0x30]), varint(body.length), body]);
}

describe('MQTT 5 PUBLISH', () => {
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

  async function pair(topic: string, qos: 0 | 1 | 2, subOpts: ConnectOpts = {}): Promise<{ sub: RawClient; pub: RawClient; subId: string }> {
    const subId = unique('sub');
    const { c: sub } = await connect5(gw.port, pool, { clientId: subId, ...subOpts });
    await subscribe5(sub, topic, qos);
    const { c: pub } = await connect5(gw.port, pool);
    return { sub, pub, subId };
  }

  // --- reason codes on acknowledgements -------------------------------------------------------

  it('acknowledges QoS 1 with PUBACK success when there is a subscriber [MQTT-3.4.2-1]', async () => {
    const topic = unique('rc/sub');
    const { pub, sub } = await pair(topic, 1);
    pub.send({ cmd: 'publish', topic, payload: Buffer.from('x'), qos: 1, messageId: 11, retain: false, dup: false });
    const ack = await pub.nextOf('puback');
    expect(ack.messageId).to.equal(11);
    expect(ack.reasonCode ?? 0).to.equal(0x00);
    expect((await sub.nextOf('publish')).topic).to.equal(topic);
  });

  it('acknowledges QoS 1 without subscribers with 0x00 or 0x10 No matching subscribers [MQTT-3.4.2-1]', async () => {
    const { c: pub } = await connect5(gw.port, pool);
    pub.send({ cmd: 'publish', topic: unique('rc/none'), payload: Buffer.from('x'), qos: 1, messageId: 12, retain: false, dup: false });
    const ack = await pub.nextOf('puback');
    expect(ack.messageId).to.equal(12);
    expect(ack.reasonCode ?? 0).to.be.oneOf([0x00, 0x10]);
  });

  it('answers a PUBREL for an unknown packet id with PUBCOMP 0x92 Packet Identifier not found [MQTT-3.7.2-1]', async () => {
    const { c } = await connect5(gw.port, pool);
    c.send({ cmd: 'pubrel', messageId: 4711, reasonCode: 0 });
    const comp = await c.next();
    expect([comp.cmd, comp.messageId, comp.reasonCode]).to.deep.equal(['pubcomp', 4711, 0x92]);
    expect(c.closed).to.equal(false);
  });

  it('completes a known QoS 2 PUBREL with PUBCOMP success', async () => {
    const { c } = await connect5(gw.port, pool);
    c.send({ cmd: 'publish', topic: unique('rc/q2'), payload: Buffer.from('x'), qos: 2, messageId: 5, retain: false, dup: false });
    const rec = await c.next();
    expect([rec.cmd, rec.messageId]).to.deep.equal(['pubrec', 5]);
    expect(rec.reasonCode ?? 0).to.be.oneOf([0x00, 0x10]);
    c.send({ cmd: 'pubrel', messageId: 5, reasonCode: 0 });
    const comp = await c.next();
    expect([comp.cmd, comp.messageId, comp.reasonCode ?? 0]).to.deep.equal(['pubcomp', 5, 0]);
  });

  // --- properties end to end -----------------------------------------------------------------

  it('forwards payload format indicator and content type unaltered [MQTT-3.3.2-4] [MQTT-3.3.2-20]', async () => {
    const topic = unique('pr/ct');
    const { sub, pub } = await pair(topic, 0);
    pub.send({
      cmd: 'publish', topic, payload: Buffer.from('{"a":1}'), qos: 0, retain: false, dup: false,
      properties: { payloadFormatIndicator: true, contentType: 'application/json' },
    });
    const p = await sub.nextOf('publish');
    expect(String(p.payload)).to.equal('{"a":1}');
    expect(props(p).payloadFormatIndicator).to.equal(true);
    expect(props(p).contentType).to.equal('application/json');
  });

  it('forwards response topic and correlation data unaltered [MQTT-3.3.2-15] [MQTT-3.3.2-16]', async () => {
    const topic = unique('pr/req');
    const { sub, pub } = await pair(topic, 1);
    const correlation = Buffer.from([0, 1, 2, 0xff, 0xfe]);
    pub.send({
      cmd: 'publish', topic, payload: Buffer.from('req'), qos: 1, messageId: 2, retain: false, dup: false,
      properties: { responseTopic: 'replies/here', correlationData: correlation },
    });
    await pub.nextOf('puback');
    const p = await sub.nextOf('publish');
    expect(props(p).responseTopic).to.equal('replies/here');
    expect(Buffer.compare(props(p).correlationData as Buffer, correlation)).to.equal(0);
  });

  it('forwards user properties in their order, duplicates included [MQTT-3.3.2-17] [MQTT-3.3.2-18]', async () => {
    const topic = unique('pr/user');
    const { sub, pub } = await pair(topic, 0);
    const received: Buffer[] = [];
    sub.socket.on('data', (d: Buffer) => received.push(d));
    const pairs: Array<[string, string]> = [['a', '1'], ['b', '2'], ['a', '3'], ['a', '1'], ['z', '']];
    pub.send(rawPublish5(topic, userPropertyBytes(pairs), Buffer.from('u')));
    const p = await sub.nextOf('publish');
    expect({ ...props(p).userProperties as object }).to.deep.equal({ a: ['1', '3', '1'], b: '2', z: '' });
    // The parsed form merges keys; the bytes show the original interleaving is kept.
    expect(Buffer.concat(received).includes(userPropertyBytes(pairs))).to.equal(true);
  });

  it('does not forward a topic alias it received, and sends a message expiry only when one was set', async () => {
    const topic = unique('pr/plain');
    const { sub, pub } = await pair(topic, 0);
    pub.send({ cmd: 'publish', topic, payload: Buffer.from('p'), qos: 0, retain: false, dup: false, properties: { topicAlias: 3 } });
    const p = await sub.nextOf('publish');
    expect(p.topic).to.equal(topic);
    expect(props(p).topicAlias).to.equal(undefined);
    expect(props(p).messageExpiryInterval).to.equal(undefined);
  });

  // --- message expiry --------------------------------------------------------------------------

  it('passes the message expiry interval on to a connected subscriber [MQTT-3.3.2-6]', async () => {
    const topic = unique('me/live');
    const { sub, pub } = await pair(topic, 1);
    pub.send({ cmd: 'publish', topic, payload: Buffer.from('m'), qos: 1, messageId: 1, retain: false, dup: false, properties: { messageExpiryInterval: 60 } });
    const p = await sub.nextOf('publish');
    expect(props(p).messageExpiryInterval).to.be.within(59, 60);
  });

  it('does not deliver a queued message whose expiry passed while the subscriber was away [MQTT-3.3.2-5]', async () => {
    const topic = unique('me/expired');
    const id = unique('away');
    const { c: first } = await connect5(gw.port, pool, { clientId: id, properties: { sessionExpiryInterval: 60 } });
    await subscribe5(first, topic, 1);
    await first.close();
    const { c: pub } = await connect5(gw.port, pool);
    pub.send({ cmd: 'publish', topic, payload: Buffer.from('stale'), qos: 1, messageId: 1, retain: false, dup: false, properties: { messageExpiryInterval: 1 } });
    pub.send({ cmd: 'publish', topic, payload: Buffer.from('fresh'), qos: 1, messageId: 2, retain: false, dup: false });
    await pub.nextOf('puback');
    await pub.nextOf('puback');
    const expiredBefore = gw.broker.metrics.dropped.expired;
    await brokerClock(gw.port, pool, 2);
    const { c: back, connack } = await connect5(gw.port, pool, { clientId: id, clean: false, properties: { sessionExpiryInterval: 60 } });
    expect(connack.sessionPresent).to.equal(true);
    const p = await back.nextOf('publish');
    expect(String(p.payload)).to.equal('fresh');
    back.send({ cmd: 'puback', messageId: p.messageId as number });
    await expectNothingMore(back);
    expect(gw.broker.metrics.dropped.expired).to.equal(expiredBefore + 1);
  });

  it('reduces the delivered expiry interval by the time the message waited [MQTT-3.3.2-6]', async () => {
    const topic = unique('me/reduced');
    const id = unique('waiter');
    const { c: first } = await connect5(gw.port, pool, { clientId: id, properties: { sessionExpiryInterval: 60 } });
    await subscribe5(first, topic, 1);
    await first.close();
    const { c: pub } = await connect5(gw.port, pool);
    pub.send({ cmd: 'publish', topic, payload: Buffer.from('aging'), qos: 1, messageId: 1, retain: false, dup: false, properties: { messageExpiryInterval: 10 } });
    await pub.nextOf('puback');
    await brokerClock(gw.port, pool, 2);
    const { c: back } = await connect5(gw.port, pool, { clientId: id, clean: false, properties: { sessionExpiryInterval: 60 } });
    const p = await back.nextOf('publish');
    expect(String(p.payload)).to.equal('aging');
    expect(props(p).messageExpiryInterval).to.be.within(1, 8);
  });

  it('does not send an expired retained message to a new subscriber [MQTT-3.3.2-5]', async () => {
    const topic = unique('me/retained');
    const { c: pub } = await connect5(gw.port, pool);
    pub.send({ cmd: 'publish', topic, payload: Buffer.from('old'), qos: 1, messageId: 1, retain: true, dup: false, properties: { messageExpiryInterval: 1 } });
    await pub.nextOf('puback');
    await brokerClock(gw.port, pool, 2);
    const { c: sub } = await connect5(gw.port, pool);
    await subscribe5(sub, topic, 1);
    await expectNothingMore(sub);
  });

  // --- topic aliases from the client ---------------------------------------------------------

  it('resolves a topic alias set by the client and then used with an empty topic [MQTT-3.3.2-12]', async () => {
    const topic = unique('ta/ok');
    const { sub, pub } = await pair(topic, 0);
    pub.send({ cmd: 'publish', topic, payload: Buffer.from('one'), qos: 0, retain: false, dup: false, properties: { topicAlias: 1 } });
    pub.send({ cmd: 'publish', topic: '', payload: Buffer.from('two'), qos: 0, retain: false, dup: false, properties: { topicAlias: 1 } });
    const got = [await sub.nextOf('publish'), await sub.nextOf('publish')];
    expect(got.map((p) => [p.topic, String(p.payload)])).to.deep.equal([[topic, 'one'], [topic, 'two']]);
    expect(pub.closed).to.equal(false);
  });

  it('lets a client remap an alias to another topic [MQTT-3.3.2-12]', async () => {
    const a = unique('ta/a');
    const b = unique('ta/b');
    const { c: sub } = await connect5(gw.port, pool);
    await subscribe5(sub, a, 0, 1);
    await subscribe5(sub, b, 0, 2);
    const { c: pub } = await connect5(gw.port, pool);
    pub.send({ cmd: 'publish', topic: a, payload: Buffer.from('1'), qos: 0, retain: false, dup: false, properties: { topicAlias: 2 } });
    pub.send({ cmd: 'publish', topic: b, payload: Buffer.from('2'), qos: 0, retain: false, dup: false, properties: { topicAlias: 2 } });
    pub.send({ cmd: 'publish', topic: '', payload: Buffer.from('3'), qos: 0, retain: false, dup: false, properties: { topicAlias: 2 } });
    const got = [await sub.nextOf('publish'), await sub.nextOf('publish'), await sub.nextOf('publish')];
    expect(got.map((p) => [p.topic, String(p.payload)])).to.deep.equal([[a, '1'], [b, '2'], [b, '3']]);
  });

  it('closes with 0x94 Topic Alias invalid for alias 0 [MQTT-3.3.2-8]', async () => {
    const { c } = await connect5(gw.port, pool);
    c.send({ cmd: 'publish', topic: 'ta/zero', payload: Buffer.from('x'), qos: 0, retain: false, dup: false, properties: { topicAlias: 0 } });
    const packets = await c.closedByServer();
    expect(packets.map((p) => [p.cmd, p.reasonCode])).to.deep.equal([['disconnect', 0x94]]);
  });

  it('closes with 0x94 for an alias above the Topic Alias Maximum it announced [MQTT-3.2.2-17] [MQTT-3.3.2-9]', async () => {
    const { c, connack } = await connect5(gw.port, pool);
    const max = props(connack).topicAliasMaximum as number;
    expect(max).to.be.a('number').and.greaterThan(0);
    c.send({ cmd: 'publish', topic: 'ta/high', payload: Buffer.from('x'), qos: 0, retain: false, dup: false, properties: { topicAlias: max + 1 } });
    const packets = await c.closedByServer();
    expect(packets.map((p) => [p.cmd, p.reasonCode])).to.deep.equal([['disconnect', 0x94]]);
  });

  it('accepts the alias equal to the Topic Alias Maximum', async () => {
    const topic = unique('ta/max');
    const { c: sub } = await connect5(gw.port, pool);
    await subscribe5(sub, topic, 0);
    const { c: pub, connack } = await connect5(gw.port, pool);
    const max = props(connack).topicAliasMaximum as number;
    pub.send({ cmd: 'publish', topic, payload: Buffer.from('x'), qos: 0, retain: false, dup: false, properties: { topicAlias: max } });
    expect((await sub.nextOf('publish')).topic).to.equal(topic);
  });

  it('closes with 0x82 Protocol Error for an unknown alias with an empty topic (3.3.2.3.4)', async () => {
    const { c } = await connect5(gw.port, pool);
    c.send({ cmd: 'publish', topic: '', payload: Buffer.from('x'), qos: 0, retain: false, dup: false, properties: { topicAlias: 5 } });
    const packets = await c.closedByServer();
    expect(packets.map((p) => [p.cmd, p.reasonCode])).to.deep.equal([['disconnect', 0x82]]);
  });

  it('forgets aliases when the connection ends: they are per connection [MQTT-3.3.2-7]', async () => {
    const id = unique('alias-session');
    const { c: first } = await connect5(gw.port, pool, { clientId: id, properties: { sessionExpiryInterval: 60 } });
    first.send({ cmd: 'publish', topic: 'ta/first', payload: Buffer.from('x'), qos: 0, retain: false, dup: false, properties: { topicAlias: 4 } });
    await expectNothingMore(first);
    await first.close();
    const { c: second } = await connect5(gw.port, pool, { clientId: id, clean: false, properties: { sessionExpiryInterval: 60 } });
    second.send({ cmd: 'publish', topic: '', payload: Buffer.from('x'), qos: 0, retain: false, dup: false, properties: { topicAlias: 4 } });
    const packets = await second.closedByServer();
    expect(packets.map((p) => [p.cmd, p.reasonCode])).to.deep.equal([['disconnect', 0x82]]);
  });

  // --- payload format ----------------------------------------------------------------------------

  const notUtf8 = Buffer.from([0x61, 0xff, 0xfe, 0x62]);

  it('answers QoS 1 with payload format 1 and invalid UTF-8 with PUBACK 0x99 and does not forward it [MQTT-3.3.2-4]', async () => {
    const topic = unique('pf/q1');
    const { sub, pub } = await pair(topic, 1);
    pub.send({ cmd: 'publish', topic, payload: notUtf8, qos: 1, messageId: 8, retain: false, dup: false, properties: { payloadFormatIndicator: true } });
    const ack = await pub.nextOf('puback');
    expect([ack.messageId, ack.reasonCode]).to.deep.equal([8, 0x99]);
    expect(pub.closed).to.equal(false);
    await expectNothingMore(sub);
    // Invalid bytes are fine without the indicator.
    pub.send({ cmd: 'publish', topic, payload: notUtf8, qos: 1, messageId: 9, retain: false, dup: false });
    const ok = await pub.nextOf('puback');
    expect([ok.messageId, ok.reasonCode ?? 0]).to.deep.equal([9, 0]);
    expect(Buffer.compare((await sub.nextOf('publish')).payload as Buffer, notUtf8)).to.equal(0);
  });

  it('answers QoS 2 with payload format 1 and invalid UTF-8 with PUBREC 0x99 [MQTT-3.3.2-4]', async () => {
    const topic = unique('pf/q2');
    const { sub, pub } = await pair(topic, 2);
    pub.send({ cmd: 'publish', topic, payload: notUtf8, qos: 2, messageId: 8, retain: false, dup: false, properties: { payloadFormatIndicator: true } });
    const rec = await pub.nextOf('pubrec');
    expect([rec.messageId, rec.reasonCode]).to.deep.equal([8, 0x99]);
    await expectNothingMore(sub);
  });

  it('closes with DISCONNECT 0x99 for QoS 0 with payload format 1 and invalid UTF-8 [MQTT-3.3.2-4]', async () => {
    const topic = unique('pf/q0');
    const { sub, pub } = await pair(topic, 0);
    pub.send({ cmd: 'publish', topic, payload: notUtf8, qos: 0, retain: false, dup: false, properties: { payloadFormatIndicator: true } });
    const packets = await pub.closedByServer();
    expect(packets.map((p) => [p.cmd, p.reasonCode])).to.deep.equal([['disconnect', 0x99]]);
    await expectNothingMore(sub);
  });

  // --- receive maximum ---------------------------------------------------------------------------

  it('sends no more unacknowledged QoS 1 messages than the client Receive Maximum [MQTT-3.3.4-9]', async () => {
    const topic = unique('rm/out');
    const { sub, pub } = await pair(topic, 1, { properties: { receiveMaximum: 2 } });
    for (let i = 1; i <= 5; i++) {
      pub.send({ cmd: 'publish', topic, payload: Buffer.from(`m${i}`), qos: 1, messageId: i, retain: false, dup: false });
    }
    for (let i = 1; i <= 5; i++) await pub.nextOf('puback');
    const first = [await sub.nextOf('publish'), await sub.nextOf('publish')];
    expect(first.map((p) => String(p.payload))).to.deep.equal(['m1', 'm2']);
    await expectNothingMore(sub);
    sub.send({ cmd: 'puback', messageId: first[0]!.messageId as number });
    const third = await sub.nextOf('publish');
    expect(String(third.payload)).to.equal('m3');
    await expectNothingMore(sub);
    sub.send({ cmd: 'puback', messageId: first[1]!.messageId as number });
    sub.send({ cmd: 'puback', messageId: third.messageId as number });
    const rest = [await sub.nextOf('publish'), await sub.nextOf('publish')];
    expect(rest.map((p) => String(p.payload))).to.deep.equal(['m4', 'm5']);
    await expectNothingMore(sub);
  });

  it('closes with 0x93 when a client exceeds the announced Receive Maximum with QoS 2 [MQTT-3.3.4-7]', async () => {
    const { c, connack } = await connect5(gw.port, pool);
    const max = props(connack).receiveMaximum as number;
    expect(max).to.be.a('number').and.within(1, 65535);
    const topic = unique('rm/in');
    const frames: Buffer[] = [];
    for (let i = 1; i <= max + 1; i++) {
      frames.push(rawQos2(topic, i));
    }
    c.send(Buffer.concat(frames));
    const packets = await c.closedByServer(10_000);
    const recs = packets.filter((p) => p.cmd === 'pubrec');
    expect(recs).to.have.length(max);
    expect(packets.at(-1)).to.include({ cmd: 'disconnect', reasonCode: 0x93 });
  });

  it('accepts QoS 2 up to the Receive Maximum when PUBREL frees a slot', async () => {
    const { c, connack } = await connect5(gw.port, pool);
    const max = props(connack).receiveMaximum as number;
    const topic = unique('rm/in-ok');
    const frames: Buffer[] = [];
    for (let i = 1; i <= max; i++) frames.push(rawQos2(topic, i));
    c.send(Buffer.concat(frames));
    for (let i = 1; i <= max; i++) await c.nextOf('pubrec');
    c.send({ cmd: 'pubrel', messageId: 1, reasonCode: 0 });
    expect((await c.nextOf('pubcomp')).messageId).to.equal(1);
    c.send(rawQos2(topic, max + 1));
    const rec = await c.nextOf('pubrec');
    expect(rec.messageId).to.equal(max + 1);
    expect(c.closed).to.equal(false);
  });

  // --- maximum packet size towards the client ------------------------------------------------------

  it('does not send a message larger than the client Maximum Packet Size and counts it as dropped [MQTT-3.1.2-25]', async () => {
    const topic = unique('mps/out');
    const { sub, pub } = await pair(topic, 1, { properties: { maximumPacketSize: 128 } });
    const before = gw.broker.metrics.dropped.too_large;
    pub.send({ cmd: 'publish', topic, payload: Buffer.alloc(300, 0x41), qos: 0, retain: false, dup: false });
    pub.send({ cmd: 'publish', topic, payload: Buffer.alloc(300, 0x42), qos: 1, messageId: 1, retain: false, dup: false });
    pub.send({ cmd: 'publish', topic, payload: Buffer.from('small'), qos: 1, messageId: 2, retain: false, dup: false });
    await pub.nextOf('puback');
    await pub.nextOf('puback');
    const p = await sub.nextOf('publish');
    expect(String(p.payload)).to.equal('small');
    sub.send({ cmd: 'puback', messageId: p.messageId as number });
    await expectNothingMore(sub);
    expect(gw.broker.metrics.dropped.too_large).to.equal(before + 2);
  });
});

/** QoS 2 PUBLISH bytes (no properties) with a packet id. */
function rawQos2(topic: string, id: number): Buffer {
  const pid = Buffer.alloc(2);
  pid.writeUInt16BE(id);
  const body = Buffer.concat([utf8Field(topic), pid, varint(0), Buffer.from('q2')]);
  return Buffer.concat([Buffer.from([0x34]), varint(body.length), body]);
}

describe('MQTT 5 maximum packet size towards the broker', () => {
  let gw: TestGateway;
  const pool = new ClientPool();

  before(async () => {
    gw = await startTestGateway({ limits: { max_packet_size: 1024 } });
  });
  afterEach(async () => {
    await pool.closeAll();
  });
  after(async () => {
    await gw.stop();
  });

  it('announces max_packet_size as Maximum Packet Size in CONNACK (3.2.2.3.6)', async () => {
    const { connack } = await connect5(gw.port, pool);
    expect(props(connack).maximumPacketSize).to.equal(1024);
  });

  it('closes with DISCONNECT 0x95 on a packet above its Maximum Packet Size [MQTT-3.2.2-15]', async () => {
    const topic = unique('mps/in');
    const { c: sub } = await connect5(gw.port, pool);
    await subscribe5(sub, topic, 0);
    const { c } = await connect5(gw.port, pool);
    c.send({ cmd: 'publish', topic, payload: Buffer.alloc(2000, 0x43), qos: 0, retain: false, dup: false });
    const packets = await c.closedByServer();
    expect(packets.map((p) => [p.cmd, p.reasonCode])).to.deep.equal([['disconnect', 0x95]]);
    await expectNothingMore(sub);
  });

  it('accepts a packet just at the limit', async () => {
    const topic = unique('mps/edge');
    const { c: sub } = await connect5(gw.port, pool);
    await subscribe5(sub, topic, 0);
    const { c } = await connect5(gw.port, pool);
    // 1 + 2 (remaining length) + 2 + topic + 1 (property length) + payload = 1024
    const payloadLen = 1024 - (1 + 2 + 2 + Buffer.byteLength(topic) + 1);
    const frame = rawPublish5(topic, Buffer.alloc(0), Buffer.alloc(payloadLen, 0x44));
    expect(frame.length).to.equal(1024);
    c.send(frame);
    expect(((await sub.nextOf('publish')).payload as Buffer).length).to.equal(payloadLen);
  });
});
