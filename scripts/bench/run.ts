// `npm run bench`: Convoy vs Mosquitto, same machine, same run, same load generator.
//
//   node dist/scripts/bench/run.js [--runs N] [--quick] [--only NAME[,NAME]] [--brokers A[,B]] [--no-save]
//
// See bench/README.md for what each scenario measures and how to read the ratios.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import {
  MAX_INFLIGHT,
  MOSQUITTO_BIN,
  UPLINK_INFLIGHT,
  benchTmpRoot,
  brokerKinds,
  convoyConfig,
  convoyMain,
  convoyNodeFlags,
  convoyUplinkConfig,
  findRoot,
  freePort,
  freeStablePort,
  fsType,
  makeDataDir,
  makeTempDir,
  mosquittoConfig,
  mosquittoHqConfig,
  mosquittoTruckConfig,
  mosquittoVersion,
  removeTempDir,
  removeTempDirsSync,
  runBenchScript,
  setSlowFsync,
  startBroker,
  startConfigured,
  truckUplinkConfig,
  type BrokerSide,
  type ConfiguredBroker,
} from './brokers.js';
import {
  ensureMqttbench, ensurePersistentSub, ensureSlowFsync, finishPersistentSub, mqttbenchVersion, num, runMqttbench,
  startPersistentSub, type BenchJson, type BenchRun,
} from './mqttbench.js';
import { clockTicks, fsyncProbeUs, isRunning, killAllChildren, pinToCpus, readCpuTicks, readMainThreadCpuTicks, readStatusKb, readWriteBytes, sleep } from './proc.js';
import {
  DURABLE_CLIENT_ID,
  SCENARIOS,
  UPLINK_BACKLOG,
  UPLINK_BACKLOG_QUICK,
  UPLINK_FILTER,
  UPLINK_SUB_ID,
  findScenario,
  uplinkPubFlags,
  type MetricDef,
  type RunRecord,
  type Scenario,
  type UplinkDrainAgain,
  type UplinkMeasures,
} from './scenarios.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
/** The MQTT.js driver of v5-qos1 (compiled). */
const MQTTJS_LOAD = path.join(HERE, 'mqttjs-load.js');
/** mqttbench's default topic prefix: publisher i sends on bench/<i>. */
const DURABLE_FILTER = 'bench/#';
/**
 * After the last delivery to the persistent session, wait this long before write_bytes and CPU
 * are read: the commit deleting the last delivered rows and a WAL checkpoint land in the window.
 */
const DURABLE_SETTLE_MS = 1000;
/** How long the persistent subscriber may still take after mqttbench's publishers are done. */
const DURABLE_DRAIN_MS = 15_000;

const USAGE = `usage: node dist/scripts/bench/run.js [options]   (or: npm run bench -- [options])

  --runs N            measured runs per broker and scenario (default 3, --quick: 1)
  --quick             small smoke version of every scenario
  --only NAME[,NAME]  run only these scenarios (name or 1-based number):
                      ${SCENARIOS.map((s, i) => `${i + 1}=${s.name}`).join(', ')}
  --brokers A[,B]     brokers compared, first / second (default convoy,mosquitto;
                      env CONVOY_BENCH_BROKERS). One name = that broker on both sides,
                      e.g. --brokers mosquitto for a Mosquitto-vs-Mosquitto sanity check
  --uplink-backlog N  uplink-drain: backlog size (default ${UPLINK_BACKLOG}, --quick ${UPLINK_BACKLOG_QUICK})
  --uplink-window N   uplink-drain: HQ's receive maximum (its max_inflight_messages) and Convoy's
                      inflight_window (default ${UPLINK_INFLIGHT})
  --uplink-hq-cpu N   uplink-drain: HQ and its counting subscriber run on CPU N only, the truck
                      broker on the other CPUs (taskset), as when HQ is another machine: the
                      drain then measures what HQ takes, not how the two share the cores
                      (default: no placement; the publishers are never placed)
  --fsync-delay-us N  every fsync/fdatasync of the brokers under test (the uplink's truck, not
                      HQ) takes N µs longer: storage as slow as an SD card (LD_PRELOAD shim
                      bench/slow-fsync.c, built with gcc; default 0 = the machine's own disk)
  --storage-kb-s N    with the same shim: an fsync also waits for the bytes written to that file
                      since its last sync at N KB/s (an SD card's write bandwidth, e.g. 10000)
  --no-save           do not write bench/results/*.json
  -h, --help          this text

env: CONVOY_MQTTBENCH_SRC (mqttbench.c, default ../shared/tools/mqttbench/mqttbench.c from the
     project root), CONVOY_BENCH_MOSQUITTO (default /usr/sbin/mosquitto),
     CONVOY_BENCH_MAIN (Convoy entry point, default dist/src/main.js),
     CONVOY_BENCH_NODE_FLAGS (node flags for Convoy, e.g. --max-semi-space-size=4; default none),
     CONVOY_BENCH_TMPDIR (parent of the brokers' temp/data dirs, default the OS temp dir; must be
     a real disk for the durable scenario's bytes-written figure)`;

interface Options {
  runs: number;
  quick: boolean;
  scenarios: Scenario[];
  sides: [BrokerSide, BrokerSide];
  save: boolean;
  /** uplink-drain backlog size. */
  uplinkBacklog: number;
  /** uplink-drain: HQ's receive maximum and Convoy's inflight_window. */
  uplinkWindow: number;
  /** uplink-drain: the CPU HQ and its subscriber are pinned to (the truck gets the others), or null. */
  uplinkHqCpu: number | null;
  /** Added to every fsync of the brokers under test (0: none). */
  fsyncDelayUs: number;
  /** Write bandwidth an fsync of the brokers under test waits for, KB/s (0: none). */
  storageKbS: number;
}

/** What --fsync-delay-us and --storage-kb-s do to the brokers under test, or null when neither is set. */
function slowStorageText(opts: Options): string | null {
  const parts = [
    ...(opts.fsyncDelayUs > 0 ? [`every fsync takes ${opts.fsyncDelayUs} µs longer (--fsync-delay-us)`] : []),
    ...(opts.storageKbS > 0 ? [`and waits for the bytes written since the last one at ${opts.storageKbS} KB/s (--storage-kb-s)`] : []),
  ];
  return parts.length > 0 ? `${parts.join(', ')}, brokers under test only` : null;
}

function parseCli(argv: string[]): Options | null {
  const { values } = parseArgs({
    args: argv,
    options: {
      runs: { type: 'string' },
      quick: { type: 'boolean', default: false },
      only: { type: 'string', multiple: true },
      brokers: { type: 'string' },
      'uplink-backlog': { type: 'string' },
      'uplink-window': { type: 'string' },
      'uplink-hq-cpu': { type: 'string' },
      'fsync-delay-us': { type: 'string' },
      'storage-kb-s': { type: 'string' },
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

  const kinds = brokerKinds(values.brokers ?? process.env.CONVOY_BENCH_BROKERS ?? 'convoy,mosquitto');
  if (kinds.length < 1 || kinds.length > 2) throw new Error('--brokers takes one or two broker names');
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
  const backlogArg = values['uplink-backlog'];
  const uplinkBacklog = backlogArg === undefined ? (quick ? UPLINK_BACKLOG_QUICK : UPLINK_BACKLOG) : Number(backlogArg);
  if (!Number.isInteger(uplinkBacklog) || uplinkBacklog < 10) throw new Error(`--uplink-backlog must be an integer >= 10, got ${backlogArg}`);
  const fsyncDelayUs = Number(values['fsync-delay-us'] ?? 0);
  if (!Number.isInteger(fsyncDelayUs) || fsyncDelayUs < 0) throw new Error(`--fsync-delay-us must be an integer >= 0, got ${values['fsync-delay-us']}`);
  const storageKbS = Number(values['storage-kb-s'] ?? 0);
  if (!Number.isInteger(storageKbS) || storageKbS < 0) throw new Error(`--storage-kb-s must be an integer >= 0, got ${values['storage-kb-s']}`);
  const uplinkWindow = Number(values['uplink-window'] ?? UPLINK_INFLIGHT);
  if (!Number.isInteger(uplinkWindow) || uplinkWindow < 1 || uplinkWindow > 65535) throw new Error(`--uplink-window must be an integer 1-65535, got ${values['uplink-window']}`);
  const hqCpuArg = values['uplink-hq-cpu'];
  const uplinkHqCpu = hqCpuArg === undefined ? null : Number(hqCpuArg);
  const nproc = os.availableParallelism();
  if (uplinkHqCpu !== null && (!Number.isInteger(uplinkHqCpu) || uplinkHqCpu < 0 || uplinkHqCpu >= nproc || nproc < 2)) {
    throw new Error(`--uplink-hq-cpu must be a CPU number 0-${nproc - 1} on a machine with at least 2 CPUs, got ${hqCpuArg}`);
  }
  return { runs, quick, scenarios, sides, save: !(values['no-save'] ?? false), uplinkBacklog, uplinkWindow, uplinkHqCpu, fsyncDelayUs, storageKbS };
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
    bench_tmp_dir: benchTmpRoot(),
    bench_tmp_fs: fsType(benchTmpRoot()),
  };
}

function log(msg: string): void {
  process.stderr.write(`${msg}\n`);
}

function commonFlags(port: number, pid: number, label: string): string[] {
  return ['-H', '127.0.0.1', '-p', String(port), '--broker-pid', String(pid), '-T', '1', '-Q', '-l', label];
}

interface Ctx {
  opts: Options;
  root: string;
  /** mqttbench */
  binary: string;
  /** bench/persistent-sub.c, built */
  subBinary: string;
}

function newRecord(sc: Scenario, side: BrokerSide, run: number): RunRecord {
  return {
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
    passes: {},
    diskWriteBytes: null,
    storeBytes: null,
  };
}

async function runOne(sc: Scenario, side: BrokerSide, run: number, ctx: Ctx): Promise<RunRecord> {
  if (sc.driver === 'uplink') return runUplink(sc, side, newRecord(sc, side, run), ctx);
  const broker = await startBroker(side, ctx.root, { persistence: sc.persistence });
  const rec = newRecord(sc, side, run);
  try {
    if (sc.driver === 'durable') await runDurable(sc, broker, rec, ctx);
    else if (sc.driver === 'mqttjs') await runMqttjs(sc, broker, rec, ctx);
    else await runPlain(sc, broker, rec, ctx);
  } finally {
    await broker.stop();
  }
  return rec;
}

type Broker = Awaited<ReturnType<typeof startBroker>>;

function brokerDied(broker: Broker): string {
  return `broker died during the run:\n${broker.proc.stderr.toString().slice(-2000)}`;
}

/** The mqttbench-only scenarios (1-5). */
async function runPlain(sc: Scenario, broker: Broker, rec: RunRecord, { opts, binary }: Ctx): Promise<void> {
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
    rec.error = brokerDied(broker);
  } else if (rec.status === 'failed') {
    const jsonErr = typeof r.json?.error === 'string' ? r.json.error : '';
    rec.error = `mqttbench exit ${r.exitCode ?? r.signal ?? '?'} ${jsonErr} ${r.stderr.trim().slice(-1000)}`.trim();
  }
}

function errText(j: BenchJson | null): string {
  return typeof j?.error === 'string' ? j.error : '';
}

/** Bytes of all files under a directory (the broker's store after the run). */
function dirBytes(dir: string): number | null {
  try {
    let total = 0;
    for (const e of readdirSync(dir, { withFileTypes: true, recursive: true })) {
      if (e.isFile()) total += statSync(path.join(e.parentPath, e.name)).size;
    }
    return total;
  } catch {
    return null;
  }
}

/**
 * durable-qos1: a persistent session (clean session 0, fixed client id) subscribes; mqttbench's
 * publishers (-S 0) send QoS 1. Per pass the subscriber reconnects (resuming its session) and
 * leaves with DISCONNECT once it has every message. write_bytes and CPU of the broker are read
 * from after the subscription to DURABLE_SETTLE_MS after the last delivery.
 */
async function runDurable(sc: Scenario, broker: Broker, rec: RunRecord, { opts, binary, subBinary }: Ctx): Promise<void> {
  const timeoutS = sc.timeoutS(opts.quick);
  const killAfterMs = (timeoutS + 60) * 1000;
  const expected = (warm: boolean): number => sc.expected?.(opts.quick, warm) ?? 0;
  const warm = sc.warmupFlags(opts.quick);
  if (warm) {
    const sub = await startPersistentSub(subBinary, broker.port, expected(true), timeoutS, DURABLE_CLIENT_ID, DURABLE_FILTER);
    const w = await runMqttbench(
      binary,
      [...commonFlags(broker.port, broker.pid, `${sc.name}-warmup`), ...warm, '-t', String(timeoutS)],
      killAfterMs,
    );
    const ws = await finishPersistentSub(sub, DURABLE_DRAIN_MS);
    rec.warmup = { exitCode: w.exitCode === 0 ? ws.exitCode : w.exitCode, throughput: num(ws.json, 'throughput') };
  }
  rec.fsyncP50Us = fsyncProbeUs(broker.dataDir);
  const sub = await startPersistentSub(subBinary, broker.port, expected(false), timeoutS, DURABLE_CLIENT_ID, DURABLE_FILTER);
  const io0 = readWriteBytes(broker.pid);
  const ticks0 = readCpuTicks(broker.pid);
  const mainTicks0 = readMainThreadCpuTicks(broker.pid);
  const r = await runMqttbench(
    binary,
    [...commonFlags(broker.port, broker.pid, sc.name), ...sc.flags(opts.quick), '-t', String(timeoutS)],
    killAfterMs,
  );
  const s = await finishPersistentSub(sub, r.exitCode === 0 ? DURABLE_DRAIN_MS : 2000);
  await sleep(DURABLE_SETTLE_MS);
  const alive = isRunning(broker.proc);
  if (alive) {
    rec.brokerCpuS = (readCpuTicks(broker.pid) - ticks0) / clockTicks();
    rec.brokerMainCpuS = (readMainThreadCpuTicks(broker.pid) - mainTicks0) / clockTicks();
    const io1 = readWriteBytes(broker.pid);
    rec.diskWriteBytes = io0 !== null && io1 !== null ? io1 - io0 : null;
  }
  rec.storeBytes = dirBytes(broker.dataDir);
  rec.exitCode = r.exitCode;
  rec.bench = r.json;
  rec.passes = { sub: s.json };
  rec.wallS = r.wallS;
  if (r.exitCode === 1) throw new Error(`mqttbench usage error:\n${r.stderr}`);
  const lost = num(s.json, 'lost');
  if (!alive) {
    rec.status = 'failed';
    rec.error = brokerDied(broker);
  } else if (r.exitCode !== 0) {
    const jsonErr = typeof r.json?.error === 'string' ? r.json.error : '';
    rec.error = `mqttbench exit ${r.exitCode ?? r.signal ?? '?'} ${jsonErr} ${r.stderr.trim().slice(-1000)}`.trim();
  } else if (s.exitCode === 0 && lost === 0) {
    rec.status = 'ok';
  } else if (s.json && (num(s.json, 'unique') ?? 0) > 0 && s.exitCode === 3) {
    rec.status = 'loss';
    rec.error = `persistent subscriber: ${errText(s.json)}`;
  } else {
    rec.error = `persistent subscriber exit ${s.exitCode ?? '?'} ${errText(s.json)} ${s.stderr.trim().slice(-1000)}`.trim();
  }
}

/** --uplink-hq-cpu: HQ's CPU and the truck's (all the others), as taskset lists; null: no placement. */
function cpuPlacement(hqCpu: number | null): { hq: string; truck: string } | null {
  if (hqCpu === null) return null;
  const others = Array.from({ length: os.availableParallelism() }, (_, i) => i).filter((i) => i !== hqCpu);
  return { hq: String(hqCpu), truck: others.join(',') };
}

/** What --uplink-hq-cpu does, or null when it is not set. */
function placementText(opts: Options): string | null {
  const place = cpuPlacement(opts.uplinkHqCpu);
  return place === null ? null : `HQ and its subscriber on CPU ${place.hq}, the truck broker on CPU ${place.truck} (--uplink-hq-cpu)`;
}

/** How long the HQ subscriber may still need after the publishers are done: 1 ms per message, >= 60 s. */
function uplinkWaitMs(n: number): number {
  return Math.max(60_000, n);
}

/**
 * uplink-drain, one run of one side: HQ (Mosquitto) + its counting subscriber, the truck broker
 * (Convoy uplink or Mosquitto bridge) forwarding bench/# to HQ, mqttbench publishing on the truck.
 *  1. warm-up pass (also waits for the link), 2. steady pass with the link up,
 *  3. HQ stopped, the backlog published on the truck (write_bytes of the truck meanwhile),
 *  4. HQ restarted (same port, the subscriber's session restored from HQ's mosquitto.db), the
 *     subscriber reconnects; drain time = HQ spawn -> last backlog message at the subscriber,
 *  5. 3 and 4 again with the same truck process (UplinkMeasures.again).
 */
async function runUplink(sc: Scenario, side: BrokerSide, rec: RunRecord, { opts, root, binary, subBinary }: Ctx): Promise<RunRecord> {
  const timeoutS = sc.timeoutS(opts.quick);
  const steadyN = sc.expected?.(opts.quick, false) ?? 0;
  const warmN = sc.expected?.(opts.quick, true) ?? 0;
  const backlog = opts.uplinkBacklog;
  const u: UplinkMeasures = {
    steady: steadyN,
    backlog,
    steadyWriteBytes: null,
    backlogPubWriteBytes: null,
    drainWriteBytes: null,
    drainCpuS: null,
    drainMainCpuS: null,
    hqDrainCpuS: null,
    backlogRssKb: null,
    reconnectS: null,
    drainS: null,
    again: null,
  };
  rec.uplink = u;
  const t0 = process.hrtime.bigint();
  const dir = makeTempDir(`uplink-${side.kind}`);
  const hqData = makeDataDir(dir, 'hq');
  const hqPort = await freeStablePort();
  let port = await freePort();
  while (port === hqPort) port = await freePort();
  const hqConf = mosquittoHqConfig(hqPort, hqData, opts.uplinkWindow);
  const place = cpuPlacement(opts.uplinkHqCpu);
  const startHq = async (): Promise<ConfiguredBroker> => {
    const b = await startConfigured('mosquitto', 'HQ mosquitto', root, dir, 'hq', hqPort, hqConf);
    if (place !== null) pinToCpus(b.pid, place.hq);
    return b;
  };
  const startSub = async (n: number, timeout: number): Promise<Awaited<ReturnType<typeof startPersistentSub>>> => {
    const sub = await startPersistentSub(subBinary, hqPort, n, timeout, UPLINK_SUB_ID, UPLINK_FILTER);
    if (place !== null) pinToCpus(sub.pid, place.hq);
    return sub;
  };
  let hq: ConfiguredBroker | null = null;
  let truck: ConfiguredBroker | null = null;
  const problems: string[] = [];
  try {
    hq = await startHq();
    truck = await startConfigured(side.kind, side.label, root, dir, 'truck', port, truckUplinkConfig(side.kind, dir, port, hqPort, opts.uplinkWindow));
    const pid = truck.pid;
    if (place !== null) pinToCpus(pid, place.truck);
    const tr = truck;
    const bench = (label: string, n: number, t: number): Promise<BenchRun> =>
      runMqttbench(binary, [...commonFlags(port, pid, label), ...uplinkPubFlags(n), '-t', String(t)], (t + 60) * 1000);
    const benchOk = (what: string, r: BenchRun): boolean => {
      if (r.exitCode === 1) throw new Error(`mqttbench usage error:\n${r.stderr}`);
      if (r.exitCode === 0) return true;
      problems.push(`${what}: mqttbench exit ${r.exitCode ?? r.signal ?? '?'} ${errText(r.json)} ${r.stderr.trim().slice(-500)}`.trim());
      return false;
    };
    const subOk = (what: string, s: { exitCode: number | null; json: BenchJson | null; stderr: string }): boolean => {
      if (s.exitCode === 0 && num(s.json, 'lost') === 0) return true;
      problems.push(`${what}: HQ subscriber exit ${s.exitCode ?? '?'} ${errText(s.json)} ${s.stderr.trim().slice(-500)}`.trim());
      return false;
    };
    /** A pass with the link up: subscriber at HQ, mqttbench on the truck, wait for all at HQ. */
    const linkedPass = async (label: string, n: number): Promise<{ r: BenchRun; s: Awaited<ReturnType<typeof finishPersistentSub>> }> => {
      const sub = await startSub(n, Math.ceil(timeoutS + uplinkWaitMs(n) / 1000));
      const r = await bench(label, n, timeoutS);
      const s = await finishPersistentSub(sub, r.exitCode === 0 ? uplinkWaitMs(n) : 2000);
      return { r, s };
    };

    // 1. warm-up (the first subscription creates the counting session at HQ)
    const w = await linkedPass(`${sc.name}-warmup`, warmN);
    rec.warmup = { exitCode: w.r.exitCode === 0 ? w.s.exitCode : w.r.exitCode, throughput: num(w.s.json, 'throughput') };
    if (!benchOk('warm-up', w.r) || !subOk('warm-up', w.s) || !isRunning(tr.proc)) return finishUplink(rec, tr, problems, t0);

    // 2. steady drain with the link up
    const io0 = readWriteBytes(pid);
    const st = await linkedPass(`${sc.name}-steady`, steadyN);
    await sleep(DURABLE_SETTLE_MS);
    rec.bench = st.r.json;
    rec.passes.steady_pub = st.r.json;
    rec.passes.steady = st.s.json;
    if (isRunning(tr.proc)) u.steadyWriteBytes = diff(io0, readWriteBytes(pid));
    if (!benchOk('steady', st.r) || !subOk('steady', st.s) || !isRunning(tr.proc)) return finishUplink(rec, tr, problems, t0);

    /**
     * HQ back: from its spawn to the last backlog message at the subscriber; HQ's CPU until then,
     * the truck's until DURABLE_SETTLE_MS later (its removals' commits included).
     */
    const drainFromHqStart = async (): Promise<{
      hq: ConfiguredBroker; d: Awaited<ReturnType<typeof finishPersistentSub>>; again: UplinkDrainAgain; mainCpuS: number | null;
    }> => {
      const ticks0 = readCpuTicks(pid);
      const mainTicks0 = readMainThreadCpuTicks(pid);
      const tHqUs = Number(process.hrtime.bigint() / 1000n);
      const hq = await startHq();
      const hqTicks0 = readCpuTicks(hq.pid);
      let d: Awaited<ReturnType<typeof finishPersistentSub>>;
      try {
        const sub = await startSub(backlog, Math.ceil(uplinkWaitMs(backlog) / 1000));
        d = await finishPersistentSub(sub, uplinkWaitMs(backlog));
      } catch (err) {
        await hq.stop();
        throw err;
      }
      const again: UplinkDrainAgain = { reconnectS: null, drainS: null, drainCpuS: null, hqDrainCpuS: (readCpuTicks(hq.pid) - hqTicks0) / clockTicks() };
      await sleep(DURABLE_SETTLE_MS);
      let mainCpuS: number | null = null;
      if (isRunning(tr.proc)) {
        again.drainCpuS = (readCpuTicks(pid) - ticks0) / clockTicks();
        mainCpuS = (readMainThreadCpuTicks(pid) - mainTicks0) / clockTicks();
      }
      const first = num(d.json, 'first_rx_us');
      const last = num(d.json, 'last_rx_us');
      if (first !== null) again.reconnectS = (first - tHqUs) / 1e6;
      if (last !== null && num(d.json, 'lost') === 0) again.drainS = (last - tHqUs) / 1e6;
      return { hq, d, again, mainCpuS };
    };

    // 3. HQ down (SIGTERM: it saves the subscriber's session), backlog published on the truck
    await hq.stop();
    hq = null;
    await sleep(300);
    const io1 = readWriteBytes(pid);
    const bp = await bench(`${sc.name}-backlog`, backlog, Math.max(timeoutS, Math.ceil(backlog / 2000)));
    rec.passes.backlog_pub = bp.json;
    const io2 = isRunning(tr.proc) ? readWriteBytes(pid) : null;
    u.backlogPubWriteBytes = diff(io1, io2);
    if (isRunning(tr.proc)) u.backlogRssKb = readStatusKb(pid, 'VmRSS');
    if (!benchOk('backlog publish', bp) || !isRunning(tr.proc)) return finishUplink(rec, tr, problems, t0);

    // 4. HQ back: time from its spawn to the last backlog message at the subscriber
    const first = await drainFromHqStart();
    hq = first.hq;
    const d = first.d;
    u.hqDrainCpuS = first.again.hqDrainCpuS;
    u.drainCpuS = first.again.drainCpuS;
    u.drainMainCpuS = first.mainCpuS;
    u.reconnectS = first.again.reconnectS;
    u.drainS = first.again.drainS;
    rec.passes.drain = d.json;
    if (isRunning(tr.proc)) u.drainWriteBytes = diff(io2, readWriteBytes(pid));
    const drainOk = subOk('backlog drain', d);
    if (d.json?.session_present === false) problems.push('backlog drain: HQ did not restore the subscriber session');
    if (!drainOk || !isRunning(tr.proc)) return finishUplink(rec, tr, problems, t0);

    // 5. The same again in the same truck process
    await hq.stop();
    hq = null;
    await sleep(300);
    const bp2 = await bench(`${sc.name}-backlog-again`, backlog, Math.max(timeoutS, Math.ceil(backlog / 2000)));
    rec.passes.backlog_again_pub = bp2.json;
    if (!benchOk('second backlog publish', bp2) || !isRunning(tr.proc)) return finishUplink(rec, tr, problems, t0);
    const second = await drainFromHqStart();
    hq = second.hq;
    rec.passes.drain_again = second.d.json;
    u.again = second.again;
    subOk('second backlog drain', second.d);
    return finishUplink(rec, tr, problems, t0);
  } finally {
    if (truck) await truck.stop();
    if (hq) await hq.stop();
    removeTempDir(dir);
  }
}

function diff(a: number | null, b: number | null): number | null {
  return a !== null && b !== null ? b - a : null;
}

function finishUplink(rec: RunRecord, truck: ConfiguredBroker, problems: string[], t0: bigint): RunRecord {
  rec.wallS = Number(process.hrtime.bigint() - t0) / 1e9;
  const codes = [rec.passes.steady_pub, rec.passes.backlog_pub].map((j) => (j ? num(j, 'exit_code') : null));
  rec.exitCode = codes.find((c) => c !== null && c !== 0) ?? (codes.every((c) => c === 0) ? 0 : null);
  // (The second drain is in the run once its backlog was published.)
  const subs = [rec.passes.steady, rec.passes.drain, ...(rec.passes.backlog_again_pub !== undefined ? [rec.passes.drain_again] : [])];
  if (!isRunning(truck.proc)) {
    rec.status = 'failed';
    rec.error = `truck broker died during the run:\n${truck.proc.stderr.toString().slice(-2000)}`;
  } else if (problems.length === 0 && subs.every((j) => j && num(j, 'lost') === 0)) {
    rec.status = 'ok';
  } else {
    // all passes ran and the subscriber saw messages of each: a loss, numbers kept; else failed
    rec.status = subs.every((j) => j && (num(j, 'unique') ?? 0) > 0) ? 'loss' : 'failed';
    rec.error = problems.join('\n') || 'incomplete';
  }
  return rec;
}

/** Arguments of one MQTT.js driver pass. */
function mqttjsArgs(port: number, protocol: number, label: string, flags: string[], timeoutS: number): string[] {
  return [MQTTJS_LOAD, '--port', String(port), '--protocol', String(protocol), ...flags, '--timeout', String(timeoutS), '--label', label];
}

/**
 * v5-qos1: the MQTT.js driver once per protocol on the same broker (warm-up passes first); odd
 * runs start with the first protocol of `sc.passes`, even runs with the last.
 */
async function runMqttjs(sc: Scenario, broker: Broker, rec: RunRecord, { opts }: Ctx): Promise<void> {
  const timeoutS = sc.timeoutS(opts.quick);
  const killAfterMs = (timeoutS + 60) * 1000;
  const passes = sc.passes ?? [];
  const order = rec.run % 2 === 1 ? [...passes] : [...passes].reverse();
  const warm = sc.warmupFlags(opts.quick);
  if (warm) {
    let worst: number | null = 0;
    let first: number | null = null;
    for (const p of order) {
      const w = await runMqttbench(process.execPath, mqttjsArgs(broker.port, p.protocol, `${sc.name}-warmup-${p.key}`, warm, timeoutS), killAfterMs);
      if (w.exitCode !== 0) worst = w.exitCode;
      first ??= num(w.json, 'throughput');
    }
    rec.warmup = { exitCode: worst, throughput: first };
  }
  const ticks0 = readCpuTicks(broker.pid);
  const problems: string[] = [];
  let wall = 0;
  const codes: (number | null)[] = [];
  for (const p of order) {
    const r = await runMqttbench(process.execPath, mqttjsArgs(broker.port, p.protocol, `${sc.name}-${p.key}`, sc.flags(opts.quick), timeoutS), killAfterMs);
    rec.passes[p.key] = r.json;
    wall += r.wallS;
    codes.push(r.exitCode);
    if (r.exitCode === 1) throw new Error(`mqttjs-load usage error:\n${r.stderr}`);
    if (r.exitCode !== 0) {
      const jsonErr = typeof r.json?.error === 'string' ? r.json.error : '';
      problems.push(`${p.key}: mqttjs-load exit ${r.exitCode ?? r.signal ?? '?'} ${jsonErr} ${r.stderr.trim().slice(-500)}`.trim());
    }
    if (!isRunning(broker.proc)) break;
  }
  const alive = isRunning(broker.proc);
  if (alive) rec.brokerCpuS = (readCpuTicks(broker.pid) - ticks0) / clockTicks();
  rec.bench = rec.passes[passes[0]?.key ?? ''] ?? null;
  rec.wallS = wall;
  rec.exitCode = codes.find((c) => c !== 0) ?? 0;
  if (!alive) {
    rec.status = 'failed';
    rec.error = brokerDied(broker);
  } else if (codes.every((c) => c === 0)) {
    rec.status = 'ok';
  } else {
    rec.status = codes.every((c) => c === 0 || c === 2) ? 'loss' : 'failed';
    rec.error = problems.join('\n');
  }
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
  const sc = SCENARIOS.find((x) => x.name === r.scenario);
  if (sc?.driver === 'durable') return durableSummary(r);
  if (sc?.driver === 'mqttjs') return mqttjsSummary(r, sc);
  if (sc?.driver === 'uplink') return uplinkSummary(r);
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

function durableSummary(r: RunRecord): string {
  const sub = r.passes.sub ?? null;
  const parts: string[] = [`exit ${r.exitCode ?? '?'}/${sub ? 'sub' : 'no sub result'}`];
  if (num(sub, 'throughput') !== null) parts.push(`${fmt(num(sub, 'throughput'), 0)} msgs/s to the session`);
  if (num(r.bench, 'send_rate') !== null) parts.push(`acked ${fmt(num(r.bench, 'send_rate'), 0)}/s`);
  if (num(r.bench, 'ack_p50_us') !== null) parts.push(`puback p50 ${fmt(num(r.bench, 'ack_p50_us'), 0)} µs`);
  const n = num(sub, 'unique');
  if (r.diskWriteBytes !== null && n) parts.push(`disk ${fmt(r.diskWriteBytes / n, 0)} B/msg`);
  if (r.storeBytes !== null) parts.push(`store ${fmt(r.storeBytes / 2 ** 20, 1)} MB`);
  if (r.fsyncP50Us !== undefined) parts.push(`fsync p50 ${fmt(r.fsyncP50Us, 0)} µs`);
  const lost = num(sub, 'lost');
  if (lost) parts.push(`LOST ${lost}`);
  if (num(sub, 'duplicates')) parts.push(`dup ${num(sub, 'duplicates')}`);
  // The warm-up pass created the session; the measured pass must have resumed it.
  if (r.warmup && sub?.session_present === false) parts.push('SESSION NOT RESUMED');
  if (r.brokerCpuS !== null) {
    const main = r.brokerMainCpuS === undefined || r.brokerMainCpuS === null ? '' : ` (main thread ${r.brokerMainCpuS.toFixed(2)} s)`;
    parts.push(`broker cpu ${r.brokerCpuS.toFixed(2)} s${main}`);
  }
  parts.push(`${r.wallS.toFixed(1)} s`);
  if (r.error) parts.push(`ERROR: ${r.error.split('\n').slice(0, 3).join(' ')}`);
  return parts.join(', ');
}

function uplinkSummary(r: RunRecord): string {
  const u = r.uplink;
  const parts: string[] = [`exit ${r.exitCode ?? '?'}`];
  const st = r.passes.steady ?? null;
  if (num(st, 'throughput') !== null) parts.push(`steady ${fmt(num(st, 'throughput'), 0)} msgs/s at HQ`);
  if (u) {
    const bp = r.passes.backlog_pub ?? null;
    if (num(bp, 'send_rate') !== null) parts.push(`backlog ${fmt(u.backlog, 0)} acked ${fmt(num(bp, 'send_rate'), 0)}/s`);
    if (u.drainS !== null) parts.push(`drained in ${u.drainS.toFixed(2)} s (${fmt(u.backlog / u.drainS, 0)}/s, first after ${fmt(u.reconnectS, 2)} s)`);
    const perMsg = (b: number | null, n: number): string => (b === null || n <= 0 ? 'n/a' : fmt(b / n, 0));
    parts.push(
      `disk B/msg: backlog pub ${perMsg(u.backlogPubWriteBytes, u.backlog)}, drain ${perMsg(u.drainWriteBytes, u.backlog)}, ` +
        `steady ${perMsg(u.steadyWriteBytes, u.steady)}`,
    );
    if (u.backlogRssKb !== null) parts.push(`rss with backlog ${fmt(u.backlogRssKb / 1024, 1)} MB`);
    if (u.drainCpuS !== null) {
      const main = u.drainMainCpuS === null ? '' : ` (main thread ${u.drainMainCpuS.toFixed(2)} s)`;
      parts.push(`drain cpu ${u.drainCpuS.toFixed(2)} s${main}`);
    }
  }
  const again = u?.again ?? null;
  if (u && again?.drainS != null) {
    const cpu = again.drainCpuS === null ? '' : `, cpu ${again.drainCpuS.toFixed(2)} s`;
    parts.push(`again drained in ${again.drainS.toFixed(2)} s (first after ${fmt(again.reconnectS, 2)} s${cpu})`);
  }
  const passes = [st, r.passes.drain ?? null, r.passes.drain_again ?? null];
  const lost = passes.reduce((n, p) => n + (num(p, 'lost') ?? 0), 0);
  if (lost) parts.push(`LOST ${lost}`);
  const dup = passes.reduce((n, p) => n + (num(p, 'duplicates') ?? 0), 0);
  if (dup) parts.push(`dup ${dup}`);
  parts.push(`${r.wallS.toFixed(1)} s`);
  if (r.error) parts.push(`ERROR: ${r.error.split('\n').slice(0, 3).join(' ')}`);
  return parts.join(', ');
}

function mqttjsSummary(r: RunRecord, sc: Scenario): string {
  const parts: string[] = [`exit ${r.exitCode ?? '?'}`];
  for (const p of sc.passes ?? []) {
    const j = r.passes[p.key] ?? null;
    if (!j) continue;
    const lost = num(j, 'lost');
    parts.push(
      `${p.key} ${fmt(num(j, 'throughput'), 0)} msgs/s (loader ${fmt(num(j, 'loader_cpu_pct'), 0)}%${lost ? `, LOST ${lost}` : ''})`,
    );
  }
  parts.push(`${r.wallS.toFixed(1)} s`);
  if (r.error) parts.push(`ERROR: ${r.error.split('\n').slice(0, 3).join(' ')}`);
  return parts.join(', ');
}

/** How each scenario's load is generated, for the results file. */
function loadCommand(sc: Scenario, quick: boolean, uplinkBacklog: number): Record<string, unknown> {
  const t = String(sc.timeoutS(quick));
  const mqttbench = (): string =>
    [
      ...commonFlags(0, 0, sc.name).map((f, i, arr) =>
        arr[i - 1] === '-p' ? '<port>' : arr[i - 1] === '--broker-pid' ? '<broker pid>' : f,
      ),
      ...sc.flags(quick),
      '-t',
      t,
    ].join(' ');
  const rel = (f: string): string => path.relative(process.cwd(), f);
  if (sc.driver === 'mqttjs') {
    const out: Record<string, string> = {};
    for (const p of sc.passes ?? []) {
      out[`mqttjs_${p.key}`] = ['node', ...mqttjsArgs(0, p.protocol, `${sc.name}-${p.key}`, sc.flags(quick), sc.timeoutS(quick))]
        .map((a) => (a === MQTTJS_LOAD ? rel(a) : a))
        .join(' ')
        .replace('--port 0', '--port <port>');
    }
    return out;
  }
  if (sc.driver === 'uplink') {
    const steady = sc.expected?.(quick, false) ?? 0;
    const sub = (n: number): string =>
      `bench/.build/persistent-sub --port <hq port> --expected ${n} --client-id ${UPLINK_SUB_ID} --filter ${UPLINK_FILTER} --timeout <s>`;
    return {
      steady_messages: steady,
      backlog_messages: uplinkBacklog,
      mqttbench_flags: mqttbench(),
      mqttbench_backlog_flags: mqttbench().replace(`-N ${steady} `, `-N ${uplinkBacklog} `),
      hq_subscriber_steady: sub(steady),
      hq_subscriber_backlog: sub(uplinkBacklog),
    };
  }
  const out: Record<string, string> = { mqttbench_flags: mqttbench() };
  if (sc.driver === 'durable') {
    out.persistent_subscriber =
      `bench/.build/persistent-sub --port <port> --expected ${sc.expected?.(quick, false) ?? 0} ` +
      `--client-id ${DURABLE_CLIENT_ID} --filter ${DURABLE_FILTER} --timeout ${sc.timeoutS(quick) + 60}`;
  }
  return out;
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
  const sub = ensurePersistentSub(root);
  if (opts.fsyncDelayUs > 0 || opts.storageKbS > 0) setSlowFsync(ensureSlowFsync(root).binary, opts.fsyncDelayUs, opts.storageKbS);
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
  const slowStorage = slowStorageText(opts);
  if (slowStorage !== null) log(`slow storage: ${slowStorage}`);
  const placement = placementText(opts);
  if (placement !== null) log(`uplink CPU placement: ${placement}`);

  const all: RunRecord[] = [];
  const results: MetricResult[] = [];
  const scenarioDocs: unknown[] = [];
  for (const sc of opts.scenarios) {
    log(`\n== ${sc.name}: ${sc.title}`);
    const records: RunRecord[] = [];
    for (let run = 1; run <= opts.runs; run++) {
      for (const side of sides) {
        const rec = await runOne(sc, side, run, { opts, root, binary: mb.binary, subBinary: sub.binary });
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
      persistence: sc.persistence,
      ...loadCommand(sc, opts.quick, opts.uplinkBacklog),
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
    ...(slowStorage !== null ? [`slow storage: ${slowStorage}`] : []),
    ...(placement !== null ? [`uplink CPU placement: ${placement}`] : []),
    `medians of ${opts.runs} interleaved run(s) per broker; ratio = ${sa.label}/${sb.label} ` +
      `(for "higher is better" > 1 means ${sa.label} is better, for "lower is better" < 1 means ${sa.label} is better)`,
    '',
  ].join('\n');
  console.log(header);
  console.log(table);
  const bad = all.filter((r) => r.status !== 'ok');
  const qos0Loss = all.filter((r) => r.status === 'ok' && (num(r.bench, 'lost') ?? 0) > 0);
  // A load generator near 100 % of its one thread means the broker may be faster than measured.
  // Grouped per scenario, side and load-generator process (mqttbench, a protocol pass, ...).
  const loaderBound = new Map<string, { runs: number; of: number; maxPct: number }>();
  for (const r of all) {
    // passes first: the MQTT.js scenario's `bench` is one of them and keeps its pass name
    const jsons: [string, BenchJson | null][] = [...Object.entries(r.passes), ['', r.bench]];
    const seen = new Set<BenchJson>();
    for (const [key, j] of jsons) {
      if (!j || seen.has(j) || num(j, 'rate')) continue;
      seen.add(j);
      const name = `${r.scenario} ${r.side}${key ? ` (${key})` : ''}`;
      const g = loaderBound.get(name) ?? { runs: 0, of: 0, maxPct: 0 };
      const pct = num(j, 'loader_cpu_pct') ?? 0;
      g.of++;
      if (pct >= 90) {
        g.runs++;
        g.maxPct = Math.max(g.maxPct, pct);
      }
      loaderBound.set(name, g);
    }
  }
  for (const [k, g] of loaderBound) if (g.runs === 0) loaderBound.delete(k);
  if (bad.length > 0 || qos0Loss.length > 0 || loaderBound.size > 0) {
    console.log('\nproblems:');
    for (const [name, g] of loaderBound) {
      console.log(
        `  ${name}: load generator at >= 90% CPU in ${g.runs}/${g.of} run(s) (max ${fmt(g.maxPct, 0)}%), ` +
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
      fsync_delay_us: opts.fsyncDelayUs,
      storage_kb_s: opts.storageKbS,
      uplink_cpu_placement: placement,
      elapsed_s: Math.round(elapsed),
      sides: sides.map((s) => ({ label: s.label, kind: s.kind })),
      machine,
      mqttbench: { source: mb.source, binary: mb.binary, build: `gcc ${mb.gccArgs.join(' ')}`, version: mqttbenchVersion(mb.binary) },
      broker_configs: {
        convoy: convoyConfig(0, '<tmpdir>/data').replace('port = 0', 'port = <free port>'),
        mosquitto: mosquittoConfig(0).replace('listener 0', 'listener <free port>'),
        convoy_durable: convoyConfig(0, '<tmpdir>/data', true).replace('port = 0', 'port = <free port>'),
        mosquitto_durable: mosquittoConfig(0, '<tmpdir>/data').replace('listener 0', 'listener <free port>'),
        max_inflight: MAX_INFLIGHT,
        convoy_uplink: convoyUplinkConfig(0, '<tmpdir>/data', 1, opts.uplinkWindow).replace('port = 0', 'port = <free port>').replace('127.0.0.1:1"', '127.0.0.1:<hq port>"'),
        mosquitto_truck: mosquittoTruckConfig(0, '<tmpdir>/data', 1).replace('listener 0', 'listener <free port>').replace('127.0.0.1:1\n', '127.0.0.1:<hq port>\n'),
        mosquitto_hq: mosquittoHqConfig(0, '<tmpdir>/hq', opts.uplinkWindow).replace('listener 0', 'listener <hq port>'),
        uplink_inflight: opts.uplinkWindow,
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

runBenchScript('bench', main, log);
