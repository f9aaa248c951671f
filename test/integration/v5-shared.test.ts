// MQTT 5 shared subscriptions ($share/GROUP/FILTER, spec 4.8.2): one delivery per group, spread
// over the members, alongside ordinary subscribers; redelivery when a member's session ends;
// invalid share filters; shared and ordinary subscriptions on one client. Raw sockets, no sleeps.
import { expect } from 'chai';
import type mqttPacket from 'mqtt-packet';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { RawClient, type AnyPacket } from '../helpers/raw-client.js';
import { ClientPool, unique } from '../helpers/flows.js';

async function connect5(port: number, pool: ClientPool, opts: Partial<mqttPacket.IConnectPacket> = {}): Promise<RawClient> {
  const c = pool.track(await RawClient.connectSocket(port, 5));
  c.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 5, clean: true, clientId: unique('v5sh'), keepalive: 0, ...opts });
  const connack = await c.next();
  expect([connack.cmd, connack.reasonCode]).to.deep.equal(['connack', 0]);
  return c;
}

let nextMessageId = 1;

async function subscribe(c: RawClient, subscriptions: mqttPacket.ISubscription[]): Promise<number[]> {
  const messageId = nextMessageId++;
  c.send({ cmd: 'subscribe', messageId, subscriptions });
  const ack = await c.nextOf('suback');
  expect(ack.messageId).to.equal(messageId);
  return ack.granted as number[];
}

async function unsubscribe(c: RawClient, topics: string[]): Promise<number[]> {
  const messageId = nextMessageId++;
  c.send({ cmd: 'unsubscribe', messageId, unsubscriptions: topics });
  const ack = await c.nextOf('unsuback');
  return ack.granted as number[];
}

async function publish1(c: RawClient, topic: string, payload: string, retain = false): Promise<void> {
  const messageId = nextMessageId++;
  c.send({ cmd: 'publish', topic, payload: Buffer.from(payload), qos: 1, messageId, retain, dup: false });
  expect((await c.nextOf('puback')).messageId).to.equal(messageId);
}

/**
 * Everything that arrived before a PINGRESP. Deliveries are written before the publisher's
 * PUBACK, so once all PUBACKs are in, a PINGREQ round trip collects all of them.
 */
async function drain(c: RawClient): Promise<AnyPacket[]> {
  return c.nothingPendingAfterPing();
}

const payloads = (ps: AnyPacket[]): string[] => ps.filter((p) => p.cmd === 'publish').map((p) => String(p.payload));

describe('MQTT 5 shared subscriptions', () => {
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

  it('delivers each message to one member per group, balanced, while ordinary subscribers get all (4.8.2)', async () => {
    const t = unique('sh/bal');
    const members = [await connect5(gw.port, pool), await connect5(gw.port, pool), await connect5(gw.port, pool)];
    for (const m of members) expect(await subscribe(m, [{ topic: `$share/g/${t}`, qos: 0 }])).to.deep.equal([0]);
    const otherGroup = [await connect5(gw.port, pool), await connect5(gw.port, pool)];
    for (const m of otherGroup) await subscribe(m, [{ topic: `$share/h/${t}`, qos: 0 }]);
    const plain = await connect5(gw.port, pool);
    await subscribe(plain, [{ topic: t, qos: 0 }]);
    const pub = await connect5(gw.port, pool);
    const n = 30;
    for (let i = 0; i < n; i++) await publish1(pub, t, `m${i}`);
    const all = Array.from({ length: n }, (_, i) => `m${i}`);

    const got = await Promise.all(members.map(async (m) => payloads(await drain(m))));
    expect(got.flat().sort()).to.deep.equal([...all].sort()); // each exactly once in group g
    for (const g of got) expect(g.length, `member counts ${got.map((x) => x.length).join('/')}`).to.be.within(8, 12);

    const got2 = await Promise.all(otherGroup.map(async (m) => payloads(await drain(m))));
    expect(got2.flat().sort()).to.deep.equal([...all].sort()); // and exactly once in group h
    for (const g of got2) expect(g.length).to.be.within(12, 18);

    expect(payloads(await drain(plain))).to.deep.equal(all);
  });

  it('re-sends QoS 1 messages in flight or queued to a member whose session ends to another member (4.8.2)', async () => {
    const t = unique('sh/redo');
    // A takes one message at a time and never acknowledges; its session ends with the connection.
    const a = await connect5(gw.port, pool, { properties: { receiveMaximum: 1 } });
    const b = await connect5(gw.port, pool);
    await subscribe(a, [{ topic: `$share/g/${t}`, qos: 1 }]);
    await subscribe(b, [{ topic: `$share/g/${t}`, qos: 1 }]);
    const pub = await connect5(gw.port, pool);
    const all = ['m1', 'm2', 'm3', 'm4', 'm5', 'm6'];
    for (const m of all) await publish1(pub, t, m);
    const atA = payloads(await drain(a));
    expect(atA, 'A gets one (its receive maximum) and holds the rest queued').to.have.length(1);
    const bPackets = await drain(b);
    const atB = payloads(bPackets);
    for (const p of bPackets) b.send({ cmd: 'puback', messageId: p.messageId as number });
    expect(atB.length).to.equal(3);

    a.send({ cmd: 'disconnect', reasonCode: 0 }); // session expiry 0: the session ends now
    await a.closedByServer();
    const resent: AnyPacket[] = [];
    while (atB.length + resent.length < all.length) resent.push(await b.nextOf('publish'));
    for (const p of resent) b.send({ cmd: 'puback', messageId: p.messageId as number });
    expect([...atB, ...payloads(resent)].sort()).to.deep.equal(all);
    expect(payloads(resent)).to.include(atA[0]);
    expect(await drain(b)).to.deep.equal([]);
  });

  it('refuses $share/GROUP without a filter and a group name with a wildcard with SUBACK 0x8F [MQTT-4.8.2-1] [MQTT-4.8.2-2]', async () => {
    const c = await connect5(gw.port, pool);
    const codes = await subscribe(c, [
      { topic: '$share/g', qos: 0 }, { topic: '$share/g/', qos: 0 }, { topic: '$share/g+/t', qos: 0 },
      { topic: '$share/g#/t', qos: 0 }, { topic: '$share//t', qos: 0 }, { topic: `$share/ok/${unique('t')}`, qos: 1 },
    ]);
    expect(codes.slice(0, 5)).to.deep.equal([0x8f, 0x8f, 0x8f, 0x8f, 0x8f]);
    expect(codes[5]).to.equal(1);
    expect(c.closed).to.equal(false);
  });

  it('treats No Local on a shared subscription as a protocol error 0x82 [MQTT-3.8.3-4]', async () => {
    const c = await connect5(gw.port, pool);
    c.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: `$share/g/${unique('t')}`, qos: 0, nl: true }] });
    const packets = await c.closedByServer();
    expect(packets.map((p) => [p.cmd, p.reasonCode])).to.deep.equal([['disconnect', 0x82]]);
  });

  it('does not send retained messages for a new shared subscription (4.8.2)', async () => {
    const t = unique('sh/ret');
    const pub = await connect5(gw.port, pool);
    await publish1(pub, t, 'kept', true);
    const c = await connect5(gw.port, pool);
    await subscribe(c, [{ topic: `$share/g/${t}`, qos: 1 }]);
    expect(await drain(c)).to.deep.equal([]);
  });

  for (const order of [['shared', 'plain'], ['plain', 'shared']] as const) {
    it(`keeps $share/g/t and t apart on one client; unsubscribes ${order[0]} first, then ${order[1]} [MQTT-3.10.4-1]`, async () => {
      const t = unique('sh/mix');
      const filters = { shared: `$share/g/${t}`, plain: t };
      const id = unique('mixer');
      const c = await connect5(gw.port, pool, { clientId: id });
      const pub = await connect5(gw.port, pool);
      expect(await subscribe(c, [{ topic: filters.shared, qos: 0 }, { topic: filters.plain, qos: 0 }])).to.deep.equal([0, 0]);
      await publish1(pub, t, 'both');
      expect(payloads(await drain(c)), 'one copy per subscription').to.deep.equal(['both', 'both']);

      expect(await unsubscribe(c, [filters[order[0]]])).to.deep.equal([0]);
      await publish1(pub, t, 'one');
      expect(payloads(await drain(c))).to.deep.equal(['one']);

      // The remaining subscription is still the right one: unsubscribing the first again finds nothing.
      expect(await unsubscribe(c, [filters[order[0]]])).to.deep.equal([0x11]);
      expect(await unsubscribe(c, [filters[order[1]]])).to.deep.equal([0]);
      await publish1(pub, t, 'none');
      expect(payloads(await drain(c))).to.deep.equal([]);
      expect(gw.broker.sessions.get(id)!.subscriptions.size).to.equal(0);
    });
  }
});
