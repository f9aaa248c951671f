import { expect } from 'chai';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';
import type { RawClient } from '../helpers/raw-client.js';
import {
  ClientPool, ack, expectNothingMore, nextPublish, publish, receive, subscribe, summary, unique, type QoS,
} from '../helpers/flows.js';

describe('Retained messages (MQTT 3.1.1)', () => {
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

  async function publisher(): Promise<RawClient> {
    return pool.connect(gw.port);
  }

  /** A new client subscribing to `filter`; returns it after the SUBACK. */
  async function subscriber(filter: string, qos: QoS = 2): Promise<RawClient> {
    const c = await pool.connect(gw.port);
    await subscribe(c, [{ topic: filter, qos }]);
    return c;
  }

  it('stores a retained message and sends it to a new subscription with RETAIN 1 [MQTT-3.3.1-5] [MQTT-3.3.1-6] [MQTT-3.3.1-8]', async () => {
    const t = unique('r/set');
    await publish(await publisher(), t, 'hello', 1, { retain: true });
    const sub = await subscriber(t, 1);
    const p = await receive(sub);
    expect(summary(p)).to.deep.equal({ topic: t, payload: 'hello', qos: 1, retain: true });
    await expectNothingMore(sub);
  });

  it('replaces the retained message of a topic with a newer one [MQTT-3.3.1-5]', async () => {
    const t = unique('r/replace');
    const pub = await publisher();
    await publish(pub, t, 'old', 1, { retain: true });
    await publish(pub, t, 'new', 1, { retain: true });
    const sub = await subscriber(t);
    expect(summary(await receive(sub)).payload).to.equal('new');
    await expectNothingMore(sub);
  });

  it('replaces a retained message with a QoS 0 retained message [MQTT-3.3.1-7]', async () => {
    const t = unique('r/q0');
    const pub = await publisher();
    await publish(pub, t, 'qos2', 2, { retain: true });
    await publish(pub, t, 'qos0', 0, { retain: true });
    const sub = await subscriber(t);
    expect(summary(await receive(sub))).to.deep.equal({ topic: t, payload: 'qos0', qos: 0, retain: true });
    await expectNothingMore(sub);
  });

  it('clears the retained message with an empty retained PUBLISH, which is still delivered live [MQTT-3.3.1-10] [MQTT-3.3.1-11]', async () => {
    const t = unique('r/clear');
    const pub = await publisher();
    await publish(pub, t, 'soon gone', 1, { retain: true });
    const live = await subscriber(t, 1);
    expect(summary(await receive(live)).payload).to.equal('soon gone');
    await publish(pub, t, '', 1, { retain: true });
    // Processed as normal: the current subscriber gets the empty message.
    expect(summary(await receive(live))).to.deep.equal({ topic: t, payload: '', qos: 1, retain: false });
    const later = await subscriber(t);
    await expectNothingMore(later);
  });

  it('neither stores nor removes a retained message for a PUBLISH with RETAIN 0 [MQTT-3.3.1-12]', async () => {
    const t = unique('r/noretain');
    const pub = await publisher();
    await publish(pub, t, 'kept', 1, { retain: true });
    await publish(pub, t, 'not kept', 1);
    await publish(pub, `${t}/other`, 'not kept either', 1);
    const sub = await subscriber(`${t}/#`);
    expect(summary(await receive(sub)).payload).to.equal('kept');
    await expectNothingMore(sub);
  });

  for (const [published, granted] of [[2, 1], [1, 2], [2, 0], [1, 1]] as Array<[QoS, QoS]>) {
    const delivered = Math.min(published, granted);
    it(`sends a QoS ${published} retained message to a QoS ${granted} subscription at QoS ${delivered} [MQTT-3.8.4-6]`, async () => {
      const t = unique('r/minqos');
      await publish(await publisher(), t, 'r', published, { retain: true });
      const sub = await subscriber(t, granted);
      const p = await receive(sub);
      expect(summary(p)).to.deep.equal({ topic: t, payload: 'r', qos: delivered, retain: true });
      await expectNothingMore(sub);
    });
  }

  it('sends every retained message whose topic matches a wildcard filter [MQTT-3.3.1-6]', async () => {
    const t = unique('r/wild');
    const pub = await publisher();
    for (const topic of [`${t}/a`, `${t}/b`, `${t}/c/d`, `${t}x/a`]) await publish(pub, topic, topic, 0, { retain: true });

    const plus = await subscriber(`${t}/+`, 0);
    const gotPlus = await plus.nothingPendingAfterPing();
    expect(gotPlus.map((p) => p.topic).sort()).to.deep.equal([`${t}/a`, `${t}/b`]);
    expect(gotPlus.every((p) => p.retain === true)).to.equal(true);

    const hash = await subscriber(`${t}/#`, 0);
    const gotHash = await hash.nothingPendingAfterPing();
    expect(gotHash.map((p) => p.topic).sort()).to.deep.equal([`${t}/a`, `${t}/b`, `${t}/c/d`]);
    expect(gotHash.every((p) => p.retain === true && String(p.payload) === p.topic)).to.equal(true);
  });

  it("does not send retained '$' topics to a leading-wildcard subscription [MQTT-4.7.2-1]", async () => {
    const d = unique('$ret');
    await publish(await publisher(), `${d}/x`, 'dollar', 0, { retain: true });
    const hash = await subscriber('+/x', 0);
    await expectNothingMore(hash);
    const named = await subscriber(`${d}/+`, 0);
    expect(summary(await nextPublish(named))).to.deep.equal({ topic: `${d}/x`, payload: 'dollar', qos: 0, retain: true });
  });

  it('sends retained messages again when a subscription is repeated [MQTT-3.8.4-3]', async () => {
    const t = unique('r/resub');
    await publish(await publisher(), t, 'again', 1, { retain: true });
    const sub = await pool.connect(gw.port);
    await subscribe(sub, [{ topic: t, qos: 1 }], 1);
    const first = await nextPublish(sub);
    await ack(sub, first);
    await subscribe(sub, [{ topic: t, qos: 1 }], 2);
    const second = await receive(sub);
    expect(summary(second)).to.deep.equal({ topic: t, payload: 'again', qos: 1, retain: true });
  });

  it('keeps a retained message independent of the publisher connection', async () => {
    const t = unique('r/gone');
    const pub = await publisher();
    await publish(pub, t, 'survives', 2, { retain: true });
    await pub.close();
    const sub = await subscriber(t);
    expect(summary(await receive(sub)).payload).to.equal('survives');
  });

  it('keeps a binary payload of a retained message byte for byte', async () => {
    const t = unique('r/binary');
    const payload = Buffer.from(Array.from({ length: 1000 }, (_, i) => (i * 7) % 256));
    await publish(await publisher(), t, payload, 1, { retain: true });
    const sub = await subscriber(t, 1);
    const p = await receive(sub);
    expect(Buffer.compare(p.payload as Buffer, payload)).to.equal(0);
  });
});
