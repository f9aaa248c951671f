// The uplink bridge against a real Mosquitto as HQ: LAN → outbox → HQ with gw/seq, HQ → LAN
// downlink, status topic and will, and a backlog delivered after HQ was down and came back.
// The bridge is built here on an in-memory outbox (the SQLite outbox has its own suite).
import { expect } from 'chai';
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import { startBridge, type Bridge } from '../../src/bridge/bridge.js';
import { LINK_STATE_TOPIC } from '../../src/bridge/link.js';
import { OUTBOX_CLASSES, type Outbox, type OutboxClass, type OutboxRecord, type OutboxStats } from '../../src/bridge/types.js';
import { defaultConfig } from '../../src/config/load.js';
import type { UplinkConfig } from '../../src/config/schema.js';
import { silentLogger } from '../../src/diagnostics/log.js';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { until } from '../helpers/until.js';

/** A minimal in-memory outbox (no budget): enough for the bridge's behaviour. */
class MemoryOutbox implements Outbox {
  readonly rows = new Map<number, OutboxRecord>();
  private seq = 0;

  append(rec: Omit<OutboxRecord, 'seq'>): OutboxRecord {
    const r = { ...rec, seq: ++this.seq };
    this.rows.set(r.seq, r);
    return r;
  }

  remove(seq: number): void {
    this.rows.delete(seq);
  }

  next(cls: OutboxClass, afterSeq: number, limit: number): OutboxRecord[] {
    const out: OutboxRecord[] = [];
    for (const r of this.rows.values()) {
      // Map keeps insertion order = seq order.
      if (r.cls === cls && r.seq > afterSeq) out.push(r);
      if (out.length >= limit) break;
    }
    return out;
  }

  newestPerTopic(cls: OutboxClass, limit: number): OutboxRecord[] {
    const newest = new Map<string, OutboxRecord>();
    for (const r of this.rows.values()) if (r.cls === cls) newest.set(r.localTopic, r);
    return [...newest.values()].slice(-limit);
  }

  stats(): OutboxStats {
    const byClass = Object.fromEntries(OUTBOX_CLASSES.map((c) => [c, { count: 0, bytes: 0 }])) as OutboxStats['byClass'];
    for (const r of this.rows.values()) {
      byClass[r.cls].count++;
      byClass[r.cls].bytes += r.payload.length;
    }
    return { count: this.rows.size, bytes: 0, byClass, dropped: { expired: 0, evicted: 0, refused_full: 0 }, lastSeq: this.seq };
  }
}

/** Mosquitto as HQ on a fixed free port, with persistence so sessions survive a restart. */
class Hq {
  private proc: ChildProcess | null = null;
  private exited: Promise<void> = Promise.resolve();
  readonly dir = mkdtempSync(join(tmpdir(), 'convoy-hq-'));
  output = '';

  constructor(readonly port: number) {
    // Mosquitto started as root drops to its own user: it must be able to write its persistence file here.
    chmodSync(this.dir, 0o777);
    writeFileSync(join(this.dir, 'mosquitto.conf'), [
      `listener ${port} 127.0.0.1`,
      'allow_anonymous true',
      'persistence true',
      `persistence_location ${this.dir}/`,
      'log_dest stderr',
      'log_type error',
      'log_type warning',
      '',
    ].join('\n'));
  }

  async start(): Promise<void> {
    const p = spawn('/usr/sbin/mosquitto', ['-c', join(this.dir, 'mosquitto.conf')], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.proc = p;
    p.stdout.on('data', (d: Buffer) => (this.output += d.toString()));
    p.stderr.on('data', (d: Buffer) => (this.output += d.toString()));
    this.exited = new Promise((resolve) => p.once('close', () => resolve()));
    const deadline = Date.now() + 10_000;
    for (;;) {
      if (p.exitCode !== null) throw new Error(`mosquitto exited: ${this.output}`);
      try {
        const c = await connectClient(this.port, { protocolVersion: 5, clientId: `probe-${process.pid}-${Date.now()}`, connectTimeout: 500 });
        await endClient(c);
        return;
      } catch (err) {
        if (Date.now() > deadline) throw new Error(`mosquitto not ready: ${(err as Error).message} ${this.output}`, { cause: err });
        await sleep(50);
      }
    }
  }

  /** SIGTERM: Mosquitto writes its persistence file and closes every connection. */
  async stop(): Promise<void> {
    if (!this.proc || this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    this.proc.kill('SIGTERM');
    await this.exited;
  }

  async kill(): Promise<void> {
    if (this.proc && this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill('SIGKILL');
    await this.exited;
  }

  cleanup(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

async function freePort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as net.AddressInfo).port;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

/** `beforeConnack` sees the client first: messages queued in its session may arrive right behind the CONNACK. */
function connectClient(port: number, opts: IClientOptions = {}, beforeConnack?: (c: MqttClient) => void): Promise<MqttClient> {
  return new Promise((resolve, reject) => {
    const c = mqtt.connect({ host: '127.0.0.1', port, reconnectPeriod: 0, connectTimeout: 3000, ...opts });
    beforeConnack?.(c);
    c.once('connect', () => resolve(c));
    c.once('error', (err) => {
      c.end(true);
      reject(err);
    });
    c.once('close', () => reject(new Error('closed before CONNACK')));
  });
}

function endClient(c: MqttClient): Promise<void> {
  return new Promise((r) => c.end(true, {}, () => r()));
}

interface Got {
  topic: string;
  payload: string;
  qos: number;
  retain: boolean;
  user: Record<string, string | string[]>;
}

/** Collects messages; `waitFor` resolves once the predicate holds (or fails after a timeout). */
class Inbox {
  readonly got: Got[] = [];
  private watchers: Array<() => void> = [];

  constructor(c: MqttClient) {
    c.on('message', (topic, payload, packet) => {
      this.got.push({ topic, payload: payload.toString(), qos: packet.qos, retain: packet.retain, user: packet.properties?.userProperties ?? {} });
      for (const w of this.watchers.splice(0)) w();
    });
  }

  waitFor(pred: (got: Got[]) => boolean, what: string, timeoutMs = 10_000): Promise<void> {
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`timed out waiting for ${what}; got ${JSON.stringify(this.got.map((g) => [g.topic, g.payload]))}`)), timeoutMs);
      const check = (): void => {
        if (pred(this.got)) {
          clearTimeout(t);
          resolve();
        } else this.watchers.push(check);
      };
      check();
    });
  }
}

function subscribe(c: MqttClient, topic: string, qos: 0 | 1 | 2 = 1): Promise<void> {
  return new Promise((resolve, reject) => c.subscribe(topic, { qos }, (err) => (err ? reject(err) : resolve())));
}

function publish(c: MqttClient, topic: string, payload: string, opts: mqtt.IClientPublishOptions = { qos: 1 }): Promise<void> {
  return new Promise((resolve, reject) => c.publish(topic, payload, opts, (err) => (err ? reject(err) : resolve())));
}

describe('uplink bridge with Mosquitto as HQ', function () {
  this.timeout(30_000);
  let hq: Hq;
  let gw: TestGateway;
  let outbox: MemoryOutbox;
  let bridge: Bridge | null = null;
  let hqSub: MqttClient;
  let hqInbox: Inbox;
  let lan: MqttClient;
  const clients: MqttClient[] = [];

  function uplinkConfig(over: Partial<UplinkConfig> = {}): UplinkConfig {
    const base = defaultConfig().uplink;
    return {
      ...base,
      enabled: true,
      gateway_id: 'gw1',
      endpoints: [`127.0.0.1:${hq.port}`],
      protocol_version: 5,
      keepalive_s: 5,
      connect_timeout_ms: 2000,
      backoff_initial_ms: 50,
      backoff_max_ms: 300,
      backoff_reset_ms: 1000,
      routes: [{ local: 'truck/telemetry/#', remote: 'fleet/{gateway}/telemetry/#', qos: 1, class: 'telemetry', ttl_s: 0, store_qos0: true, sign: false }],
      downlink: [{ remote: 'fleet/{gateway}/orders/#', local: 'truck/orders/#', qos: 1 }],
      ...over,
    };
  }

  function startOurBridge(over: Partial<UplinkConfig> = {}): Bridge {
    bridge = startBridge({ uplink: uplinkConfig(over), outbox: defaultConfig().outbox, broker: gw.broker, store: outbox, log: silentLogger });
    return bridge;
  }

  async function hqSubscriber(): Promise<void> {
    hqSub = await connectClient(hq.port, {
      protocolVersion: 5, clientId: 'hq-app', clean: false, properties: { sessionExpiryInterval: 300 },
    });
    clients.push(hqSub);
    hqInbox = new Inbox(hqSub);
    await subscribe(hqSub, 'fleet/gw1/#', 1);
  }

  before(async () => {
    hq = new Hq(await freePort());
    await hq.start();
  });

  beforeEach(async () => {
    gw = await startTestGateway();
    outbox = new MemoryOutbox();
    await hqSubscriber();
    lan = await connectClient(gw.port, { protocolVersion: 5, clientId: `lan-${Date.now()}` });
    clients.push(lan);
  });

  afterEach(async () => {
    if (bridge) await bridge.stop();
    bridge = null;
    await Promise.all(clients.splice(0).map(endClient));
    // Forget hq-app's persistent session between tests.
    const c = await connectClient(hq.port, { protocolVersion: 5, clientId: 'hq-app', clean: true });
    await endClient(c);
    await gw.stop();
  });

  after(async () => {
    await hq.kill();
    hq.cleanup();
  });

  it('forwards LAN telemetry to HQ on the mapped topic with gw and seq user properties (MQTT 5)', async () => {
    const b = startOurBridge();
    await until(() => b.link.isUp, 'link up');
    await hqInbox.waitFor((g) => g.some((m) => m.topic === 'fleet/gw1/status' && m.payload === 'online'), 'online status');
    for (let i = 1; i <= 3; i++) await publish(lan, `truck/telemetry/engine/rpm`, `rpm-${i}`, { qos: 1, properties: { userProperties: { unit: 'rpm' } } });
    await hqInbox.waitFor((g) => g.filter((m) => m.topic.startsWith('fleet/gw1/telemetry/')).length === 3, '3 telemetry messages');
    const tel = hqInbox.got.filter((m) => m.topic.startsWith('fleet/gw1/telemetry/'));
    expect(tel.map((m) => m.topic)).to.deep.equal(Array(3).fill('fleet/gw1/telemetry/engine/rpm'));
    expect(tel.map((m) => m.payload)).to.deep.equal(['rpm-1', 'rpm-2', 'rpm-3']);
    expect(tel.map((m) => m.user.gw)).to.deep.equal(['gw1', 'gw1', 'gw1']);
    expect(tel.map((m) => Number(m.user.seq))).to.deep.equal([1, 2, 3]);
    expect(tel[0]!.user.unit).to.equal('rpm');
    await until(() => outbox.rows.size === 0, 'outbox drained (removed on PUBACK)');
    expect(b.stats().forwarder).to.include({ acked: 3, inFlight: 0, lastAckedSeq: 3 });
    // Not routed: stays local.
    await publish(lan, 'truck/other/x', 'local only');
    expect(outbox.stats().lastSeq).to.equal(3);
  });

  it('publishes the link state locally (retained) on convoy/uplink/state', async () => {
    const b = startOurBridge();
    await until(() => b.link.isUp, 'link up');
    const watcher = await connectClient(gw.port, { protocolVersion: 5, clientId: `state-${Date.now()}` });
    clients.push(watcher);
    const inbox = new Inbox(watcher);
    await subscribe(watcher, LINK_STATE_TOPIC);
    await inbox.waitFor((g) => g.length > 0, 'retained link state');
    const st = JSON.parse(inbox.got[0]!.payload) as { state: string; endpoint: string };
    expect(inbox.got[0]!.retain).to.equal(true);
    expect(st).to.include({ state: 'up', endpoint: `127.0.0.1:${hq.port}` });
  });

  it('delivers HQ orders to a LAN subscriber (downlink), user properties kept, and never sends them back up', async () => {
    const b = startOurBridge();
    await until(() => b.link.isUp, 'link up');
    const lanInbox = new Inbox(lan);
    await subscribe(lan, 'truck/orders/#');
    // The downlink SUBSCRIBE went out right after CONNACK; give Mosquitto its SUBACK round trip.
    await sleep(100);
    await publish(hqSub, 'fleet/gw1/orders/1', 'deliver to dock 4', { qos: 1, properties: { userProperties: { order: '1' } } });
    await lanInbox.waitFor((g) => g.length === 1, 'order on the LAN');
    expect(lanInbox.got[0]).to.deep.include({ topic: 'truck/orders/1', payload: 'deliver to dock 4', retain: false });
    expect(lanInbox.got[0]!.user.order).to.equal('1');
    expect(outbox.stats().lastSeq).to.equal(0);
    expect(b.stats().downlink.delivered).to.equal(1);
  });

  it('stores while HQ is down (LAN keeps working) and delivers the backlog, seq contiguous, when HQ is back', async () => {
    const b = startOurBridge();
    await until(() => b.link.isUp, 'link up');
    await publish(lan, 'truck/telemetry/gps', 'before');
    await hqInbox.waitFor((g) => g.some((m) => m.payload === 'before'), 'first message');

    await hq.stop();
    await until(() => !b.link.isUp, 'link down');
    // LAN publishers are acknowledged by the gateway while HQ is unreachable.
    const lanInbox = new Inbox(lan);
    await subscribe(lan, 'truck/telemetry/#');
    for (let i = 1; i <= 20; i++) await publish(lan, `truck/telemetry/gps`, `p${i}`);
    await lanInbox.waitFor((g) => g.length === 20, 'local delivery while HQ is down');
    expect(outbox.rows.size).to.equal(20);

    await hq.start();
    // hq-app's session (and its subscription) came back from Mosquitto's persistence file.
    // The backlog may already be queued in the session: listen before the CONNACK.
    let inbox2!: Inbox;
    const back = await connectClient(
      hq.port, { protocolVersion: 5, clientId: 'hq-app', clean: false, properties: { sessionExpiryInterval: 300 } },
      (c) => (inbox2 = new Inbox(c)),
    );
    clients.push(back);
    await inbox2.waitFor((g) => g.filter((m) => /^p\d+$/.test(m.payload)).length >= 20, 'the backlog at HQ', 15_000);
    const msgs = inbox2.got.filter((m) => /^p\d+$/.test(m.payload));
    // The newest per topic (p20) may come first after the reconnect; then the backlog in order.
    const payloads = [...new Set(msgs.map((m) => m.payload))];
    expect(payloads.sort((x, y) => Number(x.slice(1)) - Number(y.slice(1)))).to.deep.equal(Array.from({ length: 20 }, (_, i) => `p${i + 1}`));
    const seqs = [...new Set(msgs.map((m) => Number(m.user.seq)))].sort((x, y) => x - y);
    expect(seqs).to.deep.equal(Array.from({ length: 20 }, (_, i) => i + 2)); // seq 1 was "before"
    const inOrder = msgs.filter((m) => m.payload !== 'p20').map((m) => m.payload);
    expect(inOrder).to.deep.equal(Array.from({ length: 19 }, (_, i) => `p${i + 1}`));
    await until(() => outbox.rows.size === 0, 'outbox empty after the acks');
  });

  it('a clean stop leaves retained "offline" at HQ; orders sent while offline arrive when the truck returns', async () => {
    let b = startOurBridge();
    await until(() => b.link.isUp, 'link up');
    await sleep(100); // SUBACK of the downlink filter
    await b.stop();
    bridge = null;
    const status = await connectClient(hq.port, { protocolVersion: 5, clientId: 'status-reader' });
    clients.push(status);
    const statusInbox = new Inbox(status);
    await subscribe(status, 'fleet/gw1/status');
    await statusInbox.waitFor((g) => g.length > 0, 'retained status');
    expect(statusInbox.got[0]).to.deep.include({ payload: 'offline', retain: true });

    // HQ sends an order while the truck is away: its persistent session at HQ keeps it.
    await publish(hqSub, 'fleet/gw1/orders/7', 'cancel order 7');
    const lanInbox = new Inbox(lan);
    await subscribe(lan, 'truck/orders/#');
    b = startOurBridge();
    await lanInbox.waitFor((g) => g.some((m) => m.topic === 'truck/orders/7' && m.payload === 'cancel order 7'), 'order sent while offline');
  });

  it('the will: HQ gets retained "offline" when the truck vanishes without a clean stop', async () => {
    const b = startOurBridge({ keepalive_s: 2 });
    await until(() => b.link.isUp, 'link up');
    // Make the link vanish: destroy the TCP connection under MQTT.js (as a crash would).
    const status = await connectClient(hq.port, { protocolVersion: 5, clientId: 'status-reader2' });
    clients.push(status);
    const statusInbox = new Inbox(status);
    await subscribe(status, 'fleet/gw1/status');
    await statusInbox.waitFor((g) => g.some((m) => m.payload === 'online'), 'online');
    const client = (b.link as unknown as { client: MqttClient | null }).client!;
    (client.stream as net.Socket).destroy();
    await statusInbox.waitFor((g) => g.some((m) => m.payload === 'offline'), 'will "offline"');
    // ...and the link comes back by itself.
    await statusInbox.waitFor((g) => g.filter((m) => m.payload === 'online').length >= 2, 'online again');
    expect(b.stats().link.drops).to.be.at.least(1);
  });

  it('MQTT 3.1.1 HQ with sequence_311 = topic-suffix: /{gateway}/{seq} appended', async () => {
    const b = startOurBridge({ protocol_version: 4 });
    await until(() => b.link.isUp, 'link up');
    await publish(lan, 'truck/telemetry/gps', 'v4-a');
    await publish(lan, 'truck/telemetry/gps', 'v4-b');
    await hqInbox.waitFor((g) => g.filter((m) => m.payload.startsWith('v4-')).length === 2, 'two messages');
    const got = hqInbox.got.filter((m) => m.payload.startsWith('v4-'));
    expect(got.map((m) => m.topic)).to.deep.equal(['fleet/gw1/telemetry/gps/gw1/1', 'fleet/gw1/telemetry/gps/gw1/2']);
    expect(got[0]!.user).to.deep.equal({});
  });
});

/**
 * A scripted MQTT 3.1.1 "HQ" on a raw socket: answers CONNECT, PUBLISH QoS 1 and SUBSCRIBE
 * until told to go silent (a black hole: nothing answered, nothing closed), or misbehaves.
 */
class ScriptedHq {
  readonly server: net.Server;
  readonly sockets = new Set<net.Socket>();
  silent = false;
  /** SUBACK with this many return codes (the bridge subscribes one filter). */
  subackCodes = 1;
  /** After CONNACK, also a PUBACK for a packet id never used. */
  bogusAck = false;
  /** After SUBACK, this many QoS 0 orders in one burst. */
  flood = 0;
  connects = 0;

  constructor() {
    this.server = net.createServer((s) => {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
      s.on('error', () => undefined);
      let buf = Buffer.alloc(0);
      s.on('data', (d: Buffer) => {
        buf = Buffer.concat([buf, d]);
        for (;;) {
          let len = 0;
          let mul = 1;
          let i = 1;
          for (; i < buf.length && i < 5; i++) {
            len += (buf[i]! & 0x7f) * mul;
            mul *= 128;
            if ((buf[i]! & 0x80) === 0) break;
          }
          if (i >= buf.length || buf.length < i + 1 + len) return;
          const type = buf[0]! >> 4;
          const qos = (buf[0]! >> 1) & 3;
          const body = buf.subarray(i + 1, i + 1 + len);
          buf = buf.subarray(i + 1 + len);
          if (this.silent) continue;
          if (type === 1) {
            this.connects++;
            s.write(Buffer.from([0x20, 2, 0, 0]));
            if (this.bogusAck) s.write(Buffer.from([0x40, 2, 0x77, 0x77]));
          } else if (type === 3 && qos === 1) {
            const tl = body.readUInt16BE(0);
            s.write(Buffer.from([0x40, 2, body[2 + tl]!, body[3 + tl]!]));
          } else if (type === 8) {
            s.write(Buffer.from([0x90, 2 + this.subackCodes, body[0]!, body[1]!, ...Array<number>(this.subackCodes).fill(1)]));
            if (this.flood > 0) {
              const topic = Buffer.from('fleet/gw1/orders/f');
              const one = Buffer.concat([Buffer.from([0x30, 2 + topic.length + 1, 0, topic.length]), topic, Buffer.from('x')]);
              s.write(Buffer.concat(Array<Buffer>(this.flood).fill(one)));
            }
          } else if (type === 12) {
            s.write(Buffer.from([0xd0, 0]));
          }
        }
      });
    });
  }

  async listen(): Promise<number> {
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    return (this.server.address() as net.AddressInfo).port;
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((r) => this.server.close(() => r()));
  }
}

describe('uplink link against a scripted, broken HQ', function () {
  this.timeout(30_000);
  let fake: ScriptedHq;
  let port: number;
  let gw: TestGateway;
  let bridge: Bridge | null = null;

  beforeEach(async () => {
    fake = new ScriptedHq();
    port = await fake.listen();
    gw = await startTestGateway();
  });
  afterEach(async () => {
    if (bridge) await bridge.stop();
    bridge = null;
    await fake.close();
    await gw.stop();
  });

  function start(over: Partial<UplinkConfig> = {}): Bridge {
    const uplink: UplinkConfig = {
      ...defaultConfig().uplink, enabled: true, endpoints: [`127.0.0.1:${port}`], protocol_version: 4, keepalive_s: 2,
      connect_timeout_ms: 1000, backoff_initial_ms: 50, backoff_max_ms: 200, backoff_reset_ms: 60_000,
      downlink: [{ remote: 'fleet/{gateway}/orders/#', local: 'truck/orders/#', qos: 1 }], ...over,
    };
    bridge = startBridge({ uplink, outbox: defaultConfig().outbox, broker: gw.broker, store: new MemoryOutbox(), log: silentLogger });
    return bridge;
  }

  it('declares a black-holed (half-open) link dead within 2× keepalive and reconnects', async () => {
    const b = start();
    await until(() => b.link.isUp, 'link up');
    const t0 = Date.now();
    fake.silent = true; // nothing answered, nothing closed
    await until(() => !b.link.isUp, 'link declared dead', 10_000);
    const took = Date.now() - t0;
    expect(took).to.be.at.most(2 * 2000 + 250); // 2× keepalive (+ timer slack)
    fake.silent = false;
    await until(() => b.link.isUp, 'link up again', 10_000);
    expect(fake.connects).to.be.at.least(2);
  });

  it('a SUBACK with the wrong number of codes restarts the connection with backoff, never crashes', async () => {
    fake.subackCodes = 3;
    const b = start();
    await until(() => fake.connects >= 3, 'several attempts', 10_000);
    expect(b.stats().link.lastError).to.match(/suback|closed|lost/i);
    fake.subackCodes = 1;
    await until(() => b.link.isUp && Date.now() - b.stats().link.since > 300, 'stable link', 10_000);
  });

  it('an ack for an unknown packet id restarts the connection', async () => {
    fake.bogusAck = true;
    const b = start();
    await until(() => fake.connects >= 3, 'several attempts', 10_000);
    expect(b.link.isUp).to.equal(false);
    expect(b.stats().link.lastError).to.match(/unknown packet id/);
    fake.bogusAck = false;
    await until(() => b.link.isUp, 'link up once HQ behaves', 10_000);
  });

  it('a downlink flood restarts the connection; the LAN side keeps working', async () => {
    fake.flood = 3000;
    const b = start();
    await until(() => b.stats().link.floods >= 1, 'flood detected', 10_000);
    expect(b.stats().link.lastError).to.match(/flood/);
    const c = await connectClient(gw.port, { protocolVersion: 4, clientId: 'lan-during-flood' });
    const inbox = new Inbox(c);
    await subscribe(c, 'local/x');
    await publish(c, 'local/x', 'still here');
    await inbox.waitFor((g) => g.some((m) => m.payload === 'still here'), 'local traffic');
    await endClient(c);
    fake.flood = 0;
    await until(() => b.link.isUp, 'link up once the flood stops', 10_000);
  });

  it('fails over to the next endpoint when the first refuses connections', async () => {
    const dead = await freePort();
    const b = start({ endpoints: [`127.0.0.1:${dead}`, `127.0.0.1:${port}`] });
    await until(() => b.link.isUp, 'link up on the second endpoint');
    expect(b.stats().link.endpoint).to.equal(`127.0.0.1:${port}`);
  });
});

