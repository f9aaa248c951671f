// `npm run bench`: Convoy vs Mosquitto, same machine, same run, same load generator.
//
//   node dist/scripts/bench/run.js [--runs N] [--quick] [--only NAME[,NAME]] [--brokers A[,B]] [--no-save]
//
// See bench/README.md for what each scenario measures and how to read the ratios.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import {
  BROKER_KINDS,
  MAX_INFLIGHT,
  MOSQUITTO_BIN,
  convoyConfig,
  convoyMain,
  convoyNodeFlags,
  isBrokerKind,
  mosquittoConfig,
  mosquittoVersion,
  removeTempDirsSync,
  startBroker,
  type BrokerSide,
} from './brokers.js';
import { ensureMqttbench, mqttbenchVersion, num, runMqttbench } from './mqttbench.js';
import { clockTicks, isRunning, killAllChildren, readCpuTicks, readStatusKb, sleep } from './proc.js';
import { SCENARIOS, findScenario, type MetricDef, type RunRecord, type Scenario } from './scenarios.js';

const USAGE = `usage: node dist/scripts/bench/run.js [options]   (or: npm run bench -- [options])

  --runs N            measured runs per broker and scenario (default 3, --quick: 1)
  --quick             small smoke version of every scenario
  --only NAME[,NAME]  run only these scenarios (name or 1-based number):
                      ${SCENARIOS.map((s, i) => `${i + 1}=${s.name}`).join(', ')}
  --brokers A[,B]     brokers compared, first / second (default convoy,mosquitto;
                      env CONVOY_BENCH_BROKERS). One name = that broker on both sides,
                      e.g. --brokers mosquitto for a Mosquitto-vs-Mosquitto sanity check
  --no-save           do not write bench/results/*.json
  -h, --help          this text

env: CONVOY_MQTTBENCH_SRC (mqttbench.c, default ../shared/tools/mqttbench/mqttbench.c from the
     project root), CONVOY_BENCH_MOSQUITTO (default /usr/sbin/mosquitto),
     CONVOY_BENCH_MAIN (Convoy entry point, default dist/src/main.js),
     CONVOY_BENCH_NODE_FLAGS (node flags for Convoy, e.g. --max-semi-space-size=4; default none)`;

interface Options {
  runs: number;
  quick: boolean;
  scenarios: Scenario[];
  sides: [BrokerSide, BrokerSide];
  save: boolean;
}

function parseCli(argv: string[]): Options | null {
  const { values } = parseArgs({
    args: argv,
    options: {
      runs: { type: 'string' },
      quick: { type: 'boolean', default: false },
      only: { type: 'string', multiple: true },
      brokers: { type: 'string' },
      'no-save': { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
    allowPositionals: false,
  });
  if (values.help) {
    console.log(USAGE);
    return null;
  }
  const quick = values.quick ?? false;
  const runs = values.runs === undefined ? (quick ? 1 : 3) : Number(values.runs);
  if (!Number.isInteger(runs) || runs < 1) throw new Error(`--runs must be a positive integer, got ${values.runs}`);

  let scenarios: Scenario[] = [...SCENARIOS];
  if (values.only && values.only.length > 0) {
    const keys = values.only.flatMap((s) => s.split(',')).map((s) => s.trim()).filter((s) => s.length > 0);
    scenarios = keys.map((k) => {
      const s = findScenario(k);
      if (!s) throw new Error(`unknown scenario '${k}'; known: ${SCENARIOS.map((x) => x.name).join(', ')}`);
      return s;
    });
  }

  const brokerList = (values.brokers ?? process.env.CONVOY_BENCH_BROKERS ?? 'convoy,mosquitto')
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
  if (brokerList.length < 1 || brokerList.length > 2) throw new Error('--brokers takes one or two broker names');
  const kinds = brokerList.map((b) => {
    if (!isBrokerKind(b)) throw new Error(`unknown broker '${b}'; known: ${BROKER_KINDS.join(', ')}`);
    return b;
  });
  const a = kinds[0] ?? 'convoy';
  const b = kinds[1] ?? a;
  const sides: [BrokerSide, BrokerSide] =
    a === b
      ? [
          { kind: a, label: `${a}-A` },
          { kind: b, label: `${b}-B` },
        ]
      : [
          { kind: a, label: a },
          { kind: b, label: b },
        ];
  return { runs, quick, scenarios, sides, save: !(values['no-save'] ?? false) };
}

function findRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pkg = path.join(dir, 'package.json');
    if (existsSync(pkg)) {
      const parsed = JSON.parse(readFileSync(pkg, 'utf8')) as { name?: unknown };
      if (parsed.name === 'convoy') return dir;
    }
    const up = path.dirname(dir);
    if (up === dir) throw new Error('cannot find the Convoy project root (package.json with name "convoy")');
    dir = up;
  }
}

function sh(cmd: string, args: string[], cwd?: string): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', cwd, stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return '';
  }
}

function machineInfo(root: string): Record<string, unknown> {
  const cpuinfo = existsSync('/proc/cpuinfo') ? readFileSync('/proc/cpuinfo', 'utf8') : '';
  const model = /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1]?.trim() ?? os.cpus()[0]?.model ?? 'unknown';
  const pkg = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')) as { version?: unknown };
  const commit = sh('git', ['rev-parse', '--short', 'HEAD'], root);
  const dirty = sh('git', ['status', '--porcelain', '--untracked-files=no'], root).length > 0;
  return {
    cpu_model: model,
    nproc: os.availableParallelism(),
    mem_total_mb: Math.round(os.totalmem() / 2 ** 20),
    kernel: `${os.type()} ${os.release()}`,
    node: process.version,
    mosquitto: mosquittoVersion(),
    convoy_version: typeof pkg.version === 'string' ? pkg.version : 'unknown',
    convoy_commit: commit ? `${commit}${dirty ? '-dirty' : ''}` : 'unknown',
    clk_tck: clockTicks(),
  };
}

function log(msg: string): void {
  process.stderr.write(`${msg}\n`);
}

function commonFlags(port: number, pid: number, label: string): string[] {
  return ['-H', '127.0.0.1', '-p', String(port), '--broker-pid', String(pid), '-T', '1', '-Q', '-l', label];
}

async function runOne(
  sc: Scenario,
  side: BrokerSide,
  run: number,
  opts: Options,
  root: string,
  binary: string,
): Promise<RunRecord> {
  const broker = await startBroker(side, root);
  const rec: RunRecord = {
    scenario: sc.name,
    side: side.label,
    kind: side.kind,
    run,
    status: 'failed',
    exitCode: null,
    brokerCpuS: null,
    brokerRssEmptyKb: null,
    warmup: null,
    wallS: 0,
    bench: null,
  };
  try {
    const timeoutS = sc.timeoutS(opts.quick);
    const killAfterMs = (timeoutS + 60) * 1000;
    const warm = sc.warmupFlags(opts.quick);
    if (warm) {
      const w = await runMqttbench(
        binary,
        [...commonFlags(broker.port, broker.pid, `${sc.name}-warmup`), ...warm, '-t', String(timeoutS)],
        killAfterMs,
      );
      rec.warmup = { exitCode: w.exitCode, throughput: num(w.json, 'throughput') };
    }
    if (sc.kind === 'idle') {
      await sleep(1500); // let the freshly started broker settle before "empty" is sampled
      rec.brokerRssEmptyKb = readStatusKb(broker.pid, 'VmRSS');
    }
    const ticks0 = readCpuTicks(broker.pid);
    const r = await runMqttbench(
      binary,
      [...commonFlags(broker.port, broker.pid, sc.name), ...sc.flags(opts.quick), '-t', String(timeoutS)],
      killAfterMs,
    );
    const alive = isRunning(broker.proc);
    if (alive) rec.brokerCpuS = (readCpuTicks(broker.pid) - ticks0) / clockTicks();
    rec.exitCode = r.exitCode;
    rec.bench = r.json;
    rec.wallS = r.wallS;
    if (r.exitCode === 1) throw new Error(`mqttbench usage error:\n${r.stderr}`);
    rec.status = r.exitCode === 0 ? 'ok' : r.exitCode === 2 ? 'loss' : 'failed';
    if (!alive) {
      rec.status = 'failed';
      rec.error = `broker died during the run:\n${broker.proc.stderr.toString().slice(-2000)}`;
    } else if (rec.status === 'failed') {
      const jsonErr = typeof r.json?.error === 'string' ? r.json.error : '';
      rec.error = `mqttbench exit ${r.exitCode ?? r.signal ?? '?'} ${jsonErr} ${r.stderr.trim().slice(-1000)}`.trim();
    }
  } finally {
    await broker.stop();
  }
  return rec;
}

function median(xs: number[]): number | null {
  if (xs.length === 0) return null;
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  const hi = s[mid] ?? 0;
  return s.length % 2 === 1 ? hi : ((s[mid - 1] ?? 0) + hi) / 2;
}

interface SideResult {
  value: number | null;
  values: (number | null)[];
  okRuns: number;
  runs: number;
}

interface MetricResult {
  scenario: string;
  metric: string;
  label: string;
  unit: string;
  better: string | null;
  agg: string;
  sides: Record<string, SideResult>;
  ratio: number | null;
}

function aggregate(sc: Scenario, m: MetricDef, records: RunRecord[], sides: BrokerSide[]): MetricResult {
  const out: Record<string, SideResult> = {};
  for (const side of sides) {
    const rs = records.filter((r) => r.side === side.label);
    const values = rs.map((r) => m.value(r));
    const present = values.filter((v): v is number => v !== null);
    const value = m.agg === 'sum' ? (present.length > 0 ? present.reduce((a, b) => a + b, 0) : null) : median(present);
    out[side.label] = { value, values, okRuns: rs.filter((r) => r.status !== 'failed').length, runs: rs.length };
  }
  const a = out[sides[0]?.label ?? '']?.value ?? null;
  const b = out[sides[1]?.label ?? '']?.value ?? null;
  const ratio = m.better !== null && a !== null && b !== null && b !== 0 ? a / b : null;
  return {
    scenario: sc.name,
    metric: m.key,
    label: m.label,
    unit: m.unit,
    better: m.better,
    agg: m.agg,
    sides: out,
    ratio,
  };
}

function fmt(v: number | null, digits: number): string {
  if (v === null) return 'n/a';
  return v.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

function renderTable(results: MetricResult[], sides: BrokerSide[]): string {
  const [a, b] = [sides[0]?.label ?? 'A', sides[1]?.label ?? 'B'];
  const header = ['scenario', 'metric', `${a} median`, `${b} median`, `${a}/${b}`, 'better'];
  const rows: string[][] = [header];
  for (const r of results) {
    const sc = SCENARIOS.find((s) => s.name === r.scenario);
    const digits = sc?.metrics.find((m) => m.key === r.metric)?.digits ?? 1;
    const cell = (label: string): string => {
      const s = r.sides[label];
      if (!s) return 'n/a';
      const partial = s.okRuns < s.runs ? ` (${s.okRuns}/${s.runs} ok)` : '';
      return `${fmt(s.value, digits)}${partial}`;
    };
    rows.push([
      r.scenario,
      `${r.label} [${r.unit}]`,
      cell(a),
      cell(b),
      r.ratio === null ? '-' : r.ratio.toFixed(2),
      r.better === null ? (r.agg === 'sum' ? 'must be 0' : '') : `${r.better} is better`,
    ]);
  }
  const widths = header.map((_, i) => Math.max(...rows.map((row) => (row[i] ?? '').length)));
  const right = new Set([2, 3, 4]);
  const line = (row: string[]): string =>
    row.map((c, i) => (right.has(i) ? c.padStart(widths[i] ?? 0) : c.padEnd(widths[i] ?? 0))).join(' | ').trimEnd();
  const sep = widths.map((w) => '-'.repeat(w)).join('-+-');
  return [line(header), sep, ...rows.slice(1).map(line)].join('\n');
}

function runSummary(r: RunRecord): string {
  const j = r.bench;
  const parts: string[] = [`exit ${r.exitCode ?? '?'}`];
  if (num(j, 'throughput') !== null) parts.push(`${fmt(num(j, 'throughput'), 0)} msgs/s`);
  if (num(j, 'rate') && num(j, 'lat_p50_us') !== null)
    parts.push(`p50 ${fmt(num(j, 'lat_p50_us'), 1)} µs, p99 ${fmt(num(j, 'lat_p99_us'), 1)} µs`);
  const lost = num(j, 'lost');
  if (lost) parts.push(`LOST ${lost}`);
  if (r.brokerCpuS !== null && j?.mode === 'pubsub') parts.push(`broker cpu ${r.brokerCpuS.toFixed(2)} s`);
  if (num(j, 'loader_cpu_pct') !== null) parts.push(`loader cpu ${fmt(num(j, 'loader_cpu_pct'), 0)}%`);
  if (r.brokerRssEmptyKb !== null) {
    parts.push(`rss ${fmt(r.brokerRssEmptyKb / 1024, 1)} -> ${fmt((num(j, 'broker_rss_kb_held') ?? 0) / 1024, 1)} MB`);
  }
  parts.push(`${r.wallS.toFixed(1)} s`);
  if (r.error) parts.push(`ERROR: ${r.error.split('\n').slice(0, 3).join(' ')}`);
  return parts.join(', ');
}

function saveResults(root: string, date: Date, doc: unknown): string[] {
  const dir = path.join(root, 'bench', 'results');
  mkdirSync(dir, { recursive: true });
  const stamp = date.toISOString().replace(/\.\d+Z$/, 'Z').replace(/:/g, '-');
  const text = `${JSON.stringify(doc, null, 2)}\n`;
  const files = [path.join(dir, `${stamp}.json`), path.join(dir, 'latest.json')];
  for (const f of files) {
    const tmp = `${f}.tmp`;
    writeFileSync(tmp, text);
    renameSync(tmp, f);
  }
  return files;
}

async function main(): Promise<void> {
  const opts = parseCli(process.argv.slice(2));
  if (!opts) return;
  const started = Date.now();
  const date = new Date();
  const root = findRoot();
  const mb = ensureMqttbench(root);
  if (opts.sides.some((s) => s.kind === 'convoy') && !existsSync(convoyMain(root))) {
    throw new Error(`${convoyMain(root)} is missing: run \`npx tsc -p .\` first (npm run bench does)`);
  }
  if (opts.sides.some((s) => s.kind === 'mosquitto') && !existsSync(MOSQUITTO_BIN)) {
    throw new Error(`mosquitto not found at ${MOSQUITTO_BIN} (set CONVOY_BENCH_MOSQUITTO)`);
  }
  const machine = machineInfo(root);
  const sides = opts.sides;
  log(
    `bench: ${sides.map((s) => s.label).join(' vs ')}, ${opts.runs} run(s) each, ` +
      `${opts.quick ? 'quick, ' : ''}scenarios: ${opts.scenarios.map((s) => s.name).join(', ')}`,
  );
  log(`mqttbench: ${mb.binary}${mb.rebuilt ? ' (rebuilt)' : ''}`);

  const all: RunRecord[] = [];
  const results: MetricResult[] = [];
  const scenarioDocs: unknown[] = [];
  for (const sc of opts.scenarios) {
    log(`\n== ${sc.name}: ${sc.title}`);
    const records: RunRecord[] = [];
    for (let run = 1; run <= opts.runs; run++) {
      for (const side of sides) {
        const rec = await runOne(sc, side, run, opts, root, mb.binary);
        log(`  run ${run}/${opts.runs} ${side.label.padEnd(12)} ${runSummary(rec)}`);
        records.push(rec);
      }
    }
    all.push(...records);
    const scResults = sc.metrics.map((m) => aggregate(sc, m, records, sides));
    results.push(...scResults);
    scenarioDocs.push({
      name: sc.name,
      title: sc.title,
      mqttbench_flags: [
        ...commonFlags(0, 0, sc.name).map((f, i, arr) =>
          arr[i - 1] === '-p' ? '<port>' : arr[i - 1] === '--broker-pid' ? '<broker pid>' : f,
        ),
        ...sc.flags(opts.quick),
        '-t',
        String(sc.timeoutS(opts.quick)),
      ].join(' '),
      warmup_flags: sc.warmupFlags(opts.quick)?.join(' ') ?? null,
      results: scResults,
      runs: records,
    });
  }

  const table = renderTable(results, sides);
  const [sa, sb] = sides;
  const header = [
    '',
    `Convoy benchmark ${date.toISOString()}${opts.quick ? ' (QUICK smoke run, not representative)' : ''}`,
    `machine: ${String(machine.cpu_model)}, nproc ${String(machine.nproc)}, ${String(machine.kernel)}`,
    ...(sides.some((s) => s.kind === 'convoy')
      ? [`convoy started as: node ${[...convoyNodeFlags(), path.relative(root, convoyMain(root))].join(' ')} run --config FILE`]
      : []),
    `node ${String(machine.node)}, mosquitto ${String(machine.mosquitto)}, convoy ${String(machine.convoy_version)} (${String(machine.convoy_commit)})`,
    `medians of ${opts.runs} interleaved run(s) per broker; ratio = ${sa.label}/${sb.label} ` +
      `(for "higher is better" > 1 means ${sa.label} is better, for "lower is better" < 1 means ${sa.label} is better)`,
    '',
  ].join('\n');
  console.log(header);
  console.log(table);
  const bad = all.filter((r) => r.status !== 'ok');
  const qos0Loss = all.filter((r) => r.status === 'ok' && (num(r.bench, 'lost') ?? 0) > 0);
  // A load generator near 100 % of its one thread means the broker may be faster than measured.
  const loaderBound = all.filter((r) => !num(r.bench, 'rate') && (num(r.bench, 'loader_cpu_pct') ?? 0) >= 90);
  if (bad.length > 0 || qos0Loss.length > 0 || loaderBound.length > 0) {
    console.log('\nproblems:');
    for (const r of loaderBound) {
      console.log(
        `  ${r.scenario} run ${r.run} ${r.side}: load generator at ${fmt(num(r.bench, 'loader_cpu_pct'), 0)}% CPU, ` +
          'the broker may be faster than this figure',
      );
    }
    for (const r of bad) console.log(`  ${r.scenario} run ${r.run} ${r.side}: ${r.status} (exit ${r.exitCode ?? '?'})`);
    for (const r of qos0Loss) console.log(`  ${r.scenario} run ${r.run} ${r.side}: lost ${num(r.bench, 'lost')} QoS 0 messages`);
  }
  const elapsed = (Date.now() - started) / 1000;
  console.log(`\ntotal ${elapsed.toFixed(0)} s`);

  if (opts.save) {
    const doc = {
      date: date.toISOString(),
      quick: opts.quick,
      runs_per_broker: opts.runs,
      elapsed_s: Math.round(elapsed),
      sides: sides.map((s) => ({ label: s.label, kind: s.kind })),
      machine,
      mqttbench: { source: mb.source, binary: mb.binary, build: `gcc ${mb.gccArgs.join(' ')}`, version: mqttbenchVersion(mb.binary) },
      broker_configs: {
        convoy: convoyConfig(0, '<tmpdir>/data').replace('port = 0', 'port = <free port>'),
        mosquitto: mosquittoConfig(0).replace('listener 0', 'listener <free port>'),
        max_inflight: MAX_INFLIGHT,
        convoy_command: ['node', ...convoyNodeFlags(), path.relative(root, convoyMain(root)), 'run', '--config', '<file>'].join(' '),
      },
      table: results.map((r) => ({
        scenario: r.scenario,
        metric: `${r.label} [${r.unit}]`,
        better: r.better,
        [sa.label]: r.sides[sa.label]?.value ?? null,
        [sb.label]: r.sides[sb.label]?.value ?? null,
        ratio: r.ratio,
      })),
      table_text: table,
      scenarios: scenarioDocs,
    };
    const files = saveResults(root, date, doc);
    console.log(`results: ${files.map((f) => path.relative(root, f)).join(', ')}`);
  }
}

let interrupted = false;
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.on(sig, () => {
    if (interrupted) return;
    interrupted = true;
    log(`\n${sig}: stopping brokers and load generators`);
    killAllChildren();
    removeTempDirsSync();
    process.exit(130);
  });
}
process.on('exit', () => {
  killAllChildren();
  removeTempDirsSync();
});

main().catch((err: unknown) => {
  killAllChildren();
  log(`bench failed: ${err instanceof Error ? err.message : String(err)}`);
  process.exitCode = 1;
});
