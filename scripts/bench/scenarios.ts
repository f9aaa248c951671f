// The benchmark scenarios: mqttbench flags per scenario and the metrics
// extracted from each run.
import type { BrokerKind } from './brokers.js';
import { num, type BenchJson } from './mqttbench.js';

export type Better = 'higher' | 'lower';

export interface RunRecord {
  scenario: string;
  side: string;
  kind: BrokerKind;
  run: number;
  /** ok = exit 0; loss = exit 2 (QoS 1 loss, numbers kept); failed = anything else. */
  status: 'ok' | 'loss' | 'failed';
  exitCode: number | null;
  error?: string;
  /** Broker utime+stime over the measured mqttbench run, from /proc/PID/stat. */
  brokerCpuS: number | null;
  /** The main thread's part of brokerCpuS (durable scenario; the rest: the store writer thread). */
  brokerMainCpuS?: number | null;
  /** Broker VmRSS right before mqttbench started (idle scenario). */
  brokerRssEmptyKb: number | null;
  warmup: { exitCode: number | null; throughput: number | null } | null;
  wallS: number;
  /** mqttbench's JSON; for the MQTT.js scenario the first protocol's pass (also in `passes`). */
  bench: BenchJson | null;
  /**
   * JSON of the other load-generator processes of the measured run: durable: `sub` (the
   * persistent-session subscriber); mqttjs: one entry per protocol pass (`v5`, `v4`).
   */
  passes: Record<string, BenchJson | null>;
  /** Broker write_bytes from /proc/PID/io over the measured run (durable scenario). */
  diskWriteBytes: number | null;
  /** Size of the broker's data directory after the measured run (durable scenario). */
  storeBytes: number | null;
  /** fsync p50 of the data directory's filesystem, probed just before the measured run (durable). */
  fsyncP50Us?: number;
  /** uplink-drain: readings of the truck broker around the backlog (see UplinkMeasures). */
  uplink?: UplinkMeasures;
}

/** uplink-drain: what the harness measures itself (the subscriber's JSONs are in `passes`). */
export interface UplinkMeasures {
  /** Messages of the steady pass and of the backlog. */
  steady: number;
  backlog: number;
  /** Truck broker write_bytes: steady pass (publish + drain with the link up, + 1 s settle). */
  steadyWriteBytes: number | null;
  /** Truck broker write_bytes while the backlog was published with HQ down (until the last PUBACK). */
  backlogPubWriteBytes: number | null;
  /** Truck broker write_bytes from HQ's restart until 1 s after the last backlog message reached HQ. */
  drainWriteBytes: number | null;
  /** Truck broker CPU (utime + stime) over the same drain window. */
  drainCpuS: number | null;
  /** The part of drainCpuS spent on the main thread (the rest: writer thread, libuv pool). */
  drainMainCpuS: number | null;
  /**
   * HQ's CPU from its restart until the backlog reached the subscriber: what each drained
   * message costs the HQ broker (Convoy's carry the gw and seq user properties).
   */
  hqDrainCpuS: number | null;
  /** Truck broker VmRSS right after the backlog was published with HQ down (the backlog held). */
  backlogRssKb: number | null;
  /** HQ restart (spawn) -> first / last backlog message at the HQ subscriber. */
  reconnectS: number | null;
  drainS: number | null;
  /**
   * (d) The same backlog again, in the same truck process: HQ down, published, HQ back. A truck
   * runs for hours and drains after every dead zone; the first drain of a fresh Node process also
   * pays V8's compilation of the drain path, this one shows a process that has drained before.
   */
  again: UplinkDrainAgain | null;
}

export interface UplinkDrainAgain {
  reconnectS: number | null;
  drainS: number | null;
  drainCpuS: number | null;
  hqDrainCpuS: number | null;
}

export interface MetricDef {
  key: string;
  label: string;
  unit: string;
  /** null: informational, no ratio judgement. */
  better: Better | null;
  /** median over runs, or sum (loss counts must be zero in every run). */
  agg: 'median' | 'sum';
  digits: number;
  value(r: RunRecord): number | null;
}

/** One protocol pass of the MQTT.js driver per measured run. */
export interface MqttjsPass {
  key: string;
  protocol: 4 | 5;
}

export interface Scenario {
  name: string;
  title: string;
  kind: 'pubsub' | 'idle';
  /**
   * mqttbench: mqttbench alone. durable: mqttbench publishers (-S 0) plus the persistent-session
   * subscriber (bench/persistent-sub.c) on a broker with persistence on. mqttjs: the MQTT.js driver
   * (mqttjs-load.ts), `flags` are its arguments, run once per entry of `passes`. uplink: the
   * broker is a truck bridging to an HQ Mosquitto; mqttbench publishers (-S 0) on the truck, the
   * counting subscriber (bench/persistent-sub.c) at HQ; `flags` are the steady pass's.
   */
  driver: 'mqttbench' | 'durable' | 'mqttjs' | 'uplink';
  /** Broker started with durable state (Convoy store, Mosquitto persistence). */
  persistence: boolean;
  /** durable: messages the persistent subscriber waits for, measured run / warm-up. */
  expected?(quick: boolean, warmup: boolean): number;
  /** mqttjs: protocol passes per run (the order alternates from run to run). */
  passes?: readonly MqttjsPass[];
  /** Measured run flags (without host/port/pid/label/quiet, added by the runner). */
  flags(quick: boolean): string[];
  /** Warm-up pass on the same broker instance before measuring (JIT, allocator), or null. */
  warmupFlags(quick: boolean): string[] | null;
  /** mqttbench --timeout. */
  timeoutS(quick: boolean): number;
  metrics: MetricDef[];
}

const usable = (r: RunRecord): boolean => r.status !== 'failed';

const throughput = (label: string): MetricDef => ({
  key: 'throughput',
  label,
  unit: 'msgs/s',
  better: 'higher',
  agg: 'median',
  digits: 0,
  value: (r) => (usable(r) ? num(r.bench, 'throughput') : null),
});

const lostSum: MetricDef = {
  key: 'lost',
  label: 'lost messages (sum over runs, must be 0)',
  unit: 'msgs',
  better: null,
  agg: 'sum',
  digits: 0,
  value: (r) => num(r.bench, 'lost'),
};

const PAYLOAD = '64';
/** Total publish rate of the latency scenario. */
export const FIXED_RATE = 5000;
export const IDLE_CONNS_FULL = 5000;
const IDLE_CONNS_QUICK = 1000;

function idleConns(r: RunRecord): number | null {
  return num(r.bench, 'connected') ?? num(r.bench, 'conns');
}

const passJson = (r: RunRecord, key: string): BenchJson | null => r.passes[key] ?? null;

/** Payload of the durable scenario: the 200-byte message. */
export const DURABLE_PAYLOAD = 200;
const DURABLE_TOTAL = 100_000;
const DURABLE_TOTAL_QUICK = 10_000;
/** Client id of the persistent-session subscriber (clean session 0). */
export const DURABLE_CLIENT_ID = 'bench-durable-sub';
/** uplink-drain: messages of the steady pass, of the backlog (default; --uplink-backlog N), warm-up. */
export const UPLINK_STEADY = 100_000;
const UPLINK_STEADY_QUICK = 10_000;
export const UPLINK_BACKLOG = 100_000;
export const UPLINK_BACKLOG_QUICK = 10_000;
/** Client id and filter of the counting subscriber at HQ. */
export const UPLINK_SUB_ID = 'bench-hq-counter';
export const UPLINK_FILTER = 'fleet/#';
export const MQTTJS_TOTAL = 20_000;
const MQTTJS_TOTAL_QUICK = 4_000;

/** Messages delivered to the persistent session (what disk bytes and CPU are divided by). */
function durableDelivered(r: RunRecord): number | null {
  const n = num(passJson(r, 'sub'), 'unique');
  return n !== null && n > 0 ? n : null;
}

const durableFlags = (n: number): string[] => [
  '-m', 'pubsub', '-x', 'fanin', '-P', '10', '-S', '0', '-N', String(n), '-s', String(DURABLE_PAYLOAD), '-q', '1', '-w', '16',
];

/** mqttbench publishers of the uplink scenario: 10 publishers, QoS 1, 200 B, window 16, no subscriber. */
export const uplinkPubFlags = (n: number): string[] => durableFlags(n);

/** Messages lost in two passes of a run, summed over the runs (null when neither pass reported). */
const lostInPasses = (label: string, ...names: string[]): MetricDef => ({
  key: 'lost',
  label,
  unit: 'msgs',
  better: null,
  agg: 'sum',
  digits: 0,
  value: (r) => {
    const lost = names.map((n) => num(passJson(r, n), 'lost')).filter((x): x is number => x !== null);
    return lost.length === 0 ? null : lost.reduce((a, b) => a + b, 0);
  },
});

const up = (r: RunRecord): UplinkMeasures | null => (usable(r) ? (r.uplink ?? null) : null);

/** Backlog messages per second from HQ's first to its last arrival, or null. */
const onceLinkedRate = (backlog: number, d: { drainS: number | null; reconnectS: number | null } | null | undefined): number | null =>
  d?.drainS && d.reconnectS !== null && d.drainS > d.reconnectS ? backlog / (d.drainS - d.reconnectS) : null;

/** Truck bytes written per message of a phase (informational: Mosquitto's ~0 is a deferral). */
const uplinkDisk = (key: string, label: string, pick: (u: UplinkMeasures) => number | null, per: (u: UplinkMeasures) => number): MetricDef => ({
  key,
  label,
  unit: 'B',
  better: null,
  agg: 'median',
  digits: 0,
  value: (r) => {
    const u = up(r);
    const b = u ? pick(u) : null;
    return u && b !== null && per(u) > 0 ? b / per(u) : null;
  },
});

/** A figure of the uplink scenario, the median over runs of what `value` reads from their measures. */
const uplinkFigure = (
  key: string, label: string, unit: string, better: Better, digits: number, value: (u: UplinkMeasures) => number | null,
): MetricDef => ({
  key,
  label,
  unit,
  better,
  agg: 'median',
  digits,
  value: (r) => {
    const u = up(r);
    return u ? value(u) : null;
  },
});

/** A drain rate of the uplink scenario, msgs/s. */
const uplinkRate = (key: string, label: string, value: (u: UplinkMeasures) => number | null): MetricDef =>
  uplinkFigure(key, label, 'msgs/s', 'higher', 0, value);

/** An uplink figure where lower is better (one decimal). */
const uplinkLower = (key: string, label: string, unit: string, value: (u: UplinkMeasures) => number | null): MetricDef =>
  uplinkFigure(key, label, unit, 'lower', 1, value);

const mqttjsThroughput = (key: string, label: string): MetricDef => ({
  key: `${key}_throughput`,
  label,
  unit: 'msgs/s',
  better: 'higher',
  agg: 'median',
  digits: 0,
  value: (r) => (usable(r) ? num(passJson(r, key), 'throughput') : null),
});

export const SCENARIOS: readonly Scenario[] = [
  {
    name: 'fanin-qos0',
    title: 'fan-in QoS 0: 10 publishers -> 1 subscriber, 64 B',
    kind: 'pubsub',
    driver: 'mqttbench',
    persistence: false,
    flags: (q) => ['-m', 'pubsub', '-x', 'fanin', '-P', '10', '-S', '1', '-N', q ? '50000' : '500000', '-s', PAYLOAD, '-q', '0'],
    warmupFlags: (q) => ['-m', 'pubsub', '-x', 'fanin', '-P', '10', '-S', '1', '-N', q ? '5000' : '50000', '-s', PAYLOAD, '-q', '0'],
    timeoutS: (q) => (q ? 60 : 180),
    metrics: [throughput('throughput')],
  },
  {
    name: 'fanin-qos1',
    title: 'fan-in QoS 1: 10 publishers -> 1 subscriber, 64 B, window 16',
    kind: 'pubsub',
    driver: 'mqttbench',
    persistence: false,
    flags: (q) => [
      '-m', 'pubsub', '-x', 'fanin', '-P', '10', '-S', '1', '-N', q ? '20000' : '200000', '-s', PAYLOAD, '-q', '1', '-w', '16',
    ],
    warmupFlags: (q) => [
      '-m', 'pubsub', '-x', 'fanin', '-P', '10', '-S', '1', '-N', q ? '2000' : '20000', '-s', PAYLOAD, '-q', '1', '-w', '16',
    ],
    timeoutS: (q) => (q ? 60 : 180),
    metrics: [throughput('throughput'), lostSum],
  },
  {
    name: 'fanout-qos0',
    title: 'fan-out QoS 0: 1 publisher -> 50 subscribers, 64 B',
    kind: 'pubsub',
    driver: 'mqttbench',
    persistence: false,
    flags: (q) => ['-m', 'pubsub', '-x', 'fanout', '-P', '1', '-S', '50', '-N', q ? '2000' : '20000', '-s', PAYLOAD, '-q', '0'],
    warmupFlags: (q) => ['-m', 'pubsub', '-x', 'fanout', '-P', '1', '-S', '50', '-N', q ? '200' : '2000', '-s', PAYLOAD, '-q', '0'],
    timeoutS: (q) => (q ? 60 : 180),
    metrics: [throughput('delivered throughput')],
  },
  {
    name: 'latency-qos1',
    title: `QoS 1 at a fixed ${FIXED_RATE} msg/s: 10 publishers -> 1 subscriber, 64 B`,
    kind: 'pubsub',
    driver: 'mqttbench',
    persistence: false,
    flags: (q) => [
      '-m', 'pubsub', '-x', 'fanin', '-P', '10', '-S', '1', '-s', PAYLOAD, '-q', '1', '-w', '16',
      '-r', String(FIXED_RATE), '-d', q ? '3' : '15',
    ],
    warmupFlags: (q) => [
      '-m', 'pubsub', '-x', 'fanin', '-P', '10', '-S', '1', '-s', PAYLOAD, '-q', '1', '-w', '16',
      '-r', String(FIXED_RATE), '-d', q ? '1' : '2',
    ],
    timeoutS: (q) => (q ? 60 : 120),
    metrics: [
      {
        key: 'lat_p50_us',
        label: 'latency p50',
        unit: 'µs',
        better: 'lower',
        agg: 'median',
        digits: 1,
        value: (r) => (usable(r) ? num(r.bench, 'lat_p50_us') : null),
      },
      {
        key: 'lat_p99_us',
        label: 'latency p99',
        unit: 'µs',
        better: 'lower',
        agg: 'median',
        digits: 1,
        value: (r) => (usable(r) ? num(r.bench, 'lat_p99_us') : null),
      },
      {
        key: 'sched_lat_p99_us',
        label: 'latency p99 from scheduled send',
        unit: 'µs',
        better: 'lower',
        agg: 'median',
        digits: 1,
        value: (r) => (usable(r) ? num(r.bench, 'sched_lat_p99_us') : null),
      },
      {
        key: 'cpu_us_per_msg',
        label: 'broker CPU per message',
        unit: 'µs/msg',
        better: 'lower',
        agg: 'median',
        digits: 2,
        value: (r) => {
          const sent = num(r.bench, 'sent');
          return usable(r) && r.brokerCpuS !== null && sent ? (r.brokerCpuS * 1e6) / sent : null;
        },
      },
      lostSum,
    ],
  },
  {
    name: 'idle-conns',
    title: `${IDLE_CONNS_FULL} idle connections (--quick: ${IDLE_CONNS_QUICK}), keepalive 60 s`,
    kind: 'idle',
    driver: 'mqttbench',
    persistence: false,
    flags: (q) => [
      '-m', 'idle', '-C', String(q ? IDLE_CONNS_QUICK : IDLE_CONNS_FULL), '--keepalive', '60', '--settle', '2', '--hold', '3',
    ],
    warmupFlags: () => null,
    timeoutS: (q) => (q ? 60 : 120),
    metrics: [
      {
        key: 'rss_empty_mb',
        label: 'broker RSS, no clients',
        unit: 'MB',
        better: 'lower',
        agg: 'median',
        digits: 1,
        value: (r) => (usable(r) && r.brokerRssEmptyKb !== null ? r.brokerRssEmptyKb / 1024 : null),
      },
      {
        key: 'rss_conns_mb',
        label: 'broker RSS, connections up',
        unit: 'MB',
        better: 'lower',
        agg: 'median',
        digits: 1,
        value: (r) => {
          const held = num(r.bench, 'broker_rss_kb_held');
          return usable(r) && held !== null ? held / 1024 : null;
        },
      },
      {
        key: 'bytes_per_conn',
        label: 'RSS per connection',
        unit: 'B',
        better: 'lower',
        agg: 'median',
        digits: 0,
        value: (r) => {
          const held = num(r.bench, 'broker_rss_kb_held');
          const n = idleConns(r);
          if (!usable(r) || held === null || r.brokerRssEmptyKb === null || !n) return null;
          return ((held - r.brokerRssEmptyKb) * 1024) / n;
        },
      },
    ],
  },
  {
    name: 'durable-qos1',
    title:
      `durable QoS 1 fan-in: 10 publishers -> 1 persistent session (clean session 0), ${DURABLE_PAYLOAD} B, window 16, ` +
      'persistence on',
    kind: 'pubsub',
    driver: 'durable',
    persistence: true,
    expected: (q, warm) => (warm ? (q ? 2_000 : 10_000) : q ? DURABLE_TOTAL_QUICK : DURABLE_TOTAL),
    flags: (q) => durableFlags(q ? DURABLE_TOTAL_QUICK : DURABLE_TOTAL),
    warmupFlags: (q) => durableFlags(q ? 2_000 : 10_000),
    timeoutS: (q) => (q ? 60 : 180),
    metrics: [
      {
        key: 'throughput',
        label: 'delivered to the persistent session',
        unit: 'msgs/s',
        better: 'higher',
        agg: 'median',
        digits: 0,
        value: (r) => (usable(r) ? num(passJson(r, 'sub'), 'throughput') : null),
      },
      {
        key: 'ack_rate',
        label: 'publishes acknowledged (PUBACK)',
        unit: 'msgs/s',
        better: 'higher',
        agg: 'median',
        digits: 0,
        value: (r) => (usable(r) ? num(r.bench, 'send_rate') : null),
      },
      {
        key: 'ack_p50_us',
        label: 'PUBLISH -> PUBACK p50',
        unit: 'µs',
        better: 'lower',
        agg: 'median',
        digits: 0,
        value: (r) => (usable(r) ? num(r.bench, 'ack_p50_us') : null),
      },
      {
        key: 'disk_bytes_per_msg',
        label: 'disk written per message (Mosquitto: saves later)',
        unit: 'B',
        better: null,
        agg: 'median',
        digits: 0,
        value: (r) => {
          const n = durableDelivered(r);
          return usable(r) && r.diskWriteBytes !== null && n !== null ? r.diskWriteBytes / n : null;
        },
      },
      {
        key: 'cpu_us_per_msg',
        label: 'broker CPU per message',
        unit: 'µs/msg',
        better: 'lower',
        agg: 'median',
        digits: 2,
        value: (r) => {
          const n = durableDelivered(r);
          return usable(r) && r.brokerCpuS !== null && n !== null ? (r.brokerCpuS * 1e6) / n : null;
        },
      },
      {
        key: 'fsync_p50_us',
        label: 'disk fsync p50 just before the run (probe; Convoy commits pay one each)',
        unit: 'µs',
        better: null,
        agg: 'median',
        digits: 0,
        value: (r) => r.fsyncP50Us ?? null,
      },
      {
        key: 'lost',
        label: 'lost by the persistent session (sum over runs, must be 0)',
        unit: 'msgs',
        better: null,
        agg: 'sum',
        digits: 0,
        value: (r) => num(passJson(r, 'sub'), 'lost'),
      },
    ],
  },
  {
    name: 'v5-qos1',
    title: 'MQTT.js QoS 1 fan-in: 10 publishers -> 1 subscriber, 64 B, window 16; MQTT 5 (user property + expiry) and 3.1.1',
    kind: 'pubsub',
    driver: 'mqttjs',
    persistence: false,
    passes: [
      { key: 'v5', protocol: 5 },
      { key: 'v4', protocol: 4 },
    ],
    flags: (q) => ['--pubs', '10', '--total', String(q ? MQTTJS_TOTAL_QUICK : MQTTJS_TOTAL), '--size', PAYLOAD, '--window', '16'],
    warmupFlags: (q) => ['--pubs', '10', '--total', q ? '500' : '2000', '--size', PAYLOAD, '--window', '16'],
    timeoutS: (q) => (q ? 60 : 120),
    metrics: [
      mqttjsThroughput('v5', 'MQTT 5 throughput (user property + expiry)'),
      mqttjsThroughput('v4', 'MQTT 3.1.1 throughput, same driver (reference)'),
      {
        key: 'v5_vs_v4',
        label: 'MQTT 5 / MQTT 3.1.1 throughput on this broker',
        unit: 'ratio',
        better: null,
        agg: 'median',
        digits: 2,
        value: (r) => {
          const v5 = num(passJson(r, 'v5'), 'throughput');
          const v4 = num(passJson(r, 'v4'), 'throughput');
          return usable(r) && v5 !== null && v4 ? v5 / v4 : null;
        },
      },
      lostInPasses('lost messages, both protocols (sum over runs, must be 0)', 'v5', 'v4'),
    ],
  },
  {
    name: 'uplink-drain',
    title:
      'uplink to an HQ Mosquitto: truck broker (Convoy uplink / Mosquitto bridge, MQTT 5, QoS 1; HQ receive maximum = ' +
      'Convoy inflight_window = --uplink-window, which the Mosquitto bridge does not respect: inflight-probe.js) ' +
      `bench/# -> fleet/gw1/bench/#; 10 publishers, ${DURABLE_PAYLOAD} B; steady with the link up, then a backlog with HQ down`,
    kind: 'pubsub',
    driver: 'uplink',
    persistence: true,
    flags: (q) => uplinkPubFlags(q ? UPLINK_STEADY_QUICK : UPLINK_STEADY),
    warmupFlags: (q) => uplinkPubFlags(q ? 2_000 : 10_000),
    expected: (q, warm) => (warm ? (q ? 2_000 : 10_000) : q ? UPLINK_STEADY_QUICK : UPLINK_STEADY),
    timeoutS: (q) => (q ? 60 : 180),
    metrics: [
      {
        key: 'steady_rate',
        label: '(a) steady drain, link up: arriving at HQ',
        unit: 'msgs/s',
        better: 'higher',
        agg: 'median',
        digits: 0,
        value: (r) => (usable(r) ? num(passJson(r, 'steady'), 'throughput') : null),
      },
      {
        key: 'backlog_pub_rate',
        label: '(b) backlog accepted by the truck, HQ down (PUBACK)',
        unit: 'msgs/s',
        better: 'higher',
        agg: 'median',
        digits: 0,
        value: (r) => (usable(r) ? num(passJson(r, 'backlog_pub'), 'send_rate') : null),
      },
      {
        key: 'backlog_drain_s',
        label: '(b) backlog: HQ start -> all at HQ',
        unit: 's',
        better: 'lower',
        agg: 'median',
        digits: 2,
        value: (r) => up(r)?.drainS ?? null,
      },
      uplinkRate('backlog_rate', '(b) backlog drain rate, N / (HQ start -> all at HQ)', (u) => (u.drainS ? u.backlog / u.drainS : null)),
      uplinkRate('backlog_link_rate', '(b) backlog drain rate once linked, N / (first -> last at HQ)', (u) => onceLinkedRate(u.backlog, u)),
      {
        key: 'reconnect_s',
        label: '(b) HQ start -> first message at HQ (reconnect, ~1 s retry)',
        unit: 's',
        better: null,
        agg: 'median',
        digits: 2,
        value: (r) => up(r)?.reconnectS ?? null,
      },
      uplinkLower('drain_cpu_us_per_msg', '(b) truck broker CPU per backlog message, drain', 'µs/msg', (u) =>
        u.drainCpuS !== null && u.backlog > 0 ? (u.drainCpuS * 1e6) / u.backlog : null),
      uplinkLower('hq_drain_cpu_us_per_msg', '(b) HQ broker CPU per backlog message, drain', 'µs/msg', (u) =>
        u.hqDrainCpuS !== null && u.backlog > 0 ? (u.hqDrainCpuS * 1e6) / u.backlog : null),
      uplinkLower('backlog_rss_mb', '(b) truck broker RSS holding the backlog (HQ down)', 'MB', (u) =>
        u.backlogRssKb !== null ? u.backlogRssKb / 1024 : null),
      uplinkDisk('disk_backlog_pub', '(c) disk per message, backlog publish (HQ down)', (u) => u.backlogPubWriteBytes, (u) => u.backlog),
      uplinkDisk('disk_backlog_drain', '(c) disk per message, backlog drain', (u) => u.drainWriteBytes, (u) => u.backlog),
      uplinkDisk('disk_steady', '(c) disk per message, steady (publish + drain)', (u) => u.steadyWriteBytes, (u) => u.steady),
      uplinkRate('again_link_rate', '(d) the same backlog again, same truck process: drain rate once linked', (u) => onceLinkedRate(u.backlog, u.again)),
      uplinkLower('again_cpu_us_per_msg', '(d) the same backlog again: truck broker CPU per message', 'µs/msg', (u) =>
        u.again && u.again.drainCpuS !== null && u.backlog > 0 ? (u.again.drainCpuS * 1e6) / u.backlog : null),
      uplinkLower('again_hq_cpu_us_per_msg', '(d) the same backlog again: HQ broker CPU per message', 'µs/msg', (u) =>
        u.again && u.again.hqDrainCpuS !== null && u.backlog > 0 ? (u.again.hqDrainCpuS * 1e6) / u.backlog : null),
      lostInPasses('lost at HQ, steady + both backlogs (sum over runs, must be 0)', 'steady', 'drain', 'drain_again'),
    ],
  },
];

export function findScenario(key: string): Scenario | undefined {
  const n = Number(key);
  if (Number.isInteger(n) && n >= 1 && n <= SCENARIOS.length) return SCENARIOS[n - 1];
  return SCENARIOS.find((s) => s.name === key);
}
