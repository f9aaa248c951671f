import { expect } from 'chai';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { RawClient } from '../helpers/raw-client.js';
import {
  ClientPool, ack, expectNothingMore, nextPublish, publish, receive, subscribe, summary, unique, type QoS,
} from '../helpers/flows.js';

describe('PUBLISH and its acknowledgements (MQTT 3.1.1)', () => {
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

  /** A subscriber on `topic` at `qos`, and a publisher. */
  async function pair(topic: string, qos: QoS): Promise<{ sub: RawClient; pub: RawClient; subId: string }> {
    const subId = unique('sub');
    const sub = await pool.connect(gw.port, { clientId: subId });
    expect(await subscribe(sub, [{ topic, qos }])).to.deep.equal([qos]);
    const pub = await pool.connect(gw.port, { clientId: unique('pub') });
    return { sub, pub, subId };
  }

  it('delivers QoS 0 with no acknowledgement, no packet id and DUP 0 [MQTT-4.3.1-1] [MQTT-3.3.1-2]', async () => {
    const topic = unique('p/q0');
    const { sub, pub } = await pair(topic, 2);
    pub.send({ cmd: 'publish', topic, payload: Buffer.from('zero'), qos: 0, retain: false, dup: false });
    const p = await nextPublish(sub);
    expect(summary(p)).to.deep.equal({ topic, payload: 'zero', qos: 0, retain: false });
    expect(p.dup).to.equal(false);
    expect(p.messageId).to.equal(undefined);
    await expectNothingMore(pub); // nothing acknowledges a QoS 0 PUBLISH
    await expectNothingMore(sub);
  });

  it('answers QoS 1 with PUBACK carrying the same packet id [MQTT-4.3.2-2] [MQTT-3.3.4-1]', async () => {
    const topic = unique('p/q1');
    const { sub, pub } = await pair(topic, 1);
    pub.send({ cmd: 'publish', topic, payload: Buffer.from('one'), qos: 1, messageId: 4242, retain: false, dup: false });
    const puback = await pub.next();
    expect([puback.cmd, puback.messageId]).to.deep.equal(['puback', 4242]);
    const p = await nextPublish(sub);
    expect(summary(p)).to.deep.equal({ topic, payload: 'one', qos: 1, retain: false });
    expect(p.messageId).to.be.a('number').and.not.equal(0);
    expect(p.dup).to.equal(false);
  });

  it('completes an outgoing QoS 1 delivery on PUBACK and does not resend it [MQTT-4.3.2-1]', async () => {
    const topic = unique('p/q1out');
    const { sub, pub, subId } = await pair(topic, 1);
    await publish(pub, topic, 'x', 1);
    const p = await nextPublish(sub);
    expect(gw.broker.sessions.get(subId)!.inflight.size).to.equal(1);
    sub.send({ cmd: 'puback', messageId: p.messageId as number });
    await expectNothingMore(sub);
    expect(gw.broker.sessions.get(subId)!.inflight.size).to.equal(0);
  });

  it('runs the QoS 2 flow from a client: PUBREC, PUBREL, PUBCOMP with the same packet id [MQTT-4.3.3-2]', async () => {
    const topic = unique('p/q2in');
    const { sub, pub } = await pair(topic, 2);
    pub.send({ cmd: 'publish', topic, payload: Buffer.from('two'), qos: 2, messageId: 77, retain: false, dup: false });
    const rec = await pub.next();
    expect([rec.cmd, rec.messageId]).to.deep.equal(['pubrec', 77]);
    pub.send({ cmd: 'pubrel', messageId: 77 });
    const comp = await pub.next();
    expect([comp.cmd, comp.messageId]).to.deep.equal(['pubcomp', 77]);
    const p = await receive(sub);
    expect(summary(p)).to.deep.equal({ topic, payload: 'two', qos: 2, retain: false });
    await expectNothingMore(sub);
  });

  it('runs the QoS 2 flow towards a client: PUBLISH, PUBREC → PUBREL, PUBCOMP ends it [MQTT-4.3.3-1]', async () => {
    const topic = unique('p/q2out');
    const { sub, pub, subId } = await pair(topic, 2);
    await publish(pub, topic, 'two', 2);
    const p = await nextPublish(sub);
    expect(p.qos).to.equal(2);
    const id = p.messageId as number;
    expect(id).to.not.equal(0);
    sub.send({ cmd: 'pubrec', messageId: id });
    const rel = await sub.next();
    expect([rel.cmd, rel.messageId]).to.deep.equal(['pubrel', id]);
    expect(gw.broker.sessions.get(subId)!.inflight.get(id)?.state).to.equal('pubrel');
    sub.send({ cmd: 'pubcomp', messageId: id });
    await expectNothingMore(sub);
    expect(gw.broker.sessions.get(subId)!.inflight.size).to.equal(0);
  });

  it('does not deliver a QoS 2 PUBLISH twice when it is resent with the same id before PUBREL [MQTT-4.3.3-2]', async () => {
    const topic = unique('p/q2dup');
    const { sub, pub } = await pair(topic, 2);
    pub.send({ cmd: 'publish', topic, payload: Buffer.from('once'), qos: 2, messageId: 9, retain: false, dup: false });
    expect((await pub.next()).cmd).to.equal('pubrec');
    pub.send({ cmd: 'publish', topic, payload: Buffer.from('once'), qos: 2, messageId: 9, retain: false, dup: true });
    const rec2 = await pub.next();
    expect([rec2.cmd, rec2.messageId]).to.deep.equal(['pubrec', 9]);
    pub.send({ cmd: 'pubrel', messageId: 9 });
    expect((await pub.next()).cmd).to.equal('pubcomp');
    const p = await receive(sub);
    expect(String(p.payload)).to.equal('once');
    await expectNothingMore(sub);
  });

  it('treats the same QoS 2 packet id after PUBREL as a new message [MQTT-4.3.3-2]', async () => {
    const topic = unique('p/q2reuse');
    const { sub, pub } = await pair(topic, 2);
    await publish(pub, topic, 'first', 2, { messageId: 5 });
    await publish(pub, topic, 'second', 2, { messageId: 5 });
    const got = [await nextPublish(sub), await nextPublish(sub)];
    expect(got.map((p) => String(p.payload))).to.deep.equal(['first', 'second']);
    for (const p of got) await ack(sub, p);
    await expectNothingMore(sub);
  });

  it('answers a PUBREL for an unknown packet id with PUBCOMP [MQTT-4.3.3-2]', async () => {
    const c = await pool.connect(gw.port);
    c.send({ cmd: 'pubrel', messageId: 321 });
    const comp = await c.next();
    expect([comp.cmd, comp.messageId]).to.deep.equal(['pubcomp', 321]);
  });

  for (const [published, granted] of [[2, 1], [2, 0], [1, 0], [1, 2], [0, 2]] as Array<[QoS, QoS]>) {
    const delivered = Math.min(published, granted);
    it(`delivers a QoS ${published} message to a QoS ${granted} subscription at QoS ${delivered} [MQTT-3.8.4-6]`, async () => {
      const topic = unique('p/minqos');
      const { sub, pub } = await pair(topic, granted);
      await publish(pub, topic, 'm', published);
      const p = await receive(sub);
      expect(p.qos).to.equal(delivered);
      if (delivered === 0) expect(p.messageId).to.equal(undefined);
      await expectNothingMore(sub);
    });
  }

  it('clears the retain flag when delivering to an established subscription [MQTT-3.3.1-9]', async () => {
    const topic = unique('p/retainlive');
    const { sub, pub } = await pair(topic, 1);
    await publish(pub, topic, 'kept', 1, { retain: true });
    const p = await receive(sub);
    expect(summary(p)).to.deep.equal({ topic, payload: 'kept', qos: 1, retain: false });
  });

  it('sets DUP 0 on the first delivery of a QoS 1 or 2 message even when the publisher sent DUP 1 [MQTT-3.3.1-3]', async () => {
    const topic = unique('p/dup');
    const { sub, pub } = await pair(topic, 2);
    pub.send({ cmd: 'publish', topic, payload: Buffer.from('d'), qos: 1, messageId: 3, retain: false, dup: true });
    expect((await pub.next()).cmd).to.equal('puback');
    const p = await receive(sub);
    expect(p.dup).to.equal(false);
  });

  it('keeps the order of 500 QoS 1 messages on one topic [MQTT-4.6.0-6]', async () => {
    const topic = unique('p/order');
    const { sub, pub } = await pair(topic, 1);
    const n = 500;
    // Pipelined: all PUBLISHes go out before any PUBACK is read.
    for (let i = 0; i < n; i++) {
      pub.send({ cmd: 'publish', topic, payload: Buffer.from(String(i)), qos: 1, messageId: (i % 65535) + 1, retain: false, dup: false });
    }
    const got: number[] = [];
    for (let i = 0; i < n; i++) got.push(Number(String((await receive(sub)).payload)));
    expect(got).to.deep.equal(Array.from({ length: n }, (_, i) => i));
    const acks: number[] = [];
    for (let i = 0; i < n; i++) {
      const a = await pub.next();
      expect(a.cmd).to.equal('puback');
      acks.push(a.messageId as number);
    }
    // PUBACKs in the order the PUBLISHes were received [MQTT-4.6.0-2].
    expect(acks).to.deep.equal(Array.from({ length: n }, (_, i) => i + 1));
    await expectNothingMore(sub);
  });

  it('gives QoS 1/2 messages in flight to one client distinct non-zero packet ids [MQTT-2.3.1-1] [MQTT-2.3.1-2]', async () => {
    const topic = unique('p/ids');
    const { sub, pub } = await pair(topic, 2);
    for (let i = 0; i < 10; i++) await publish(pub, topic, String(i), (1 + (i % 2)) as QoS, { messageId: i + 1 });
    const ids: number[] = [];
    for (let i = 0; i < 10; i++) ids.push((await nextPublish(sub)).messageId as number);
    expect(ids.every((id) => id > 0 && id <= 65535)).to.equal(true);
    expect(new Set(ids).size).to.equal(10);
  });

  it('delivers a message to its own publisher when it is subscribed (no No Local in 3.1.1)', async () => {
    const topic = unique('p/self');
    const c = await pool.connect(gw.port);
    await subscribe(c, [{ topic, qos: 1 }]);
    c.send({ cmd: 'publish', topic, payload: Buffer.from('me'), qos: 1, messageId: 1, retain: false, dup: false });
    const got = [await c.next(), await c.next()];
    const pubPacket = got.find((p) => p.cmd === 'publish');
    expect(got.map((p) => p.cmd).sort()).to.deep.equal(['puback', 'publish']);
    expect(String(pubPacket!.payload)).to.equal('me');
    await ack(c, pubPacket!);
  });

  it('closes the connection on a PUBLISH whose topic name contains a wildcard [MQTT-3.3.2-2]', async () => {
    const c = await pool.connect(gw.port);
    c.send({ cmd: 'publish', topic: 'a/+/b', payload: Buffer.from('x'), qos: 0, retain: false, dup: false });
    expect(await c.closedByServer()).to.deep.equal([]);
  });

  it('closes the connection on a PUBLISH with QoS 3 [MQTT-3.3.1-4]', async () => {
    const c = await pool.connect(gw.port);
    // PUBLISH, flags 0b0110 (QoS 3), topic "a", packet id 1.
    c.send(Buffer.from([0x36, 0x05, 0x00, 0x01, 0x61, 0x00, 0x01]));
    expect(await c.closedByServer()).to.deep.equal([]);
  });

  it('routes QoS 1 and 2 between MQTT 3.1 (MQIsdp) clients', async () => {
    const topic = unique('p/v31');
    const sub = await pool.connect(gw.port, { version: 3, clientId: unique('s31').slice(0, 23) });
    expect(await subscribe(sub, [{ topic, qos: 2 }])).to.deep.equal([2]);
    const pub = await pool.connect(gw.port, { version: 3, clientId: unique('p31').slice(0, 23) });
    await publish(pub, topic, 'old-1', 1);
    await publish(pub, topic, 'old-2', 2);
    expect(summary(await receive(sub))).to.deep.equal({ topic, payload: 'old-1', qos: 1, retain: false });
    expect(summary(await receive(sub))).to.deep.equal({ topic, payload: 'old-2', qos: 2, retain: false });
  });
});

describe('PUBLISH in-flight window (limits.max_inflight = 4)', () => {
  let gw: TestGateway;
  const pool = new ClientPool();

  before(async () => {
    gw = await startTestGateway({ limits: { max_inflight: 4 } });
  });
  afterEach(async () => {
    await pool.closeAll();
  });
  after(async () => {
    await gw.stop();
  });

  for (const qos of [1, 2] as QoS[]) {
    it(`sends a subscriber that does not acknowledge exactly 4 QoS ${qos} messages, then one more per completed ack, in order`, async () => {
      const topic = unique('w/q');
      const sub = await pool.connect(gw.port, { clientId: unique('wsub') });
      await subscribe(sub, [{ topic, qos }]);
      const pub = await pool.connect(gw.port);
      for (let i = 0; i < 10; i++) await publish(pub, topic, String(i), qos, { messageId: i + 1 });

      const first = [];
      for (let i = 0; i < 4; i++) first.push(await nextPublish(sub));
      expect(first.map((p) => String(p.payload))).to.deep.equal(['0', '1', '2', '3']);
      await expectNothingMore(sub); // the window is full

      // Completing one delivery frees exactly one slot.
      await ack(sub, first[0]!);
      const fifth = await nextPublish(sub);
      expect(String(fifth.payload)).to.equal('4');
      await expectNothingMore(sub);

      const window = [first[1]!, first[2]!, first[3]!, fifth];
      if (qos === 2) {
        // PUBREC alone does not free the slot: the message stays in flight until PUBCOMP.
        sub.send({ cmd: 'pubrec', messageId: window[0]!.messageId as number });
        expect((await sub.next()).cmd).to.equal('pubrel');
        await expectNothingMore(sub);
        sub.send({ cmd: 'pubcomp', messageId: window[0]!.messageId as number });
      } else {
        await ack(sub, window[0]!);
      }
      window.shift();
      const later = [await nextPublish(sub)];
      window.push(later[0]!);
      // One completion at a time: each releases exactly the next queued message.
      while (later.length < 5) {
        await ack(sub, window.shift()!);
        const p = await nextPublish(sub);
        later.push(p);
        window.push(p);
      }
      for (const p of window) await ack(sub, p);
      expect(later.map((p) => String(p.payload))).to.deep.equal(['5', '6', '7', '8', '9']);
      await expectNothingMore(sub);
    });
  }
});
