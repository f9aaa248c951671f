// MQTT 5 wills: properties, the will delay interval (cancelled by a reconnect, sent after the
// delay, sent at session end when that comes first), DISCONNECT 0x04 and normal DISCONNECT.
// Time-based steps await the will itself (or a second, later will) with bounded timeouts.
import { expect } from 'chai';
import type mqttPacket from 'mqtt-packet';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { RawClient, type AnyPacket } from '../helpers/raw-client.js';
import { ClientPool, unique } from '../helpers/flows.js';

function props(p: AnyPacket): Record<string, unknown> {
  return (p.properties ?? {}) as Record<string, unknown>;
}

async function connect5(port: number, pool: ClientPool, opts: Partial<mqttPacket.IConnectPacket> = {}): Promise<{ c: RawClient; connack: AnyPacket }> {
  const c = pool.track(await RawClient.connectSocket(port, 5));
  c.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 5, clean: true, clientId: unique('v5w'), keepalive: 0, ...opts });
  const connack = await c.next();
  expect([connack.cmd, connack.reasonCode]).to.deep.equal(['connack', 0]);
  return { c, connack };
}

/** A connected subscriber on `filter`. */
async function watcher(port: number, pool: ClientPool, filter: string): Promise<RawClient> {
  const { c } = await connect5(port, pool);
  c.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: filter, qos: 1 }] });
  expect((await c.nextOf('suback')).granted).to.deep.equal([1]);
  return c;
}

function will(topic: string, payload: string, properties: Record<string, unknown> = {}): mqttPacket.IConnectPacket['will'] {
  return { topic, payload: Buffer.from(payload), qos: 1, retain: false, properties };
}

async function expectNothingMore(c: RawClient): Promise<void> {
  const extra = await c.nothingPendingAfterPing();
  expect(extra.map((p) => `${p.cmd} ${(p.topic as string | undefined) ?? ''}`)).to.deep.equal([]);
}

describe('MQTT 5 will messages', () => {
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

  it('publishes the will with its properties (content type, user properties, format) [MQTT-3.1.3-10]', async () => {
    const base = unique('w/props');
    const w = await watcher(gw.port, pool, `${base}/#`);
    const { c } = await connect5(gw.port, pool, {
      will: will(`${base}/x`, 'bye', {
        contentType: 'text/plain', payloadFormatIndicator: true, userProperties: { k: ['v1', 'v2'], z: 'last' },
        responseTopic: 'resp/t', correlationData: Buffer.from('cid'), messageExpiryInterval: 100,
      }),
    });
    await c.close(); // no DISCONNECT: the will is due
    const p = await w.nextOf('publish');
    expect([p.topic, String(p.payload)]).to.deep.equal([`${base}/x`, 'bye']);
    const wp = props(p);
    expect(wp.contentType).to.equal('text/plain');
    expect(wp.payloadFormatIndicator).to.equal(true);
    expect({ ...wp.userProperties as object }).to.deep.equal({ k: ['v1', 'v2'], z: 'last' });
    expect(wp.responseTopic).to.equal('resp/t');
    expect(String(wp.correlationData)).to.equal('cid');
    expect(wp.messageExpiryInterval).to.be.within(99, 100);
    expect(wp.willDelayInterval).to.equal(undefined);
  });

  it('does not publish the will on a normal DISCONNECT [MQTT-3.1.2-10] [MQTT-3.14.4-3]', async () => {
    const t = unique('w/normal');
    const w = await watcher(gw.port, pool, t);
    const { c } = await connect5(gw.port, pool, { will: will(t, 'no') });
    c.send({ cmd: 'disconnect', reasonCode: 0 });
    await c.closedByServer();
    await expectNothingMore(w);
  });

  it('publishes the will on DISCONNECT with reason 0x04 Disconnect with Will Message (3.14.2.1)', async () => {
    const t = unique('w/with');
    const w = await watcher(gw.port, pool, t);
    const { c } = await connect5(gw.port, pool, { will: will(t, 'yes') });
    c.send({ cmd: 'disconnect', reasonCode: 0x04 });
    await c.closedByServer();
    const p = await w.nextOf('publish');
    expect([p.topic, String(p.payload)]).to.deep.equal([t, 'yes']);
  });

  it('publishes a delayed will only after the Will Delay Interval [MQTT-3.1.3-9]', async () => {
    const t = unique('w/delay');
    const w = await watcher(gw.port, pool, t);
    const { c } = await connect5(gw.port, pool, {
      properties: { sessionExpiryInterval: 60 }, will: will(t, 'late', { willDelayInterval: 1 }),
    });
    const closedAt = Date.now();
    await c.close();
    await expectNothingMore(w); // not at once
    const p = await w.nextOf('publish', 4000);
    expect(String(p.payload)).to.equal('late');
    expect(Date.now() - closedAt).to.be.at.least(950);
  });

  it('does not publish a delayed will when the client reconnects within the delay [MQTT-3.1.3-9]', async () => {
    const base = unique('w/cancel');
    const w = await watcher(gw.port, pool, `${base}/#`);
    const id = unique('returns');
    const opts = { clientId: id, properties: { sessionExpiryInterval: 60 } };
    const { c: first } = await connect5(gw.port, pool, { ...opts, will: will(`${base}/cancelled`, 'x', { willDelayInterval: 1 }) });
    await first.close();
    const { connack } = await connect5(gw.port, pool, { ...opts, clean: false });
    expect(connack.sessionPresent).to.equal(true);
    // A second client with the same delay, disconnected later: when its will arrives, the first
    // one's delay has passed too.
    const { c: marker } = await connect5(gw.port, pool, {
      properties: { sessionExpiryInterval: 60 }, will: will(`${base}/marker`, 'm', { willDelayInterval: 1 }),
    });
    await marker.close();
    const p = await w.nextOf('publish', 4000);
    expect(p.topic).to.equal(`${base}/marker`);
    await expectNothingMore(w);
  });

  it('publishes a delayed will when the session ends before the delay [MQTT-3.1.3-9] (3.1.2.11.2)', async () => {
    const t = unique('w/session-end');
    const w = await watcher(gw.port, pool, t);
    const { c } = await connect5(gw.port, pool, {
      properties: { sessionExpiryInterval: 1 }, will: will(t, 'session over', { willDelayInterval: 30 }),
    });
    const closedAt = Date.now();
    await c.close();
    const p = await w.nextOf('publish', 4000);
    expect(String(p.payload)).to.equal('session over');
    const waited = Date.now() - closedAt;
    expect(waited).to.be.at.least(950).and.below(4000);
  });

  it('publishes a delayed will at once when the session expiry is 0 [MQTT-3.1.3-9]', async () => {
    const t = unique('w/no-session');
    const w = await watcher(gw.port, pool, t);
    const { c } = await connect5(gw.port, pool, { will: will(t, 'now', { willDelayInterval: 30 }) });
    await c.close();
    expect(String((await w.nextOf('publish', 1000)).payload)).to.equal('now');
  });

  it('publishes the pending delayed will when a new connection starts clean [MQTT-3.1.3-9]', async () => {
    const t = unique('w/clean');
    const w = await watcher(gw.port, pool, t);
    const id = unique('cleaner');
    const { c } = await connect5(gw.port, pool, {
      clientId: id, properties: { sessionExpiryInterval: 60 }, will: will(t, 'ended', { willDelayInterval: 30 }),
    });
    await c.close();
    await expectNothingMore(w);
    await connect5(gw.port, pool, { clientId: id, clean: true });
    expect(String((await w.nextOf('publish', 1000)).payload)).to.equal('ended');
  });
});
