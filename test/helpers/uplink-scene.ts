// The parts of an uplink scenario (issue 6), shared by test/integration/uplink-scenarios.test.ts
// and scripts/uplink-soak.ts: Convoy as a child process from examples/truck.toml, real Mosquitto
// as HQ behind the fault proxy, numbered QoS 1 publishers on the LAN, a persistent subscriber at
// HQ, the retained link state, and the order check for runs with several link-ups.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import { ConvoyProcess } from './convoy-process.js';
import { startFaultProxy, type FaultProxy } from './fault-proxy.js';
import { startMosquitto, type Mosquitto, type MosquittoOptions } from './mosquitto.js';
import {
  checkUplink,
  type AcceptedMessage,
  type CheckOptions,
  type ReceivedMessage,
  type UplinkClass,
  type UplinkReport,
} from './uplink-checker.js';

/** Payload "KEY|padding": the key identifies the message at HQ. */
export const keyOf = (m: ReceivedMessage): string => {
  const s = typeof m.payload === 'string' ? m.payload : Buffer.from(m.payload).toString('utf8');
  const bar = s.indexOf('|');
  return bar < 0 ? s : s.slice(0, bar);
};

export function connectMqtt(port: number, opts: IClientOptions = {}): Promise<MqttClient> {
  return new Promise((resolve, reject) => {
    const c = mqtt.connect({ host: '127.0.0.1', port, reconnectPeriod: 0, connectTimeout: 5000, ...opts });
    const onError = (err: Error): void => {
      c.end(true);
      reject(err);
    };
    c.once('connect', () => {
      c.off('error', onError);
      c.on('error', () => undefined);
      resolve(c);
    });
    c.once('error', onError);
  });
}

export function endMqtt(c: MqttClient): Promise<void> {
  return new Promise((r) => c.end(true, {}, () => r()));
}

export function subscribe(c: MqttClient, filter: string, qos: 0 | 1 = 1): Promise<void> {
  return new Promise((resolve, reject) =>
    c.subscribe(filter, { qos }, (err, granted) => {
      if (err) reject(err);
      else if (granted?.some((g) => g.qos >= 0x80)) reject(new Error(`subscription to ${filter} refused`));
      else resolve();
    }),
  );
}

/** Re-checks `cond` whenever `wake` is called (by the owner's events); fails after the timeout. */
export class Waiters {
  private list: Array<() => void> = [];
  wake(): void {
    const l = this.list;
    this.list = [];
    for (const f of l) f();
  }
  until(cond: () => boolean, what: string, timeoutMs: number, detail: () => string = () => ''): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}${detail()}`)), timeoutMs);
      const check = (): void => {
        if (cond()) {
          clearTimeout(timer);
          resolve();
        } else this.list.push(check);
      };
      check();
    });
  }
}

// --- HQ side: a subscriber on fleet/# ------------------------------------------------------------

export class HqSubscriber {
  readonly got: ReceivedMessage[] = [];
  /** Key → deliveries (status topic excluded). */
  readonly seen = new Map<string, number>();
  /** Payloads on the status topic, in arrival order. */
  readonly status: string[] = [];
  private readonly w = new Waiters();

  private constructor(readonly client: MqttClient, private readonly statusTopic: string) {
    client.on('message', (topic, payload, packet) => {
      if (topic === statusTopic) {
        this.status.push(payload.toString());
      } else {
        const m: ReceivedMessage = { topic, payload: Buffer.from(payload), at: performance.now() };
        const up = packet.properties?.userProperties;
        if (up) m.userProperties = up;
        this.got.push(m);
        const k = keyOf(m);
        this.seen.set(k, (this.seen.get(k) ?? 0) + 1);
      }
      this.w.wake();
    });
  }

  /**
   * A persistent session at HQ (clean false; MQTT 5 session expiry), reconnecting by itself, so
   * an HQ restart does not make it miss what was queued for it meanwhile.
   */
  static async connect(hq: Mosquitto, gw: string, protocolVersion: 4 | 5 = 5): Promise<HqSubscriber> {
    const client = await connectMqtt(hq.port, {
      protocolVersion,
      clientId: `hq-app-${gw}`,
      clean: false,
      reconnectPeriod: 100,
      ...(protocolVersion === 5 ? { properties: { sessionExpiryInterval: 3600 } } : {}),
    });
    const s = new HqSubscriber(client, `fleet/${gw}/status`);
    await subscribe(client, 'fleet/#', 1);
    return s;
  }

  has(keys: Iterable<string>): boolean {
    for (const k of keys) if (!this.seen.has(k)) return false;
    return true;
  }

  until(cond: () => boolean, what: string, timeoutMs = 15_000): Promise<void> {
    return this.w.until(cond, what, timeoutMs, () => `; HQ got ${this.got.length} message(s), ${this.seen.size} distinct`);
  }

  /** Resolves once every key arrived at least once. */
  delivered(keys: readonly string[], timeoutMs = 15_000): Promise<void> {
    return this.until(() => this.has(keys), `${keys.length} message(s) at HQ (missing e.g. ${keys.filter((k) => !this.seen.has(k)).slice(0, 5).join(', ')})`, timeoutMs);
  }
}

// --- LAN side: numbered QoS 1 publishers and the link state ---------------------------------------

export interface Outgoing {
  key: string;
  cls: UplinkClass;
  topic: string;
  payload: string;
}

export const CLASS_TOPIC: Record<Exclude<UplinkClass, 'bulk'>, string[]> = {
  alarm: ['truck/alarms/panic'],
  event: ['truck/events/door', 'truck/events/delivery'],
  telemetry: ['truck/telemetry/gps', 'truck/telemetry/fuel', 'truck/telemetry/reefer'],
};

export function message(tag: string, cls: Exclude<UplinkClass, 'bulk'>, i: number, pad = 60): Outgoing {
  const key = `${tag}-${cls[0]}${i}`;
  const topics = CLASS_TOPIC[cls];
  return { key, cls, topic: topics[i % topics.length]!, payload: `${key}|${'x'.repeat(pad)}` };
}

/** A mix: 1 in 10 an alarm, 3 in 10 events, the rest telemetry. */
export function mixed(tag: string, from: number, n: number, pad = 60): Outgoing[] {
  const out: Outgoing[] = [];
  for (let i = from; i < from + n; i++) {
    const r = i % 10;
    out.push(message(tag, r === 0 ? 'alarm' : r < 4 ? 'event' : 'telemetry', i, pad));
  }
  return out;
}

/** Publishes on one connection (so the broker sees them in call order), at most `window` unacknowledged. */
export class LanPublisher {
  /** Shared across publishers of one scenario: localSeq is the acceptance order. */
  constructor(
    readonly client: MqttClient,
    readonly accepted: AcceptedMessage[],
    private readonly counter: { n: number },
    /** Key → local topic of every accepted message. */
    readonly topicOf: Map<string, string> = new Map(),
  ) {}

  /** PUBACK latencies (ms) of accepted messages. */
  readonly latencies: number[] = [];
  /** Messages refused by Convoy (PUBACK reason code ≥ 0x80). */
  readonly refused: Array<{ key: string; code: number | undefined }> = [];
  /** Every message sent, accepted or not, with its localSeq (a publish cut short by a crash may still have been stored). */
  readonly sent = new Map<string, { cls: UplinkClass; localSeq: number; at: number }>();

  async publish(msgs: readonly Outgoing[], window = 16): Promise<void> {
    let inflight = 0;
    const w = new Waiters();
    const all: Array<Promise<void>> = [];
    for (const m of msgs) {
      if (inflight >= window) await w.until(() => inflight < window, 'a PUBACK', 30_000);
      inflight++;
      const localSeq = ++this.counter.n; // the broker reads them in this order (one connection)
      this.sent.set(m.key, { cls: m.cls, localSeq, at: performance.now() });
      const t0 = Date.now();
      all.push(new Promise<void>((resolve, reject) => {
        this.client.publish(m.topic, m.payload, { qos: 1 }, (err) => {
          inflight--;
          w.wake();
          if (err) {
            const code = (err as { code?: number }).code;
            if (typeof code === 'number') {
              this.refused.push({ key: m.key, code });
              resolve();
            } else reject(err);
            return;
          }
          this.latencies.push(Date.now() - t0);
          this.accepted.push({ key: m.key, cls: m.cls, localSeq, at: performance.now() });
          this.topicOf.set(m.key, m.topic);
          resolve();
        });
      }));
    }
    await Promise.all(all);
  }
}

export interface StateEvent {
  state: string;
  at: number;
  lastError: string;
}

/** The retained convoy/uplink/state topic, watched from the LAN. */
export class LinkStateWatcher {
  readonly events: StateEvent[] = [];
  private readonly w = new Waiters();

  private constructor(readonly client: MqttClient) {
    client.on('message', (topic, payload) => {
      if (topic !== 'convoy/uplink/state') return;
      const st = JSON.parse(payload.toString()) as { state: string; lastError?: string };
      this.events.push({ state: st.state, at: Date.now(), lastError: st.lastError ?? '' });
      this.w.wake();
    });
  }

  static async connect(port: number): Promise<LinkStateWatcher> {
    const client = await connectMqtt(port, { protocolVersion: 5, clientId: `state-${Math.random().toString(16).slice(2)}` });
    const w = new LinkStateWatcher(client);
    await subscribe(client, 'convoy/uplink/state', 0);
    return w;
  }

  get state(): string | undefined {
    return this.events[this.events.length - 1]?.state;
  }

  /** The first event with this state at or after index `from`. */
  async reach(state: string, from = 0, timeoutMs = 15_000): Promise<StateEvent> {
    let found: StateEvent | undefined;
    await this.w.until(() => (found = this.events.slice(from).find((e) => e.state === state)) !== undefined, `link state "${state}"`, timeoutMs,
      () => `; states seen: ${this.events.map((e) => e.state).join(',')}`);
    return found!;
  }
}

// --- per-test resources --------------------------------------------------------------------------

/** Base environment: fast reconnects so the scenarios fit the time budget. */
export function convoyEnv(gw: string, hqEndpoint: string, extra: Record<string, string> = {}): Record<string, string> {
  return {
    CONVOY_LAN_PORT: '0',
    CONVOY_LAN_HOST: '127.0.0.1',
    CONVOY_GATEWAY_ID: gw,
    CONVOY_HQ: hqEndpoint,
    CONVOY_HQ_PROTOCOL: '5',
    CONVOY_HQ_KEEPALIVE: '5',
    CONVOY_HQ_CONNECT_TIMEOUT_MS: '2000',
    CONVOY_HQ_BACKOFF_INITIAL_MS: '50',
    CONVOY_HQ_BACKOFF_MAX_MS: '300',
    ...extra,
  };
}

export const LINK_UP = 'uplink: connected to HQ';

export class Scene {
  readonly clients: MqttClient[] = [];
  readonly proxies: FaultProxy[] = [];
  readonly hqs: Mosquitto[] = [];
  readonly convoys: ConvoyProcess[] = [];
  readonly dirs: string[] = [];
  readonly accepted: AcceptedMessage[] = [];
  readonly topicOf = new Map<string, string>();
  private readonly counter = { n: 0 };

  async hq(opts: MosquittoOptions = {}): Promise<Mosquitto> {
    const h = await startMosquitto(opts);
    this.hqs.push(h);
    return h;
  }

  async proxy(hq: Mosquitto): Promise<FaultProxy> {
    const p = await startFaultProxy({ targetPort: hq.port });
    this.proxies.push(p);
    return p;
  }

  async convoy(env: Record<string, string>, config?: string): Promise<ConvoyProcess> {
    const c = await ConvoyProcess.start({ env, ...(config ? { config } : {}) });
    this.convoys.push(c);
    return c;
  }

  async hqSubscriber(hq: Mosquitto, gw: string, v: 4 | 5 = 5): Promise<HqSubscriber> {
    const s = await HqSubscriber.connect(hq, gw, v);
    this.clients.push(s.client);
    return s;
  }

  async publisher(convoy: ConvoyProcess): Promise<LanPublisher> {
    const c = await connectMqtt(convoy.port, { protocolVersion: 5, clientId: `lan-pub-${Math.random().toString(16).slice(2)}` });
    this.clients.push(c);
    return new LanPublisher(c, this.accepted, this.counter, this.topicOf);
  }

  async stateWatcher(convoy: ConvoyProcess): Promise<LinkStateWatcher> {
    const w = await LinkStateWatcher.connect(convoy.port);
    this.clients.push(w.client);
    return w;
  }

  tempDir(): string {
    const d = mkdtempSync(join(tmpdir(), 'convoy-scenario-'));
    this.dirs.push(d);
    return d;
  }

  check(hq: HqSubscriber, convoy: ConvoyProcess, gw: string, opts: CheckOptions = {}): UplinkReport {
    const linkUps = convoy.count(LINK_UP);
    return checkUplink(this.accepted, hq.got, {
      keyOf,
      reconnects: Math.max(0, linkUps - 1),
      linkUps,
      window: 64,
      firstSeq: { [gw]: 1 },
      ...opts,
    });
  }

  async cleanup(): Promise<void> {
    await Promise.all(this.clients.splice(0).map(endMqtt));
    await Promise.all(this.convoys.splice(0).map((c) => c.cleanup()));
    await Promise.all(this.proxies.splice(0).map((p) => p.close()));
    await Promise.all(this.hqs.splice(0).map((h) => h.stop()));
    for (const d of this.dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  }
}

/**
 * Order within each class, judging "newest per topic first after a link-up" message by message:
 * a telemetry first delivery may overtake older ones only if, when it arrived, it was the newest
 * accepted message of its topic not yet delivered (what the forwarder sends first after a
 * link-up), and there are at most linkUps × topics of them. Everything else must arrive in
 * acceptance order. For runs where several link-ups happen before a class's backlog moves (the
 * checker then sees their newest-first sends as one burst and excuses only one per topic).
 * "Accepted" means accepted before it arrived when both carry times (`at`), else accepted at all:
 * without times, every telemetry message must have been accepted before the link-ups that sent
 * it first.
 *
 * The forwarder picks the newest per topic at the link-up, a little before the message arrives: a
 * publisher acknowledged in between makes a newer message of the topic, and the one sent first no
 * longer looks newest when it arrives. So a first delivery is also excused when nothing newer of
 * its topic has arrived yet and the next newer message of its topic was accepted at most
 * PICK_TO_ARRIVAL_MS before it arrived.
 */
/** Longest a link-up's pick of the newest per topic may precede that message's arrival at HQ. */
const PICK_TO_ARRIVAL_MS = 1000;

export function orderWithNewestFirst(accepted: readonly AcceptedMessage[], received: readonly ReceivedMessage[], topicOf: ReadonlyMap<string, string>, linkUps: number): { violations: string[]; exempt: number } {
  const byKey = new Map(accepted.map((a) => [a.key, a]));
  const firsts: Array<{ a: AcceptedMessage; at: number }> = [];
  const seen = new Set<string>();
  for (const m of received) {
    const k = keyOf(m);
    const a = byKey.get(k);
    if (!a || seen.has(k)) continue;
    seen.add(k);
    firsts.push({ a, at: m.at ?? Infinity });
  }
  const violations: string[] = [];
  let exempt = 0;
  const topics = new Set<string>();
  for (const cls of ['alarm', 'event', 'telemetry', 'bulk'] as const) {
    const list = firsts.filter((f) => f.a.cls === cls);
    // Per topic: accepted messages in localSeq order.
    const perTopic = new Map<string, AcceptedMessage[]>();
    for (const a of accepted) {
      if (a.cls !== cls) continue;
      const t = topicOf.get(a.key) ?? '';
      let l = perTopic.get(t);
      if (!l) perTopic.set(t, (l = []));
      l.push(a);
    }
    for (const l of perTopic.values()) l.sort((x, y) => x.localSeq - y.localSeq);
    const delivered = new Set<string>();
    /** Per topic: the highest localSeq delivered so far. */
    const newestDelivered = new Map<string, number>();
    /** The message of `l` right after `a` (accepted next on its topic). */
    const nextOnTopic = (l: readonly AcceptedMessage[], a: AcceptedMessage): AcceptedMessage | undefined => {
      for (let j = 0; j < l.length; j++) if (l[j]!.key === a.key) return l[j + 1];
      return undefined;
    };
    /** Newer messages of the topic appeared only between the link-up's pick and this arrival. */
    const newestAtPick = (l: readonly AcceptedMessage[], a: AcceptedMessage, t: string, at: number): boolean => {
      if ((newestDelivered.get(t) ?? -Infinity) > a.localSeq) return false;
      const next = nextOnTopic(l, a);
      return next === undefined || next.at === undefined || !Number.isFinite(at) || next.at >= at - PICK_TO_ARRIVAL_MS;
    };
    /** The newest message of `l` accepted before `at` and not delivered yet. */
    const newestWaiting = (l: readonly AcceptedMessage[], at: number): AcceptedMessage | undefined => {
      for (let j = l.length - 1; j >= 0; j--) {
        const c = l[j]!;
        if (!delivered.has(c.key) && (c.at ?? -Infinity) <= at) return c;
      }
      return undefined;
    };
    const suffixMin = new Array<number>(list.length + 1).fill(Infinity);
    for (let i = list.length - 1; i >= 0; i--) suffixMin[i] = Math.min(list[i]!.a.localSeq, suffixMin[i + 1]!);
    let max: AcceptedMessage | undefined;
    list.forEach(({ a, at }, i) => {
      const t = topicOf.get(a.key) ?? '';
      const l = perTopic.get(t)!;
      const newest = newestWaiting(l, at);
      const excusable = newest?.key === a.key || newestAtPick(l, a, t, at);
      delivered.add(a.key);
      if (a.localSeq > (newestDelivered.get(t) ?? -Infinity)) newestDelivered.set(t, a.localSeq);
      const overtakes = a.localSeq > suffixMin[i + 1]!;
      if (cls === 'telemetry' && overtakes && excusable) {
        exempt++;
        topics.add(t);
        return;
      }
      if (max && a.localSeq < max.localSeq) violations.push(`${cls} ${a.key} (#${a.localSeq}) after ${max.key} (#${max.localSeq})`);
      else max = a;
    });
  }
  if (exempt > linkUps * Math.max(1, topics.size)) violations.push(`${exempt} newest-first overtakes for ${linkUps} link-up(s) × ${topics.size} topic(s)`);
  return { violations, exempt };
}

export function summary(r: UplinkReport): Record<string, unknown> {
  return {
    accepted: r.accepted, received: r.received, delivered: r.delivered, lost: r.lost.length, duplicates: r.duplicates,
    allowed: r.duplicatesAllowed, orderViolations: r.orderViolations.length, newestFirst: r.newestFirst.length,
    seqMissing: Object.values(r.gateways).map((g) => g.missing.length).join('/'),
  };
}

// --- the scenarios -------------------------------------------------------------------------------
