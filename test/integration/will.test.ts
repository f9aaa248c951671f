import { expect } from 'chai';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { RawClient } from '../helpers/raw-client.js';
import {
  ClientPool, expectNothingMore, nextPublish, receive, subscribe, summary, unique, type QoS,
} from '../helpers/flows.js';

interface WillOpts { topic: string; payload: string; qos: QoS; retain: boolean }

function willOf(w: WillOpts): { topic: string; payload: Buffer; qos: QoS; retain: boolean } {
  return { topic: w.topic, payload: Buffer.from(w.payload), qos: w.qos, retain: w.retain };
}

describe('Will messages (MQTT 3.1.1)', () => {
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

  /** A client subscribed to `filter` at QoS 2. */
  async function watcher(filter: string): Promise<RawClient> {
    const w = await pool.connect(gw.port);
    await subscribe(w, [{ topic: filter, qos: 2 }]);
    return w;
  }

  it('publishes the will when the client closes the network connection without DISCONNECT [MQTT-3.1.2-8]', async () => {
    const t = unique('will/abrupt');
    const w = await watcher(`${t}/#`);
    const c = await pool.connect(gw.port, { will: willOf({ topic: `${t}/status`, payload: 'lost', qos: 0, retain: false }) });
    await c.close(); // socket destroyed, no DISCONNECT
    expect(summary(await nextPublish(w))).to.deep.equal({ topic: `${t}/status`, payload: 'lost', qos: 0, retain: false });
    await expectNothingMore(w);
  });

  for (const qos of [1, 2] as QoS[]) {
    it(`publishes the will at its QoS ${qos} [MQTT-3.1.2-14]`, async () => {
      const t = unique('will/qos');
      const w = await watcher(t);
      const c = await pool.connect(gw.port, { will: willOf({ topic: t, payload: `q${qos}`, qos, retain: false }) });
      await c.close();
      const p = await receive(w);
      expect(summary(p)).to.deep.equal({ topic: t, payload: `q${qos}`, qos, retain: false });
      await expectNothingMore(w);
    });
  }

  it('delivers the will at the lower of its QoS and the granted QoS [MQTT-3.8.4-6]', async () => {
    const t = unique('will/minqos');
    const w = await pool.connect(gw.port);
    await subscribe(w, [{ topic: t, qos: 1 }]);
    const c = await pool.connect(gw.port, { will: willOf({ topic: t, payload: 'x', qos: 2, retain: false }) });
    await c.close();
    expect((await receive(w)).qos).to.equal(1);
  });

  it('publishes a will with Will Retain 1 as a retained message [MQTT-3.1.2-17]', async () => {
    const t = unique('will/retain');
    const w = await watcher(t);
    const c = await pool.connect(gw.port, { will: willOf({ topic: t, payload: 'offline', qos: 1, retain: true }) });
    await c.close();
    // Live delivery to an established subscription carries RETAIN 0 [MQTT-3.3.1-9] ...
    expect(summary(await receive(w))).to.deep.equal({ topic: t, payload: 'offline', qos: 1, retain: false });
    // ... and the message was stored: a new subscription gets it with RETAIN 1.
    const late = await pool.connect(gw.port);
    await subscribe(late, [{ topic: t, qos: 1 }]);
    expect(summary(await receive(late))).to.deep.equal({ topic: t, payload: 'offline', qos: 1, retain: true });
  });

  it('publishes a will with Will Retain 0 as a non-retained message [MQTT-3.1.2-16]', async () => {
    const t = unique('will/noretain');
    const w = await watcher(t);
    const c = await pool.connect(gw.port, { will: willOf({ topic: t, payload: 'bye', qos: 0, retain: false }) });
    await c.close();
    await nextPublish(w);
    const late = await pool.connect(gw.port);
    await subscribe(late, [{ topic: t, qos: 1 }]);
    await expectNothingMore(late);
  });

  it('does not publish the will after DISCONNECT [MQTT-3.1.2-10] [MQTT-3.14.4-3]', async () => {
    const t = unique('will/clean');
    const w = await watcher(t);
    const c = await pool.connect(gw.port, { will: willOf({ topic: t, payload: 'must not appear', qos: 1, retain: true }) });
    c.send({ cmd: 'disconnect' });
    await c.closedByServer();
    await expectNothingMore(w);
    const late = await pool.connect(gw.port);
    await subscribe(late, [{ topic: t, qos: 1 }]);
    await expectNothingMore(late); // not stored as retained either
  });

  it('publishes the will when the server closes the connection for a protocol error [MQTT-3.1.2-8]', async () => {
    const t = unique('will/protoerr');
    const w = await watcher(t);
    const c = await pool.connect(gw.port, { will: willOf({ topic: t, payload: 'broken', qos: 1, retain: false }) });
    c.send({ cmd: 'publish', topic: 'bad/#', payload: Buffer.from('x'), qos: 0, retain: false, dup: false }); // wildcard in a topic name
    await c.closedByServer();
    expect(summary(await receive(w))).to.deep.equal({ topic: t, payload: 'broken', qos: 1, retain: false });
  });

  it('publishes the will of a connection taken over by the same client id, not of the new one [MQTT-3.1.4-2] [MQTT-3.1.2-8]', async () => {
    const t = unique('will/takeover');
    const id = unique('twin');
    const w = await watcher(`${t}/#`);
    const first = await pool.connect(gw.port, { clientId: id, will: willOf({ topic: `${t}/first`, payload: 'old', qos: 1, retain: false }) });
    const second = await pool.connect(gw.port, { clientId: id, will: willOf({ topic: `${t}/second`, payload: 'new', qos: 1, retain: false }) });
    await first.closedByServer();
    expect(summary(await receive(w))).to.deep.equal({ topic: `${t}/first`, payload: 'old', qos: 1, retain: false });
    await expectNothingMore(w);
    expect(second.closed).to.equal(false);
    // The new connection's will is still armed.
    await second.close();
    expect(summary(await receive(w))).to.deep.equal({ topic: `${t}/second`, payload: 'new', qos: 1, retain: false });
  });

  it('publishes the will once, with a binary payload intact', async () => {
    const t = unique('will/binary');
    const payload = Buffer.from([0, 1, 2, 0xff, 0xfe, 0x80, 0]);
    const w = await watcher(t);
    const c = await pool.connect(gw.port, { will: { topic: t, payload, qos: 0, retain: false } });
    await c.close();
    const p = await nextPublish(w);
    expect(Buffer.compare(p.payload as Buffer, payload)).to.equal(0);
    await expectNothingMore(w);
  });

  it('publishes the will of an MQTT 3.1 (MQIsdp) client [MQTT-3.1.2-8]', async () => {
    const t = unique('will/v31');
    const w = await watcher(t);
    const c = await pool.connect(gw.port, { version: 3, clientId: unique('w31').slice(0, 23), will: willOf({ topic: t, payload: '3.1', qos: 1, retain: false }) });
    await c.close();
    expect(summary(await receive(w)).payload).to.equal('3.1');
  });

  it('refuses a CONNECT whose will topic contains a wildcard, and publishes no will [MQTT-3.1.3-10]', async () => {
    const t = unique('will/badtopic');
    const w = await watcher(`${t}/#`);
    const raw = pool.track(await RawClient.connectSocket(gw.port));
    raw.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, clientId: unique('badwill'), keepalive: 0,
      will: { topic: `${t}/+/x`, payload: Buffer.from('x'), qos: 0, retain: false } });
    const got = await raw.closedByServer();
    expect(got.every((p) => p.cmd === 'connack' && p.returnCode !== 0)).to.equal(true);
    await expectNothingMore(w);
  });
});

describe('Will messages at server shutdown', () => {
  let gw: TestGateway | undefined;
  const pool = new ClientPool();

  afterEach(async () => {
    await pool.closeAll();
    await gw?.stop();
    gw = undefined;
  });

  // Both connection orders: the broker closes connections one by one, and a subscriber must not
  // be disconnected before the wills of the others were delivered to it.
  for (const order of ['will client first', 'watcher first'] as const) {
    it(`publishes the wills of clients still connected when the server stops (${order}) [MQTT-3.1.2-8]`, async () => {
      const g = (gw = await startTestGateway());
      const t = unique('will/shutdown');
      const will = willOf({ topic: t, payload: 'server gone', qos: 1, retain: false });
      const connectWatcher = async (): Promise<RawClient> => {
        const w = await pool.connect(g.port, { clientId: unique('watch') });
        await subscribe(w, [{ topic: t, qos: 1 }]);
        return w;
      };
      let c: RawClient;
      let w: RawClient;
      if (order === 'will client first') {
        c = await pool.connect(g.port, { will });
        w = await connectWatcher();
      } else {
        w = await connectWatcher();
        c = await pool.connect(g.port, { will });
      }
      const stopped = g.stop();
      const got = await w.closedByServer();
      await stopped;
      await c.closedByServer();
      expect(got.map((p) => p.cmd === 'publish' ? summary(p) : p.cmd)).to.deep.equal([{ topic: t, payload: 'server gone', qos: 1, retain: false }]);
    });
  }
});
