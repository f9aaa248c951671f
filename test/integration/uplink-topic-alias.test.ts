// MQTT 5 topic aliases towards HQ: a topic's name goes once per connection, then a 3-byte alias,
// for at most HQ's Topic Alias Maximum topics; every connection starts again. A scripted HQ
// (scripted-hq.ts, parsing with mqtt-packet) checks the bytes on the wire; a real Mosquitto as HQ,
// behind the fault proxy dropping the link, checks that HQ resolves every alias to the right topic.
import { expect } from 'chai';
import mqtt, { type MqttClient } from 'mqtt';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { ScriptedQos2Hq, type HqConnection, type HqPacket } from '../helpers/scripted-hq.js';
import { startMosquitto, type Mosquitto } from '../helpers/mosquitto.js';
import { startFaultProxy, type FaultProxy } from '../helpers/fault-proxy.js';
import { until } from '../helpers/until.js';

const TELEMETRY = { local: 'truck/telemetry/#', remote: 'fleet/{gateway}/telemetry/#', qos: 1, class: 'telemetry', ttl_s: 0, store_qos0: true, sign: false } as const;

describe('uplink topic aliases (MQTT 5)', function () {
  this.timeout(30_000);
  let gw: TestGateway | null = null;
  let scripted: ScriptedQos2Hq | null = null;
  let mosquitto: Mosquitto | null = null;
  let proxy: FaultProxy | null = null;
  const clients: MqttClient[] = [];

  afterEach(async () => {
    for (const c of clients.splice(0)) await c.endAsync(true);
    await gw?.stop();
    gw = null;
    await scripted?.close();
    scripted = null;
    await proxy?.close();
    proxy = null;
    await mosquitto?.stop();
    mosquitto = null;
  });

  async function gatewayTo(endpoint: string, topicAliasMax?: number): Promise<MqttClient> {
    gw = await startTestGateway({
      uplink: {
        enabled: true, gateway_id: 'gw1', endpoints: [endpoint], protocol_version: 5, keepalive_s: 30,
        connect_timeout_ms: 2000, backoff_initial_ms: 10, backoff_max_ms: 50,
        ...(topicAliasMax !== undefined ? { topic_alias_max: topicAliasMax } : {}),
        routes: [TELEMETRY],
        // A downlink route makes the gateway subscribe, which tells the scripted HQ it is ready.
        downlink: [{ remote: 'fleet/{gateway}/orders/#', local: 'truck/orders/#', qos: 1, verify: false }],
      },
    });
    const lan = await mqtt.connectAsync(`mqtt://127.0.0.1:${gw.port}`, { clientId: 'sensors', protocolVersion: 5 });
    clients.push(lan);
    return lan;
  }

  /** Publishes `payload` on truck/telemetry/<sub> and takes its PUBLISH at HQ. */
  async function sendAndTake(lan: MqttClient, c: HqConnection, sub: string, payload: string): Promise<HqPacket> {
    await lan.publishAsync(`truck/telemetry/${sub}`, payload, { qos: 1 });
    return c.waitFor('publish', (p) => String(p.payload) === payload);
  }

  const aliasOf = (p: HqPacket): number | undefined => (p.properties as { topicAlias?: number } | undefined)?.topicAlias;

  it('sends a topic\'s name once, then only its alias, for at most HQ\'s maximum; a new connection starts again', async () => {
    scripted = new ScriptedQos2Hq(5);
    scripted.connackProperties = { topicAliasMaximum: 3 };
    const lan = await gatewayTo(`127.0.0.1:${await scripted.listen()}`);
    const c0 = await scripted.connection(0);
    const seen: [string, number | undefined][] = [];
    for (const round of [1, 2]) {
      for (let t = 0; t < 5; t++) {
        const p = await sendAndTake(lan, c0, `t${t}`, `r${round} t${t}`);
        seen.push([p.topic as string, aliasOf(p)]);
      }
    }
    expect(seen).to.deep.equal([
      // First round: the first three topics get aliases 1-3 with their names; the rest have none.
      ['fleet/gw1/telemetry/t0', 1], ['fleet/gw1/telemetry/t1', 2], ['fleet/gw1/telemetry/t2', 3],
      ['fleet/gw1/telemetry/t3', undefined], ['fleet/gw1/telemetry/t4', undefined],
      // Second round: the alias alone (empty topic name); the others with their names still.
      ['', 1], ['', 2], ['', 3], ['fleet/gw1/telemetry/t3', undefined], ['fleet/gw1/telemetry/t4', undefined],
    ]);
    expect(gw!.bridge!.stats().link.topicAliases).to.equal(3);
    c0.destroy();
    const c1 = await scripted.connection(1);
    const again = await sendAndTake(lan, c1, 't2', 'r3 t2');
    expect([again.topic, aliasOf(again)], 'the first use on a new connection').to.deep.equal(['fleet/gw1/telemetry/t2', 1]);
    const user = (again.properties as { userProperties?: Record<string, string> }).userProperties;
    expect(user?.gw).to.equal('gw1');
    expect(Number(user?.seq)).to.be.greaterThan(10);
  });

  it('uses no alias when turned off (topic_alias_max = 0) or when HQ allows none', async () => {
    scripted = new ScriptedQos2Hq(5);
    scripted.connackProperties = { topicAliasMaximum: 10 };
    const lan = await gatewayTo(`127.0.0.1:${await scripted.listen()}`, 0);
    const c0 = await scripted.connection(0);
    for (const payload of ['a', 'b']) {
      const p = await sendAndTake(lan, c0, 'gps', payload);
      expect([p.topic, aliasOf(p)]).to.deep.equal(['fleet/gw1/telemetry/gps', undefined]);
    }
    // The HQ of the other tests announces no maximum: MQTT 5's default is 0, no aliases.
    await gw!.stop();
    gw = null;
    scripted.connackProperties = undefined;
    const lan2 = await gatewayTo(`127.0.0.1:${(scripted.server.address() as { port: number }).port}`);
    const c1 = await scripted.connection(1);
    for (const payload of ['c', 'd']) {
      const p = await sendAndTake(lan2, c1, 'gps', payload);
      expect([p.topic, aliasOf(p)]).to.deep.equal(['fleet/gw1/telemetry/gps', undefined]);
    }
  });

  it('a real Mosquitto as HQ (10 aliases) delivers every message on its own topic across dropped links', async () => {
    mosquitto = await startMosquitto();
    proxy = await startFaultProxy({ targetPort: mosquitto.port });
    const got = new Map<string, string>();
    const sub = await mqtt.connectAsync(`mqtt://${mosquitto.endpoint}`, { clientId: 'hq-app', protocolVersion: 5 });
    clients.push(sub);
    sub.on('message', (topic, payload) => got.set(String(payload), topic));
    await sub.subscribeAsync('fleet/gw1/telemetry/#', { qos: 1 });
    const lan = await gatewayTo(proxy.endpoint);
    const p = proxy;
    await until(() => gw!.bridge!.stats().link.state === 'up', 'the link up');
    // 15 topics (more than Mosquitto's 10 aliases), 3 rounds, the link dropped after each round.
    const TOPICS = 15;
    let sent = 0;
    for (let round = 0; round < 3; round++) {
      await Promise.all(Array.from({ length: TOPICS * 4 }, (_, i) => lan.publishAsync(`truck/telemetry/s${i % TOPICS}`, `${round}/${i}/s${i % TOPICS}`, { qos: 1 })));
      sent += TOPICS * 4;
      await until(() => got.size === sent, `round ${round}: all ${sent} at HQ`);
      expect(gw!.bridge!.stats().link.topicAliases, 'aliases in use').to.equal(10);
      const connects = gw!.bridge!.stats().link.connects;
      await p.drop();
      await until(() => gw!.bridge!.stats().link.connects === connects + 1 && gw!.bridge!.stats().link.state === 'up', 'the link up again');
    }
    for (const [payload, topic] of got) expect(topic, payload).to.equal(`fleet/gw1/telemetry/${payload.split('/')[2]!}`);
    // No connection failed but the ones the proxy dropped (an unknown alias would be a protocol error at HQ).
    expect(gw!.bridge!.stats().link.connects).to.equal(4);
  });
});
