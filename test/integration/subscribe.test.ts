import { expect } from 'chai';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';
import type { RawClient } from '../helpers/raw-client.js';
import {
  ClientPool, ack, expectNothingMore, nextPublish, publish, receive, subscribe, summary, unique, unsubscribe,
} from '../helpers/flows.js';

/** Publishes QoS 0 to each topic, then returns the topics `sub` received (in order). */
async function topicsReceived(pub: RawClient, sub: RawClient, topics: string[]): Promise<string[]> {
  for (const t of topics) await publish(pub, t, t, 0);
  const got = await sub.nothingPendingAfterPing();
  for (const p of got) expect(p.cmd).to.equal('publish');
  return got.map((p) => p.topic as string);
}

describe('SUBSCRIBE / UNSUBSCRIBE (MQTT 3.1.1)', () => {
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

  async function clients(): Promise<{ sub: RawClient; pub: RawClient }> {
    return { sub: await pool.connect(gw.port), pub: await pool.connect(gw.port) };
  }

  it('answers SUBSCRIBE with SUBACK carrying the same packet id [MQTT-3.8.4-1] [MQTT-3.8.4-2]', async () => {
    const { sub } = await clients();
    sub.send({ cmd: 'subscribe', messageId: 31337, subscriptions: [{ topic: unique('s/id'), qos: 1 }] });
    const ackPacket = await sub.next();
    expect([ackPacket.cmd, ackPacket.messageId, ackPacket.granted]).to.deep.equal(['suback', 31337, [1]]);
  });

  it("matches '+' against exactly one level, including an empty one [MQTT-4.7.1-3]", async () => {
    const t = unique('s/plus');
    const { sub, pub } = await clients();
    await subscribe(sub, [{ topic: `${t}/+/x`, qos: 0 }]);
    const topics = [`${t}/a/x`, `${t}/a/b/x`, `${t}/x`, `${t}//x`, `${t}/b/x`, `${t}/a/x/y`];
    expect(await topicsReceived(pub, sub, topics)).to.deep.equal([`${t}/a/x`, `${t}//x`, `${t}/b/x`]);
  });

  it("matches '#' against the parent level and any number of child levels [MQTT-4.7.1-2]", async () => {
    const t = unique('s/hash');
    const { sub, pub } = await clients();
    await subscribe(sub, [{ topic: `${t}/#`, qos: 0 }]);
    const topics = [t, `${t}/a`, `${t}/a/b/c`, `${t}x`, `${t}x/a`, `other/${t}`];
    expect(await topicsReceived(pub, sub, topics)).to.deep.equal([t, `${t}/a`, `${t}/a/b/c`]);
  });

  it('matches a filter without wildcards only against the identical topic (case-sensitive) [MQTT-4.7.3-4]', async () => {
    const t = unique('s/exact');
    const { sub, pub } = await clients();
    await subscribe(sub, [{ topic: `${t}/A`, qos: 0 }]);
    expect(await topicsReceived(pub, sub, [`${t}/a`, `${t}/A/`, `${t}/A`, `/${t}/A`])).to.deep.equal([`${t}/A`]);
  });

  it("does not match topics starting with '$' by a leading '#' or '+' [MQTT-4.7.2-1]", async () => {
    const d = unique('$app');
    const { sub, pub } = await clients();
    await subscribe(sub, [{ topic: '#', qos: 0 }, { topic: '+/x', qos: 0 }, { topic: '+/+', qos: 0 }]);
    const dollarOnly = await pool.connect(gw.port);
    await subscribe(dollarOnly, [{ topic: `${d}/+`, qos: 0 }]);
    expect(await topicsReceived(pub, sub, [`${d}/x`])).to.deep.equal([]);
    // The message was published and routed: a filter naming the '$' level receives it.
    expect(summary(await nextPublish(dollarOnly)).topic).to.equal(`${d}/x`);
    await expectNothingMore(dollarOnly);
  });

  it('returns one SUBACK code per filter, in order, with 0x80 for invalid filters [MQTT-3.8.4-5] [MQTT-3.9.3-1]', async () => {
    const t = unique('s/codes');
    const { sub, pub } = await clients();
    const granted = await subscribe(sub, [
      { topic: `${t}/a`, qos: 2 }, { topic: `${t}/#/b`, qos: 1 }, { topic: `${t}/b`, qos: 0 },
      { topic: `${t}/c+`, qos: 2 }, { topic: `${t}/d`, qos: 1 }, { topic: `${t}/e#`, qos: 0 },
    ]);
    expect(granted).to.deep.equal([2, 0x80, 0, 0x80, 1, 0x80]);
    // The valid filters were subscribed despite the failures around them [MQTT-3.8.4-4].
    expect(await topicsReceived(pub, sub, [`${t}/a`, `${t}/b`, `${t}/d`, `${t}/x/b`])).to.deep.equal([`${t}/a`, `${t}/b`, `${t}/d`]);
  });

  it('grants the requested QoS 0, 1 and 2 [MQTT-3.9.3-2]', async () => {
    const t = unique('s/grant');
    const { sub } = await clients();
    expect(await subscribe(sub, [{ topic: `${t}/0`, qos: 0 }, { topic: `${t}/1`, qos: 1 }, { topic: `${t}/2`, qos: 2 }])).to.deep.equal([0, 1, 2]);
  });

  it('delivers once, at the highest granted QoS, to a client with overlapping subscriptions [MQTT-3.3.5-1]', async () => {
    const t = unique('s/overlap');
    const { sub, pub } = await clients();
    await subscribe(sub, [{ topic: `${t}/+`, qos: 0 }, { topic: `${t}/#`, qos: 2 }, { topic: `${t}/x`, qos: 1 }]);
    await publish(pub, `${t}/x`, 'o', 2);
    const p = await receive(sub);
    expect(summary(p)).to.deep.equal({ topic: `${t}/x`, payload: 'o', qos: 2, retain: false });
    await expectNothingMore(sub);
  });

  it('replaces the subscription when the same filter is subscribed again [MQTT-3.8.4-3]', async () => {
    const t = unique('s/replace');
    const { sub, pub } = await clients();
    expect(await subscribe(sub, [{ topic: t, qos: 2 }], 1)).to.deep.equal([2]);
    expect(await subscribe(sub, [{ topic: t, qos: 0 }], 2)).to.deep.equal([0]);
    await publish(pub, t, 'r', 2);
    const p = await nextPublish(sub);
    expect(p.qos).to.equal(0);
    await expectNothingMore(sub);
  });

  it('answers UNSUBSCRIBE with UNSUBACK of the same packet id even when nothing matched [MQTT-3.10.4-4] [MQTT-3.10.4-5]', async () => {
    const { sub } = await clients();
    sub.send({ cmd: 'unsubscribe', messageId: 4711, unsubscriptions: [unique('s/never')] });
    const ackPacket = await sub.next();
    expect([ackPacket.cmd, ackPacket.messageId]).to.deep.equal(['unsuback', 4711]);
    expect(sub.closed).to.equal(false);
  });

  it('stops delivering an unsubscribed filter, comparing filters character by character [MQTT-3.10.4-1] [MQTT-3.10.4-2]', async () => {
    const t = unique('s/unsub');
    const { sub, pub } = await clients();
    await subscribe(sub, [{ topic: `${t}/#`, qos: 0 }, { topic: `${t}/x`, qos: 0 }]);
    // '+' here is not the subscribed 'x': nothing is removed.
    await unsubscribe(sub, [`${t}/+`], 2);
    await unsubscribe(sub, [`${t}/#`], 3);
    expect(await topicsReceived(pub, sub, [`${t}/y`, `${t}/x`])).to.deep.equal([`${t}/x`]);
    await unsubscribe(sub, [`${t}/x`], 4);
    expect(await topicsReceived(pub, sub, [`${t}/y`, `${t}/x`])).to.deep.equal([]);
  });

  it('unsubscribes several filters in one UNSUBSCRIBE [MQTT-3.10.4-6]', async () => {
    const t = unique('s/unsubmany');
    const { sub, pub } = await clients();
    await subscribe(sub, [{ topic: `${t}/a`, qos: 0 }, { topic: `${t}/b`, qos: 0 }, { topic: `${t}/c`, qos: 0 }]);
    await unsubscribe(sub, [`${t}/a`, `${t}/c`]);
    expect(await topicsReceived(pub, sub, [`${t}/a`, `${t}/b`, `${t}/c`])).to.deep.equal([`${t}/b`]);
  });

  it('completes a QoS 1 delivery already in flight after UNSUBSCRIBE [MQTT-3.10.4-3]', async () => {
    const t = unique('s/unsubinflight');
    const id = unique('uif');
    const sub = await pool.connect(gw.port, { clientId: id });
    const pub = await pool.connect(gw.port);
    await subscribe(sub, [{ topic: t, qos: 1 }]);
    await publish(pub, t, 'in flight', 1);
    const p = await nextPublish(sub);
    await unsubscribe(sub, [t], 2);
    expect(gw.broker.sessions.get(id)!.inflight.size).to.equal(1);
    await ack(sub, p);
    await expectNothingMore(sub);
    expect(sub.closed).to.equal(false);
    expect(gw.broker.sessions.get(id)!.inflight.size).to.equal(0);
  });

  it('delivers one copy to each subscribed client', async () => {
    const t = unique('s/fanout');
    const subs = [await pool.connect(gw.port), await pool.connect(gw.port), await pool.connect(gw.port)];
    for (const s of subs) await subscribe(s, [{ topic: t, qos: 1 }]);
    const pub = await pool.connect(gw.port);
    await publish(pub, t, 'all', 1);
    for (const s of subs) {
      expect(summary(await receive(s)).payload).to.equal('all');
      await expectNothingMore(s);
    }
  });

  const malformed: Array<[string, number[]]> = [
    ['SUBSCRIBE with requested QoS 3 [MQTT-3-8.3-4]', [0x82, 0x06, 0x00, 0x01, 0x00, 0x01, 0x61, 0x03]],
    ['SUBSCRIBE with a reserved bit set in the options byte [MQTT-3-8.3-4]', [0x82, 0x06, 0x00, 0x01, 0x00, 0x01, 0x61, 0x04]],
    ['SUBSCRIBE without any topic filter [MQTT-3.8.3-3]', [0x82, 0x02, 0x00, 0x01]],
    ['SUBSCRIBE with fixed header flags other than 0010 [MQTT-3.8.1-1]', [0x80, 0x06, 0x00, 0x01, 0x00, 0x01, 0x61, 0x00]],
    ['UNSUBSCRIBE without any topic filter [MQTT-3.10.3-2]', [0xa2, 0x02, 0x00, 0x01]],
    ['UNSUBSCRIBE with fixed header flags other than 0010 [MQTT-3.10.1-1]', [0xa0, 0x05, 0x00, 0x01, 0x00, 0x01, 0x61]],
    ['SUBSCRIBE with packet id 0 [MQTT-2.3.1-1]', [0x82, 0x06, 0x00, 0x00, 0x00, 0x01, 0x61, 0x00]],
  ];
  for (const [what, bytes] of malformed) {
    it(`closes the connection on ${what}`, async () => {
      const c = await pool.connect(gw.port);
      c.send(Buffer.from(bytes));
      expect((await c.closedByServer()).map((p) => p.cmd)).to.deep.equal([]);
    });
  }
});

describe('SUBSCRIBE with a server maximum QoS of 1', () => {
  let gw: TestGateway;
  const pool = new ClientPool();

  before(async () => {
    gw = await startTestGateway();
    // Not a config key: the broker limit behind the MQTT 5 Maximum QoS, set for this gateway only.
    gw.broker.limits.maximumQoS = 1;
  });
  afterEach(async () => {
    await pool.closeAll();
  });
  after(async () => {
    await gw.stop();
  });

  it('grants a lower QoS than requested and delivers at the granted QoS [MQTT-3.8.4-6] [MQTT-3.9.3-1]', async () => {
    const t = unique('s/down');
    const sub = await pool.connect(gw.port);
    expect(await subscribe(sub, [{ topic: `${t}/2`, qos: 2 }, { topic: `${t}/0`, qos: 0 }])).to.deep.equal([1, 0]);
    const pub = await pool.connect(gw.port);
    // A client may still publish QoS 2 in 3.1.1 (there is no way to tell it the maximum).
    await publish(pub, `${t}/2`, 'two', 2);
    const p = await receive(sub);
    expect(summary(p)).to.deep.equal({ topic: `${t}/2`, payload: 'two', qos: 1, retain: false });
    await expectNothingMore(sub);
  });
});
