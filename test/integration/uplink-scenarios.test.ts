// End-to-end uplink scenarios (issue 6, "Tests"): Convoy runs as a child process from
// examples/truck.toml (bin/convoy run), real Mosquitto is HQ, and the fault proxy sits between
// them wherever the link matters. LAN publishers are MQTT.js clients publishing numbered QoS 1
// messages; an MQTT.js subscriber at HQ on fleet/# collects what arrives; checkUplink proves that
// no accepted (PUBACKed) message was lost, duplicates came only after reconnects and within the
// in-flight window, order held within a class, and the gateway's seq is contiguous.
//
// Everything is awaited by events (log lines, the retained convoy/uplink/state topic, messages at
// HQ, proxy events); the only randomness is the kill moments of the SIGKILL loop, drawn from a
// seeded generator (UPLINK_SCENARIO_SEED=N reproduces a run; the seed is printed).
import { expect } from 'chai';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { recordSize } from '../../src/bridge/outbox.js';
import { ConvoyProcess, TRUCK_TOML } from '../helpers/convoy-process.js';
import type { FaultProxy } from '../helpers/fault-proxy.js';
import type { Mosquitto } from '../helpers/mosquitto.js';
import { assertUplinkOk, checkUplink } from '../helpers/uplink-checker.js';
import {
  connectMqtt,
  convoyEnv,
  endMqtt,
  keyOf,
  LINK_UP,
  Waiters,
  type HqSubscriber,
  type LanPublisher,
  type Outgoing,
  message,
  mixed,
  orderWithNewestFirst,
  Scene,
  subscribe,
  summary,
} from '../helpers/uplink-scene.js';
import { prng } from '../helpers/prng.js';

const SEED = Number(process.env.UPLINK_SCENARIO_SEED ?? Math.floor(Math.random() * 2 ** 31));

function figures(name: string, f: Record<string, unknown>): void {
  // One line per scenario: what the run measured (kept in the test output on purpose).
  console.log(`      · ${name}: ${Object.entries(f).map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`).join(' ')}`);
}

describe('uplink scenarios: Convoy (examples/truck.toml) → fault proxy → Mosquitto as HQ', function () {
  this.timeout(60_000);
  let scene: Scene;

  before(() => {
    console.log(`      · seed ${SEED} (UPLINK_SCENARIO_SEED=${SEED} reproduces the kill moments)`);
  });

  beforeEach(() => {
    scene = new Scene();
  });

  afterEach(async () => {
    await scene.cleanup();
  });

  after(async () => {
    await ConvoyProcess.killAll();
  });

  it('link down for a while (dropped, then refused) while the LAN publishes: everything arrives when it is back', async () => {
    const gw = 'gw1';
    const hq = await scene.hq();
    const proxy = await scene.proxy(hq);
    const hqSub = await scene.hqSubscriber(hq, gw);
    const convoy = await scene.convoy(convoyEnv(gw, proxy.endpoint));
    const state = await scene.stateWatcher(convoy);
    await state.reach('up');
    const pub = await scene.publisher(convoy);

    const live = mixed('s1', 0, 50);
    await pub.publish(live);
    await hqSub.delivered(live.map((m) => m.key));

    proxy.refuse(true);
    const downFrom = state.events.length;
    await proxy.drop();
    await state.reach('down', downFrom);
    const t0 = Date.now();
    const offline = mixed('s1', 50, 300);
    await pub.publish(offline);
    const publishMs = Date.now() - t0;
    // The LAN kept working: all 300 were acknowledged while HQ was unreachable.
    expect(scene.accepted).to.have.length(350);
    // HQ saw the truck go offline (the will), and nothing of the backlog yet.
    await hqSub.until(() => hqSub.status.includes('offline'), '"offline" at HQ');
    expect(offline.filter((m) => hqSub.seen.has(m.key))).to.have.length(0);

    const t1 = Date.now();
    proxy.refuse(false);
    await hqSub.delivered(scene.accepted.map((a) => a.key));
    const drainMs = Date.now() - t1;
    await hqSub.until(() => hqSub.status[hqSub.status.length - 1] === 'online', '"online" again at HQ');

    const report = scene.check(hqSub, convoy, gw);
    figures('link down', { ...summary(report), refusedConnects: proxy.stats.refused, publishOfflineMs: publishMs, drainAfterBackMs: drainMs });
    assertUplinkOk(report);
  });

  it('black hole: detected within 2× keepalive (2 s → ≤ 4 s), then recovers and delivers', async () => {
    const gw = 'gw2';
    const keepaliveS = 2;
    const hq = await scene.hq();
    const proxy = await scene.proxy(hq);
    const hqSub = await scene.hqSubscriber(hq, gw);
    const convoy = await scene.convoy(convoyEnv(gw, proxy.endpoint, { CONVOY_HQ_KEEPALIVE: String(keepaliveS) }));
    const state = await scene.stateWatcher(convoy);
    await state.reach('up');
    const pub = await scene.publisher(convoy);
    const before = mixed('s2', 0, 40);
    await pub.publish(before);
    await hqSub.delivered(before.map((m) => m.key));

    const from = state.events.length;
    const logFrom = convoy.logs.length;
    const t0 = Date.now();
    proxy.blackhole(true);
    // Published into the dead zone: acknowledged on the LAN at once, held by the proxy.
    const during = mixed('s2', 40, 60);
    await pub.publish(during);
    const down = await state.reach('down', from, 2 * keepaliveS * 1000 + 3000);
    const detectMs = down.at - t0;
    const reason = (await convoy.waitForLog((l) => l.msg === 'uplink: link to HQ down', { from: logFrom })).reason;

    // More while down, then the link comes back.
    const after = mixed('s2', 100, 60);
    await pub.publish(after);
    const connsBefore = proxy.stats.connections;
    const t1 = Date.now();
    proxy.blackhole(false);
    await hqSub.delivered(scene.accepted.map((a) => a.key));
    const recoverMs = Date.now() - t1;

    const report = scene.check(hqSub, convoy, gw);
    figures('black hole', {
      ...summary(report), detectMs, reason: String(reason), recoverMs, maxLanPubackMs: Math.max(...pub.latencies),
      proxyConnectionsDuringHole: connsBefore - 1, proxyConnectionsTotal: proxy.stats.connections,
    });
    expect(detectMs, `declared dead after ${detectMs} ms (reason: ${String(reason)})`).to.be.at.most(2 * keepaliveS * 1000 + 500);
    // The LAN was never blocked by the dead link.
    expect(Math.max(...pub.latencies), 'slowest LAN PUBACK (ms)').to.be.below(1000);
    assertUplinkOk(report);
  });

  it('Convoy SIGKILLed 5 times at random moments while it drains a backlog: nothing lost, duplicates within 4 × the window', async function () {
    this.timeout(80_000);
    const gw = 'gw3';
    const rnd = prng(SEED);
    const hq = await scene.hq();
    const proxy = await scene.proxy(hq);
    proxy.refuse(true); // HQ unreachable while the backlog builds
    const hqSub = await scene.hqSubscriber(hq, gw);
    const convoy = await scene.convoy(convoyEnv(gw, proxy.endpoint));
    let pub = await scene.publisher(convoy);
    const backlog = mixed('s3', 0, 3000, 120);
    const tb = Date.now();
    await pub.publish(backlog, 32);
    const backlogMs = Date.now() - tb;
    expect(hqSub.seen.size).to.equal(0);

    proxy.refuse(false);
    const kills: Array<{ afterDeliveries: number; distinctAtKill: number; total: number }> = [];
    let extra = 0;
    for (let round = 0; round < 5; round++) {
      // The random input: kill once HQ has seen between 30 and 350 more distinct messages.
      const k = 30 + Math.floor(rnd() * 320);
      const base = hqSub.seen.size;
      await hqSub.until(() => hqSub.seen.size >= base + k, `${k} more deliveries before kill ${round + 1}`);
      const total = scene.accepted.length;
      kills.push({ afterDeliveries: k, distinctAtKill: hqSub.seen.size, total });
      await convoy.kill();
      await endMqtt(pub.client);
      await convoy.restart();
      // Live traffic accepted by the new process, then (next round) killed again during the drain.
      pub = await scene.publisher(convoy);
      // Events and alarms only: live telemetry would be newer than the backlog's "newest per topic".
      const liveMsgs = mixed('s3', 10_000 + extra, 20).filter((m) => m.cls !== 'telemetry');
      extra += 20;
      await pub.publish(liveMsgs);
    }
    const t1 = Date.now();
    await hqSub.delivered(scene.accepted.map((a) => a.key), 30_000);
    const tailMs = Date.now() - t1;

    // A crash resends what was in flight and what HQ had acknowledged whose removal had not
    // committed: the forwarder keeps both together under 4 × inflight_window (forwarder.ts).
    const report = scene.check(hqSub, convoy, gw, { window: 4 * 64 });
    // Several link-ups happen before the telemetry backlog moves (alarms and events go first), so
    // each link-up's newest-per-topic sends are adjacent among telemetry deliveries: the checker
    // takes them for one burst. Order is judged message by message here instead.
    const order = orderWithNewestFirst(scene.accepted, hqSub.got, scene.topicOf, convoy.count(LINK_UP));
    figures('SIGKILL loop', {
      ...summary(report), ownOrderViolations: order.violations.length, newestFirstExempt: order.exempt, backlog: backlog.length, backlogPublishMs: backlogMs, linkUps: convoy.count(LINK_UP),
      kills: kills.map((x) => `${x.distinctAtKill}/${x.total}`).join(','), drainTailMs: tailMs,
    });
    // Every kill happened during the drain (the outbox was not empty yet).
    for (const x of kills) expect(x.distinctAtKill, 'killed during the drain').to.be.below(x.total);
    expect(order.violations, 'order within a class').to.deep.equal([]);
    assertUplinkOk({ ...report, problems: report.problems.filter((p) => !/order violation/.test(p)), ok: report.problems.every((p) => /order violation/.test(p)) });
  });

  it('HQ restarted (Mosquitto stopped and started on the same port): the backlog arrives, the HQ app misses nothing', async () => {
    // Design: Mosquitto keeps sessions in its persistence file (saved on SIGTERM); the HQ app holds
    // a persistent session (clean false, session expiry) and reconnects by itself, so whatever
    // Convoy forwards before the app is back is queued for it at HQ. Anything missing is therefore
    // Convoy's loss (or a duplicate from HQ's redelivery, which the window allows per reconnect).
    const gw = 'gw4';
    const hq = await scene.hq({ persistence: true, extraConfig: ['max_queued_messages 100000'] });
    const hqSub = await scene.hqSubscriber(hq, gw);
    const convoy = await scene.convoy(convoyEnv(gw, hq.endpoint));
    const state = await scene.stateWatcher(convoy);
    await state.reach('up');
    const pub = await scene.publisher(convoy);
    const first = mixed('s4', 0, 200);
    await pub.publish(first);
    await hqSub.delivered(first.map((m) => m.key));

    // Restart HQ while the LAN keeps publishing.
    const from = state.events.length;
    const t0 = Date.now();
    const during = pub.publish(mixed('s4', 200, 300));
    await hq.restart();
    const hqDownMs = Date.now() - t0;
    await during;
    await state.reach('up', from);
    const more = mixed('s4', 500, 100);
    await pub.publish(more);
    await hqSub.delivered(scene.accepted.map((a) => a.key));

    const report = scene.check(hqSub, convoy, gw);
    figures('HQ restart', { ...summary(report), hqRestartMs: hqDownMs, linkUps: convoy.count(LINK_UP) });
    expect(convoy.count(LINK_UP)).to.be.at.least(2);
    assertUplinkOk(report);
  });

  describe('disk budget reached (outbox.budget_bytes = 65536, HQ unreachable)', function () {
    // A config of our own: truck.toml with a small budget, no free-space floor, $SYS every second.
    const BUDGET = 65_536;
    const gw = 'gw5';
    let hq: Mosquitto;
    let proxy: FaultProxy;
    let hqSub: HqSubscriber;
    let convoy: ConvoyProcess;
    let alarms: Outgoing[];
    let events: Outgoing[];
    let telemetry: Outgoing[];
    let fill: Outgoing[];
    let refusedProbe: Outgoing[];
    let probePub: LanPublisher;
    let sys: Map<string, string>;
    let fillError: Error | undefined;
    const local = new Scene();

    function sizeOf(m: Outgoing): number {
      const remote = m.topic.replace(/^truck\//, `fleet/${gw}/`);
      return recordSize({
        cls: m.cls, localTopic: m.topic, topic: remote, payload: Buffer.from(m.payload), qos: 1, createdAt: 0, expiresAt: 0,
      });
    }

    before(async function () {
      this.timeout(60_000);
      const dir = local.tempDir();
      let toml = readFileSync(TRUCK_TOML, 'utf8');
      const set = (re: RegExp, line: string): void => {
        if (!re.test(toml)) throw new Error(`truck.toml has no line matching ${String(re)}`);
        toml = toml.replace(re, line);
      };
      set(/^budget_bytes = .*$/m, `budget_bytes = ${BUDGET}`);
      set(/^min_free_bytes = .*$/m, 'min_free_bytes = 0');
      set(/^interval_s = .*$/m, 'interval_s = 1');
      const config = join(dir, 'truck-small-budget.toml');
      writeFileSync(config, toml);

      hq = await local.hq();
      proxy = await local.proxy(hq);
      proxy.refuse(true);
      hqSub = await local.hqSubscriber(hq, gw);
      convoy = await local.convoy(convoyEnv(gw, proxy.endpoint), config);
      const pub = await local.publisher(convoy);

      // Phase 1: alarms, events and telemetry beyond the budget (telemetry gets evicted).
      alarms = Array.from({ length: 40 }, (_, i) => message('s5', 'alarm', i, 120));
      events = Array.from({ length: 80 }, (_, i) => message('s5', 'event', i, 120));
      telemetry = Array.from({ length: 250 }, (_, i) => message('s5', 'telemetry', i, 120));
      await pub.publish(alarms);
      await pub.publish(events);
      await pub.publish(telemetry);
      // Phase 2: more events until alarms + events alone exceed the budget: all telemetry goes,
      // then the oldest events.
      const alarmBytes = alarms.reduce((n, m) => n + sizeOf(m), 0);
      const eventSize = sizeOf(message('s5', 'event', 80, 120));
      const more = Math.ceil((BUDGET - alarmBytes) / eventSize) - events.length + 25;
      const events2 = Array.from({ length: more }, (_, i) => message('s5', 'event', 80 + i, 120));
      await pub.publish(events2);
      events = [...events, ...events2];

      // HQ back: what survived is delivered.
      proxy.refuse(false);
      await hqSub.delivered(alarms.map((m) => m.key));
      const survivors = events.filter((_, i) => i >= events.length - 100).map((m) => m.key);
      await hqSub.delivered(survivors);

      // Phase 3: link down again; only alarms in the outbox, filled to the budget; then a
      // telemetry and an event message that cannot fit (nothing evictable is left).
      proxy.refuse(true);
      await proxy.drop();
      const alarmSize = sizeOf(message('s5', 'alarm', 1000, 120));
      const n = Math.floor((BUDGET - 600) / alarmSize);
      fill = Array.from({ length: n }, (_, i) => message('s5', 'alarm', 1000 + i, 120));
      await pub.publish(fill);
      refusedProbe = [message('s5', 'telemetry', 5000, 2000), message('s5', 'event', 5000, 2000)];
      probePub = await local.publisher(convoy);
      await probePub.publish(refusedProbe);

      // $SYS, two publication cycles (interval 1 s): where an operator would look for counters.
      const sysClient = await connectMqtt(convoy.port, { protocolVersion: 5, clientId: 'sys-watch' });
      local.clients.push(sysClient);
      sys = new Map();
      const w = new Waiters();
      let uptimes = 0;
      sysClient.on('message', (t, p) => {
        sys.set(t, p.toString());
        if (t === '$SYS/broker/uptime') uptimes++;
        w.wake();
      });
      await subscribe(sysClient, '$SYS/#', 0);
      await w.until(() => uptimes >= 2, 'two $SYS cycles', 5000);

      proxy.refuse(false);
      // Checked by the tests below (a loss here is their failure, not the setup's).
      await hqSub.delivered(fill.map((m) => m.key)).catch((e: Error) => (fillError = e));
    });

    after(async () => {
      await local.cleanup();
    });

    it('evicts telemetry before events, the oldest first, and never alarms', () => {
      const arrived = (list: Outgoing[]): boolean[] => list.map((m) => hqSub.seen.has(m.key));
      const tel = arrived(telemetry);
      const ev = arrived(events);
      const evMissing = ev.filter((x) => !x).length;
      figures('disk budget', {
        telemetryDelivered: tel.filter(Boolean).length, telemetryPublished: telemetry.length,
        eventsDelivered: events.length - evMissing, eventsPublished: events.length,
        alarmsDelivered: arrived(alarms).filter(Boolean).length + arrived(fill).filter(Boolean).length, alarmsPublished: alarms.length + fill.length,
      });
      expect(arrived(alarms).every(Boolean), 'every phase-1 alarm arrived').to.equal(true);
      // Events were evicted only after every telemetry message was gone...
      expect(evMissing, 'some events were evicted (alarms + events exceed the budget)').to.be.greaterThan(0);
      expect(tel.filter(Boolean).length, 'telemetry delivered although events were evicted').to.equal(0);
      // ...and the oldest went first: the events that arrived are the newest ones.
      expect(ev.slice(evMissing).every(Boolean), 'the surviving events are the newest').to.equal(true);
      // No more was evicted than the budget required (±2 records for rounding).
      const eventSize = sizeOf(events[0]!);
      const need = alarms.reduce((n, m) => n + sizeOf(m), 0) + events.reduce((n, m) => n + sizeOf(m), 0) - BUDGET;
      expect(evMissing).to.be.within(Math.ceil(need / eventSize) - 2, Math.ceil(need / eventSize) + 2);

      // The checker agrees once the evicted are marked as dropped on purpose (seq holes allowed).
      const gone = new Set([...telemetry, ...events].filter((m) => !hqSub.seen.has(m.key)).map((m) => m.key));
      // The two messages that could not fit are judged by the "quota exceeded" test below.
      const probes = new Set(refusedProbe.map((m) => m.key));
      const accepted = local.accepted.filter((a) => !probes.has(a.key)).map((a) => (gone.has(a.key) ? { ...a, dropped: 'evicted' as const } : a));
      const linkUps = convoy.count(LINK_UP);
      const report = checkUplink(accepted, hqSub.got, { keyOf, reconnects: Math.max(0, linkUps - 1), linkUps, firstSeq: { [gw]: 1 } });
      figures('disk budget check', summary(report));
      assertUplinkOk(report);
    });

    it('delivers every alarm when HQ is back, also those filling the outbox to the budget', () => {
      const missing = [...alarms, ...fill].filter((m) => !hqSub.seen.has(m.key)).map((m) => m.key);
      expect(missing, `alarms lost${fillError ? ` (${fillError.message})` : ''}`).to.deep.equal([]);
    });

    it('refuses a non-alarm message with "quota exceeded" (0x97) when only alarms are left and it does not fit', () => {
      // Issue 6: "when only alarms remain, new non-alarm messages are refused with quota exceeded".
      // A refused message must not be acknowledged as accepted to its MQTT 5 publisher.
      const arrived = refusedProbe.filter((m) => hqSub.seen.has(m.key)).map((m) => m.key);
      figures('refused when full', { refused: JSON.stringify(probePub.refused), acceptedButNotDelivered: refusedProbe.length - arrived.length - probePub.refused.length });
      expect(arrived, 'a message that could not fit reached HQ (was an alarm evicted?)').to.deep.equal([]);
      expect(probePub.refused.map((r) => r.code), 'PUBACK reason codes of the two messages that could not fit').to.deep.equal([0x97, 0x97]);
    });

    it('exposes the drop counters by reason (evicted, refused_full, expired) where an operator can read them ($SYS or the log)', () => {
      // Issue 6: "Every drop is counted by reason." From outside the process, the counters can only
      // be read through $SYS (or the log); the bridge keeps them in memory (Bridge.stats()).
      const sysHits = [...sys.entries()].filter(([t]) => /uplink|outbox|bridge/i.test(t));
      const logHits = convoy.logs.filter((l) => /evict|refused|outbox/i.test(`${l.msg} ${JSON.stringify(l)}`) && !/listening|starting/.test(l.msg));
      figures('drop counters', { sysTopics: sys.size, sysUplinkTopics: sysHits.map(([t, v]) => `${t}=${v}`).join(';'), logLines: logHits.length });
      expect(sysHits.length + logHits.length, `no uplink/outbox drop counter visible; $SYS topics: ${[...sys.keys()].join(', ')}`).to.be.greaterThan(0);
    });
  });

  for (const version of [4, 5] as const) {
    it(`a ${version === 4 ? '3.1.1' : '5'} HQ: gw and seq ${version === 4 ? 'as the topic suffix /gw/seq' : 'as user properties'}, across a reconnect`, async () => {
      const gw = `gw6v${version}`;
      const hq = await scene.hq(version === 4 ? { version311Only: true } : {});
      const proxy = await scene.proxy(hq);
      const hqSub = await scene.hqSubscriber(hq, gw, version);
      const convoy = await scene.convoy(convoyEnv(gw, proxy.endpoint, { CONVOY_HQ_PROTOCOL: String(version) }));
      const state = await scene.stateWatcher(convoy);
      await state.reach('up');
      const pub = await scene.publisher(convoy);
      await pub.publish(mixed(`s6v${version}`, 0, 100));
      const from = state.events.length;
      await proxy.drop(); // the link goes away with messages in flight
      await pub.publish(mixed(`s6v${version}`, 100, 100));
      await state.reach('up', from);
      await hqSub.delivered(scene.accepted.map((a) => a.key));

      const report = scene.check(hqSub, convoy, gw, { protocol: version });
      figures(`HQ v${version}`, summary(report));
      const sample = hqSub.got.find((m) => keyOf(m) === 's6v' + String(version) + '-t4')!;
      if (version === 4) {
        expect(sample.topic).to.match(new RegExp(`^fleet/${gw}/telemetry/(gps|fuel|reefer)/${gw}/\\d+$`));
        expect(sample.userProperties).to.equal(undefined);
      } else {
        expect(sample.topic).to.match(new RegExp(`^fleet/${gw}/telemetry/(gps|fuel|reefer)$`));
        expect(sample.userProperties?.gw).to.equal(gw);
        expect(String(sample.userProperties?.seq)).to.match(/^\d+$/);
      }
      expect(report.unsequenced, 'messages without gw/seq').to.equal(0);
      expect(Object.keys(report.gateways)).to.deep.equal([gw]);
      assertUplinkOk(report);
    });
  }

  it('downlink orders: HQ fleet/gw/orders/N → LAN truck/orders/N, including orders sent while Convoy was stopped or killed', async () => {
    const gw = 'gw7';
    const hq = await scene.hq();
    const hqSub = await scene.hqSubscriber(hq, gw);
    const dispatcher = await connectMqtt(hq.port, { protocolVersion: 5, clientId: 'dispatch' });
    scene.clients.push(dispatcher);
    const convoy = await scene.convoy(convoyEnv(gw, hq.endpoint));
    // "online" at HQ comes after the downlink SUBSCRIBE on the same connection: the filter is in place.
    await hqSub.until(() => hqSub.status.includes('online'), '"online" at HQ');

    // The driver's tablet: a persistent session on Convoy, reconnecting by itself (same port after restarts).
    const tablet = await connectMqtt(convoy.port, {
      protocolVersion: 5, clientId: 'tablet', clean: false, reconnectPeriod: 100, properties: { sessionExpiryInterval: 3600 },
    });
    scene.clients.push(tablet);
    const orders: Array<{ topic: string; payload: string; dup: boolean }> = [];
    const w = new Waiters();
    tablet.on('message', (topic, payload, packet) => {
      orders.push({ topic, payload: payload.toString(), dup: packet.dup });
      w.wake();
    });
    await subscribe(tablet, 'truck/orders/#', 1);
    const got = (n: number): boolean => orders.some((o) => o.topic === `truck/orders/${n}`);
    const send = async (from: number, to: number): Promise<void> => {
      for (let n = from; n <= to; n++) await dispatcher.publishAsync(`fleet/${gw}/orders/${n}`, `order ${n}`, { qos: 1 });
    };
    const waitOrders = (to: number, what: string): Promise<void> =>
      w.until(() => Array.from({ length: to }, (_, i) => i + 1).every(got), what, 15_000, () => `; tablet got ${orders.map((o) => o.topic).join(', ')}`);

    await send(1, 3);
    await waitOrders(3, 'orders 1-3 while online');

    // Clean stop: "offline" at HQ; orders 4-6 wait in Convoy's persistent session at HQ.
    await convoy.stop();
    await hqSub.until(() => hqSub.status[hqSub.status.length - 1] === 'offline', '"offline" at HQ after the stop');
    await send(4, 6);
    await convoy.restart();
    await waitOrders(6, 'orders 4-6 sent while Convoy was stopped');

    // Power cut: SIGKILL; orders 7-9 sent while it is gone (HQ published the will).
    await hqSub.until(() => hqSub.status[hqSub.status.length - 1] === 'online', '"online" at HQ after the restart');
    await convoy.kill();
    await hqSub.until(() => hqSub.status[hqSub.status.length - 1] === 'offline', '"offline" (the will) at HQ after the kill');
    await send(7, 9);
    await convoy.restart();
    await waitOrders(9, 'orders 7-9 sent while Convoy was killed');

    const firsts: number[] = [];
    for (const o of orders) {
      const n = Number(o.topic.split('/').pop());
      if (!firsts.includes(n)) firsts.push(n);
      expect(o.payload).to.equal(`order ${n}`);
    }
    figures('downlink', { seq: orders.map((o) => `${o.topic.split('/').pop()}${o.dup ? 'd' : ''}`).join(','), orders: orders.length, distinct: firsts.length, duplicates: orders.length - firsts.length, order: firsts.join(',') });
    expect(firsts).to.deep.equal([1, 2, 3, 4, 5, 6, 7, 8, 9]);
  });
});
