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
  /** Broker VmRSS right before mqttbench started (idle scenario). */
  brokerRssEmptyKb: number | null;
  warmup: { exitCode: number | null; throughput: number | null } | null;
  wallS: number;
  bench: BenchJson | null;
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

export interface Scenario {
  name: string;
  title: string;
  kind: 'pubsub' | 'idle';
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

export const SCENARIOS: readonly Scenario[] = [
  {
    name: 'fanin-qos0',
    title: 'fan-in QoS 0: 10 publishers -> 1 subscriber, 64 B',
    kind: 'pubsub',
    flags: (q) => ['-m', 'pubsub', '-x', 'fanin', '-P', '10', '-S', '1', '-N', q ? '50000' : '500000', '-s', PAYLOAD, '-q', '0'],
    warmupFlags: (q) => ['-m', 'pubsub', '-x', 'fanin', '-P', '10', '-S', '1', '-N', q ? '5000' : '50000', '-s', PAYLOAD, '-q', '0'],
    timeoutS: (q) => (q ? 60 : 180),
    metrics: [throughput('throughput')],
  },
  {
    name: 'fanin-qos1',
    title: 'fan-in QoS 1: 10 publishers -> 1 subscriber, 64 B, window 16',
    kind: 'pubsub',
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
    flags: (q) => ['-m', 'pubsub', '-x', 'fanout', '-P', '1', '-S', '50', '-N', q ? '2000' : '20000', '-s', PAYLOAD, '-q', '0'],
    warmupFlags: (q) => ['-m', 'pubsub', '-x', 'fanout', '-P', '1', '-S', '50', '-N', q ? '200' : '2000', '-s', PAYLOAD, '-q', '0'],
    timeoutS: (q) => (q ? 60 : 180),
    metrics: [throughput('delivered throughput')],
  },
  {
    name: 'latency-qos1',
    title: `QoS 1 at a fixed ${FIXED_RATE} msg/s: 10 publishers -> 1 subscriber, 64 B`,
    kind: 'pubsub',
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
];

export function findScenario(key: string): Scenario | undefined {
  const n = Number(key);
  if (Number.isInteger(n) && n >= 1 && n <= SCENARIOS.length) return SCENARIOS[n - 1];
  return SCENARIOS.find((s) => s.name === key);
}
