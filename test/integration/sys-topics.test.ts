import { expect } from 'chai';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';
import type { AnyPacket, RawClient } from '../helpers/raw-client.js';
import { ClientPool, expectNothingMore, nextPublish, subscribe } from '../helpers/flows.js';

/** Topic → payload of the PUBLISHes in `packets` (all must be PUBLISH). */
function byTopic(packets: AnyPacket[]): Map<string, AnyPacket> {
  const m = new Map<string, AnyPacket>();
  for (const p of packets) {
    expect(p.cmd).to.equal('publish');
    m.set(p.topic as string, p);
  }
  return m;
}

/** The next live (RETAIN 0) PUBLISH of `topic`, skipping others. */
async function nextLive(c: RawClient, topic: string): Promise<AnyPacket> {
  for (;;) {
    const p = await nextPublish(c, 5000);
    if (p.topic === topic && p.retain === false) return p;
  }
}

describe('$SYS topics (sys.interval_s = 1)', () => {
  let gw: TestGateway;
  const pool = new ClientPool();

  before(async () => {
    gw = await startTestGateway({ sys: { interval_s: 1 } });
  });
  afterEach(async () => {
    await pool.closeAll();
  });
  after(async () => {
    await gw.stop();
  });

  it('sends the current $SYS/broker values, retained, right after subscribing to $SYS/broker/# [MQTT-3.3.1-8]', async () => {
    const c = await pool.connect(gw.port);
    expect(await subscribe(c, [{ topic: '$SYS/broker/#', qos: 0 }])).to.deep.equal([0]);
    // Retained messages are sent with the subscription: no interval has to pass.
    const got = byTopic(await c.nothingPendingAfterPing());
    for (const t of ['version', 'uptime', 'clients/connected', 'clients/total', 'messages/received', 'messages/sent',
      'publish/messages/received', 'publish/messages/sent', 'bytes/received', 'bytes/sent', 'subscriptions/count']) {
      const p = got.get(`$SYS/broker/${t}`);
      expect(p, `$SYS/broker/${t}`).to.not.equal(undefined);
      expect(p!.retain, `$SYS/broker/${t} retain`).to.equal(true);
      expect(p!.qos).to.equal(0);
    }
    expect(String(got.get('$SYS/broker/version')!.payload)).to.equal(`convoy ${gw.broker.version}`);
    expect(String(got.get('$SYS/broker/uptime')!.payload)).to.match(/^\d+ seconds$/);
    for (const t of ['clients/connected', 'clients/total', 'messages/received', 'bytes/received']) {
      expect(String(got.get(`$SYS/broker/${t}`)!.payload), t).to.match(/^\d+$/);
    }
    for (const p of got.values()) expect((p.topic as string).startsWith('$SYS/broker/')).to.equal(true);
  });

  it('publishes updates every interval with the current number of connected clients', async () => {
    const c = await pool.connect(gw.port);
    await subscribe(c, [{ topic: '$SYS/broker/clients/connected', qos: 0 }, { topic: '$SYS/broker/uptime', qos: 0 }]);
    await c.nothingPendingAfterPing(); // the retained values
    await pool.connect(gw.port);
    await pool.connect(gw.port);
    expect(gw.broker.clients.size).to.equal(3);
    // An update may already have been on its way before the last connect: allow one stale value.
    const values = [String((await nextLive(c, '$SYS/broker/clients/connected')).payload)];
    if (values[0] !== '3') values.push(String((await nextLive(c, '$SYS/broker/clients/connected')).payload));
    expect(values.at(-1)).to.equal('3');
    const uptime = await nextLive(c, '$SYS/broker/uptime');
    expect(Number(String(uptime.payload).split(' ')[0])).to.be.at.least(0);
  });

  it("does not send $SYS topics to a '#' or '+/…' subscription, retained or live [MQTT-4.7.2-1]", async () => {
    const all = await pool.connect(gw.port);
    await subscribe(all, [{ topic: '#', qos: 0 }, { topic: '+/broker/#', qos: 0 }, { topic: '+/+/uptime', qos: 0 }]);
    await expectNothingMore(all); // no retained $SYS messages
    const sys = await pool.connect(gw.port);
    await subscribe(sys, [{ topic: '$SYS/broker/uptime', qos: 0 }]);
    await sys.nothingPendingAfterPing();
    // A live update reached the $SYS subscriber; the wildcard subscriber got nothing.
    await nextLive(sys, '$SYS/broker/uptime');
    await expectNothingMore(all);
  });

  it('matches $SYS topics with wildcards below the $SYS level [MQTT-4.7.2-1]', async () => {
    const c = await pool.connect(gw.port);
    await subscribe(c, [{ topic: '$SYS/+/version', qos: 0 }]);
    const got = await c.nothingPendingAfterPing();
    expect(got.map((p) => [p.topic, p.retain])).to.deep.equal([['$SYS/broker/version', true]]);
  });
});
