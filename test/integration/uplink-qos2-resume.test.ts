// QoS 2 uplink flows cut by a lost connection go on where they were when HQ kept the session: the
// PUBLISH again with DUP and the same packet id, or PUBREL once HQ had answered PUBREC, so HQ's
// broker delivers the message once. Without the session everything starts again with a PUBLISH.
// A scripted HQ (scripted-hq.ts) drives the flow packet by packet over real sockets; the gateway
// is real (Link, its stream tap, the forwarder, the SQLite outbox). Then a real Mosquitto as HQ,
// behind the fault proxy cutting the link mid-stream: its subscriber gets every event once (when
// cut flows started again as new PUBLISHes, as before, this test saw duplicates every time).
import { expect } from 'chai';
import mqtt, { type MqttClient } from 'mqtt';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { ScriptedQos2Hq, type HqConnection } from '../helpers/scripted-hq.js';
import { startMosquitto, type Mosquitto } from '../helpers/mosquitto.js';
import { startFaultProxy, type FaultProxy } from '../helpers/fault-proxy.js';
import { QOS2_ID_BASE, qos2PacketId } from '../../src/bridge/qos2-ids.js';
import { until } from '../helpers/until.js';

describe('QoS 2 uplink: a cut flow goes on with its packet id when HQ kept the session', function () {
  this.timeout(30_000);
  let hq: ScriptedQos2Hq;
  let gw: TestGateway | null = null;
  let lan: MqttClient | null = null;

  beforeEach(() => {
    hq = new ScriptedQos2Hq(5);
  });
  afterEach(async () => {
    await lan?.endAsync(true);
    lan = null;
    await gw?.stop();
    gw = null;
    await hq.close();
  });

  async function start(version: 4 | 5 = 5): Promise<void> {
    if (version !== hq.version) hq = new ScriptedQos2Hq(version);
    const port = await hq.listen();
    gw = await startTestGateway({
      uplink: {
        enabled: true, gateway_id: 'gw1', endpoints: [`127.0.0.1:${port}`], protocol_version: version, keepalive_s: 30,
        connect_timeout_ms: 2000, backoff_initial_ms: 20, backoff_max_ms: 100,
        routes: [{ local: 'truck/events/#', remote: 'fleet/{gateway}/events/#', qos: 2, class: 'event', ttl_s: 0, store_qos0: true, sign: false }],
        // A downlink route makes the gateway subscribe, which tells the scripted HQ it is ready.
        downlink: [{ remote: 'fleet/{gateway}/orders/#', local: 'truck/orders/#', qos: 1, verify: false }],
      },
    });
    lan = await mqtt.connectAsync(`mqtt://127.0.0.1:${gw.port}`, { clientId: 'scanner', protocolVersion: 5 });
  }

  /** A LAN event and its QoS 2 PUBLISH at HQ. */
  async function event(c: HqConnection, payload: string): Promise<number> {
    await lan!.publishAsync('truck/events/delivered', payload, { qos: 1 });
    const p = await c.waitFor('publish', (x) => x.qos === 2 && String(x.payload) === payload);
    expect(p.dup, 'first PUBLISH').to.equal(false);
    return p.messageId!;
  }

  const outboxCount = (): number => gw!.bridge!.stats().outbox.count;

  for (const version of [5, 4] as const) {
    it(`after PUBREC: PUBREL with the same id on the next connection, no second PUBLISH (MQTT ${version === 5 ? '5' : '3.1.1'})`, async () => {
      await resumeAfterPubrec(version);
    });
  }

  async function resumeAfterPubrec(version: 4 | 5): Promise<void> {
    await start(version);
    const c0 = await hq.connection(0);
    const id = await event(c0, 'parcel 1');
    expect(id).to.be.at.least(QOS2_ID_BASE);
    expect(id).to.equal(qos2PacketId(gw!.bridge!.stats().outbox.lastSeq));
    c0.send({ cmd: 'pubrec', messageId: id });
    await c0.waitFor('pubrel', (p) => p.messageId === id);
    c0.destroy(); // the link drops before PUBCOMP
    hq.sessionPresent = true;
    const c1 = await hq.connection(1);
    await c1.waitFor('pubrel', (p) => p.messageId === id);
    c1.send({ cmd: 'pubcomp', messageId: id });
    await until(() => outboxCount() === 0, 'the record leaves the outbox on PUBCOMP');
    // Something else goes through the same connection, so nothing older is still on its way.
    const next = await event(c1, 'parcel 2');
    expect(next).to.equal(id + 1);
    await expectNoPublish(c1, 'parcel 1');
  }

  it('before PUBREC: the PUBLISH again with DUP and the same id', async () => {
    await start();
    const c0 = await hq.connection(0);
    const id = await event(c0, 'parcel 1');
    c0.destroy();
    hq.sessionPresent = true;
    const c1 = await hq.connection(1);
    const again = await c1.waitFor('publish', (p) => p.qos === 2);
    expect([again.messageId, again.dup, String(again.payload)]).to.deep.equal([id, true, 'parcel 1']);
    c1.send({ cmd: 'pubrec', messageId: id });
    await c1.waitFor('pubrel', (p) => p.messageId === id);
    c1.send({ cmd: 'pubcomp', messageId: id });
    await until(() => outboxCount() === 0, 'the record leaves the outbox on PUBCOMP');
  });

  it('without the session: a PUBLISH again, even after PUBREC (HQ has forgotten it)', async () => {
    await start();
    const c0 = await hq.connection(0);
    const id = await event(c0, 'parcel 1');
    c0.send({ cmd: 'pubrec', messageId: id });
    await c0.waitFor('pubrel', (p) => p.messageId === id);
    c0.destroy();
    hq.sessionPresent = false;
    const c1 = await hq.connection(1);
    const again = await c1.waitFor('publish', (p) => p.qos === 2);
    expect([again.messageId, String(again.payload)]).to.deep.equal([id, 'parcel 1']);
    expect(outboxCount()).to.equal(1);
  });
});

describe('QoS 2 uplink to a real Mosquitto: exactly once over a link cut again and again', function () {
  this.timeout(60_000);
  let hq: Mosquitto | null = null;
  let proxy: FaultProxy | null = null;
  let gw: TestGateway | null = null;
  const clients: MqttClient[] = [];

  afterEach(async () => {
    await Promise.all(clients.splice(0).map((c) => c.endAsync(true)));
    await gw?.stop();
    gw = null;
    await proxy?.close();
    proxy = null;
    await hq?.stop();
    hq = null;
  });

  it('every event arrives once at an HQ subscriber while the link is cut mid-stream five times', async () => {
    hq = await startMosquitto();
    proxy = await startFaultProxy({ targetPort: hq.port });
    // HQ's consumer, at QoS 2 and connected throughout.
    const counts = new Map<string, number>();
    const sub = await mqtt.connectAsync(`mqtt://${hq.endpoint}`, { clientId: 'hq-app', protocolVersion: 5 });
    clients.push(sub);
    sub.on('message', (_t, payload) => counts.set(String(payload), (counts.get(String(payload)) ?? 0) + 1));
    await sub.subscribeAsync('fleet/gw1/events/#', { qos: 2 });
    gw = await startTestGateway({
      uplink: {
        enabled: true, gateway_id: 'gw1', endpoints: [proxy.endpoint], protocol_version: 5, keepalive_s: 30,
        connect_timeout_ms: 2000, backoff_initial_ms: 10, backoff_max_ms: 50,
        routes: [{ local: 'truck/events/#', remote: 'fleet/{gateway}/events/#', qos: 2, class: 'event', ttl_s: 0, store_qos0: true, sign: false }],
      },
    });
    const lan = await mqtt.connectAsync(`mqtt://127.0.0.1:${gw.port}`, { clientId: 'scanner', protocolVersion: 5 });
    clients.push(lan);
    const N = 400;
    await Promise.all(Array.from({ length: N }, (_, i) => lan.publishAsync(`truck/events/e${i % 5}`, `event ${i}`, { qos: 1 })));
    // Cut each connection after a few KB: flows are cut at every stage (PUBLISH, PUBREC, PUBREL,
    // PUBCOMP on the wire), and HQ keeps the session (clean start false).
    for (let cut = 1; cut <= 5; cut++) {
      proxy.cutAfter(3000 + cut * 700);
      const p = proxy;
      await p.until(() => p.stats.cut >= cut, `cut ${cut}`, 10_000);
    }
    proxy.clearFaults();
    await until(() => counts.size === N, `all ${N} events at HQ`, 30_000);
    await until(() => gw!.bridge!.stats().outbox.count === 0, 'an empty outbox');
    const twice = [...counts].filter(([, n]) => n > 1).map(([k]) => k);
    expect(twice, 'delivered more than once').to.deep.equal([]);
  });
});

/** No PUBLISH with this payload arrived on the connection (what arrived so far is checked). */
async function expectNoPublish(c: HqConnection, payload: string): Promise<void> {
  let found = false;
  try {
    await c.waitFor('publish', (p) => String(p.payload) === payload, 1);
    found = true;
  } catch {
    // timed out: none there
  }
  expect(found, `a second PUBLISH of ${payload}`).to.equal(false);
}
