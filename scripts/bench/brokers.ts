// Starting and stopping the brokers under test, with equivalent settings:
// anonymous access, no queue limits (QoS 1 must not be dropped under fan-in), the
// same in-flight window per client, and persistence off, or on for the durable
// scenario (Convoy's SQLite store, Mosquitto's `persistence true`).
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { isRunning, killAllChildren, sleep, spawnWithFdLimit, stopProcess, type Spawned } from './proc.js';

/** The Convoy checkout the benchmark runs from: the nearest directory up with package.json named "convoy". */
export function findRoot(): string {
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

export type BrokerKind = 'convoy' | 'mosquitto';
export const BROKER_KINDS: readonly BrokerKind[] = ['convoy', 'mosquitto'];

/** Convoy `limits.max_inflight` and Mosquitto `max_inflight_messages`. */
export const MAX_INFLIGHT = 32;

export const MOSQUITTO_BIN = process.env.CONVOY_BENCH_MOSQUITTO ?? '/usr/sbin/mosquitto';

/** Environment of the brokers under test (and the uplink's truck): see setSlowFsync. */
let storageEnv: Record<string, string> = {};

/**
 * Every fsync/fdatasync of the brokers under test takes `delayUs` longer and, with `kbPerS` > 0,
 * waits for the bytes written to that file since its last sync at that rate (the shim at `shim`).
 */
export function setSlowFsync(shim: string, delayUs: number, kbPerS = 0): void {
  storageEnv =
    delayUs > 0 || kbPerS > 0
      ? { LD_PRELOAD: shim, CONVOY_FSYNC_DELAY_US: String(delayUs), CONVOY_STORAGE_KB_PER_S: String(kbPerS) }
      : {};
}

/** Extra node flags for Convoy ($CONVOY_BENCH_NODE_FLAGS, e.g. the launcher's --max-semi-space-size=4). */
export function convoyNodeFlags(): string[] {
  return (process.env.CONVOY_BENCH_NODE_FLAGS ?? '').split(/\s+/).filter((f) => f.length > 0);
}

/**
 * Convoy entry point, relative to the project root unless absolute ($CONVOY_BENCH_MAIN). The
 * default is the shipped launcher bin/convoy, so the bench measures Convoy with the node flags
 * it runs with in production; a .js entry is run with `node $CONVOY_BENCH_NODE_FLAGS`.
 */
export function convoyMain(root: string): string {
  return path.resolve(root, process.env.CONVOY_BENCH_MAIN ?? 'bin/convoy');
}

/** Command and arguments that start Convoy with a config file. */
export function convoyCommand(root: string, configFile: string): [string, string[]] {
  const main = convoyMain(root);
  const args = ['run', '--config', configFile];
  return main.endsWith('.js') ? [process.execPath, [...convoyNodeFlags(), main, ...args]] : [main, args];
}

export interface BrokerSide {
  kind: BrokerKind;
  /** Column label: the kind, suffixed when both sides run the same broker. */
  label: string;
}

export interface BrokerOptions {
  /** Durable state on disk: Convoy `[store] enabled = true`, Mosquitto `persistence true`. */
  persistence: boolean;
}

export interface RunningBroker {
  side: BrokerSide;
  pid: number;
  port: number;
  proc: Spawned;
  /** Where the broker keeps its state (Convoy data_dir, Mosquitto persistence_location). */
  dataDir: string;
  stop(): Promise<void>;
}

const tempDirs = new Set<string>();

/** Removes broker temp dirs left behind by an interrupted run (exit/SIGINT path). */
export function removeTempDirsSync(): void {
  for (const d of tempDirs) rmSync(d, { recursive: true, force: true });
  tempDirs.clear();
}

export function isBrokerKind(s: string): s is BrokerKind {
  return (BROKER_KINDS as readonly string[]).includes(s);
}

/** The brokers of a `--brokers a,b` list, in order; throws on an unknown name. */
export function brokerKinds(list: string): BrokerKind[] {
  return list
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.length > 0)
    .map((b) => {
      if (!isBrokerKind(b)) throw new Error(`unknown broker '${b}'; known: ${BROKER_KINDS.join(', ')}`);
      return b;
    });
}

/**
 * Runs a bench script's main: at exit every child is stopped and every temp dir removed, and a
 * failure is reported as "<name> failed: <message>" with exit code 1.
 */
export function runBenchScript(name: string, main: () => Promise<void>, report: (line: string) => void = console.error): void {
  process.on('exit', () => {
    killAllChildren();
    removeTempDirsSync();
  });
  main().catch((err: unknown) => {
    killAllChildren();
    report(`${name} failed: ${err instanceof Error ? err.message : String(err)}`);
    process.exitCode = 1;
  });
}

export function convoyConfig(port: number, dataDir: string, persistence = false): string {
  return [
    `data_dir = ${JSON.stringify(dataDir)}`,
    '[log]',
    'level = "warn"',
    '[[listeners]]',
    'type = "tcp"',
    'host = "127.0.0.1"',
    `port = ${port}`,
    // Listeners refuse anonymous clients unless told otherwise (Mosquitto: allow_anonymous true).
    'allow_anonymous = true',
    '[limits]',
    'max_connections = 20000',
    `max_inflight = ${MAX_INFLIGHT}`,
    'max_queued_messages = 0',
    'max_queued_bytes = 0',
    '[store]',
    // On: SQLite in data_dir, WAL + synchronous FULL, QoS 1 acknowledged after the commit
    // (commit_window_ms and integrity_check_ms at their defaults).
    `enabled = ${persistence}`,
    '[sys]',
    'interval_s = 0',
    '',
  ].join('\n');
}

/** `persistenceDir` null: persistence off; else `persistence true` with the database there. */
export function mosquittoConfig(port: number, persistenceDir: string | null = null): string {
  return [
    `listener ${port} 127.0.0.1`,
    'allow_anonymous true',
    // autosave_interval stays at its default (1800 s): Mosquitto acknowledges from memory and
    // writes mosquitto.db only then and at shutdown.
    ...(persistenceDir === null ? ['persistence false'] : ['persistence true', `persistence_location ${persistenceDir}/`]),
    // Default 1000 drops QoS 1 messages under fan-in; 0 = no limit (like Convoy's 0).
    'max_queued_messages 0',
    `max_inflight_messages ${MAX_INFLIGHT}`,
    // Only warnings and errors, like Convoy's log.level = "warn".
    'log_dest stderr',
    'log_type error',
    'log_type warning',
    'connection_messages false',
    '',
  ].join('\n');
}

/** Binds port 0 on 127.0.0.1, notes the port the kernel picked and closes again. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => (port > 0 ? resolve(port) : reject(new Error('no port from bind(0)'))));
    });
  });
}

function tryConnect(port: number, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = net.connect({ host: '127.0.0.1', port });
    const done = (ok: boolean): void => {
      sock.removeAllListeners();
      sock.on('error', () => undefined);
      sock.destroy();
      resolve(ok);
    };
    sock.setTimeout(timeoutMs, () => done(false));
    sock.once('connect', () => done(true));
    sock.once('error', () => done(false));
  });
}

/** Readiness: a TCP connect succeeds. Bounded attempts with short waits, overall timeout. */
async function waitListening(label: string, port: number, proc: Spawned, timeoutMs: number): Promise<void> {
  const waitMs = 100;
  const deadline = Date.now() + timeoutMs;
  const attempts = Math.ceil(timeoutMs / waitMs);
  for (let i = 0; i < attempts && Date.now() < deadline; i++) {
    if (!isRunning(proc)) {
      const { code, signal } = await proc.exited;
      throw new Error(
        `${label} exited (code ${code ?? '-'}, signal ${signal ?? '-'}) before listening on port ${port}\n` +
          `--- stderr ---\n${proc.stderr.toString()}\n--- stdout ---\n${proc.stdout.toString()}`,
      );
    }
    if (await tryConnect(port, 500)) return;
    await sleep(waitMs);
  }
  throw new Error(
    `${label} did not accept TCP connections on 127.0.0.1:${port} within ${timeoutMs} ms\n` +
      `--- stderr ---\n${proc.stderr.toString()}\n--- stdout ---\n${proc.stdout.toString()}`,
  );
}

/**
 * Parent of the brokers' temp dirs: $CONVOY_BENCH_TMPDIR, else the OS temp dir. For the durable
 * scenario it must be a real disk (not tmpfs), or nothing reaches /proc/PID/io write_bytes.
 */
export function benchTmpRoot(): string {
  const env = process.env.CONVOY_BENCH_TMPDIR;
  return env && env.length > 0 ? path.resolve(env) : os.tmpdir();
}

/** File system type of a directory (`df --output=fstype`), e.g. ext4, tmpfs, overlay. */
export function fsType(dir: string): string {
  const r = spawnSync('df', ['--output=fstype', dir], { encoding: 'utf8' });
  const lines = r.status === 0 ? r.stdout.trim().split('\n') : [];
  return lines.length >= 2 ? (lines[lines.length - 1] ?? 'unknown').trim() : 'unknown';
}

export async function startBroker(
  side: BrokerSide,
  root: string,
  opts: BrokerOptions = { persistence: false },
  readyTimeoutMs = 20_000,
): Promise<RunningBroker> {
  const dir = mkdtempSync(path.join(benchTmpRoot(), `convoy-bench-${side.kind}-`));
  tempDirs.add(dir);
  const dataDir = path.join(dir, 'data');
  const port = await freePort();
  let proc: Spawned;
  if (side.kind === 'convoy') {
    const file = path.join(dir, 'convoy.toml');
    writeFileSync(file, convoyConfig(port, dataDir, opts.persistence));
    const [cmd, args] = convoyCommand(root, file);
    proc = spawnWithFdLimit(cmd, args, { cwd: root, env: storageEnv });
  } else {
    const file = path.join(dir, 'mosquitto.conf');
    if (opts.persistence) {
      mkdirSync(dataDir);
      // Started as root, Mosquitto drops to the user `mosquitto`, which must be able to write here
      // (mkdtemp dirs are 0700). The mode of a throw-away dir under the temp root is of no concern.
      chmodSync(dir, 0o755);
      chmodSync(dataDir, 0o777);
    }
    writeFileSync(file, mosquittoConfig(port, opts.persistence ? dataDir : null));
    proc = spawnWithFdLimit(MOSQUITTO_BIN, ['-c', file], { cwd: dir, env: storageEnv });
  }
  const cleanup = async (): Promise<void> => {
    await stopProcess(proc);
    rmSync(dir, { recursive: true, force: true });
    tempDirs.delete(dir);
  };
  try {
    await waitListening(side.label, port, proc, readyTimeoutMs);
  } catch (err) {
    await cleanup();
    throw err;
  }
  return { side, pid: proc.pid, port, proc, dataDir, stop: cleanup };
}

/** First line of `mosquitto -h`, e.g. "mosquitto version 2.0.11". */
export function mosquittoVersion(): string {
  const r = spawnSync(MOSQUITTO_BIN, ['-h'], { encoding: 'utf8' });
  const text = `${r.stdout ?? ''}${r.stderr ?? ''}`;
  const m = /mosquitto version (\S+)/.exec(text);
  return m?.[1] ?? 'unknown';
}

// --- uplink-drain: a truck broker forwarding to an HQ Mosquitto --------------------------------

/** Gateway id of the truck in the uplink scenario (topics arrive at HQ as fleet/gw1/bench/...). */
export const UPLINK_GATEWAY = 'gw1';
/**
 * In-flight window towards HQ: HQ's max_inflight_messages (which Mosquitto advertises as its MQTT 5
 * receive maximum) and Convoy's outbox.inflight_window (--uplink-window). Convoy keeps at most that
 * many PUBLISHes unacknowledged; the Mosquitto 2.0.11 bridge ignores HQ's receive maximum (7,257
 * unacknowledged against 64, `node dist/scripts/bench/inflight-probe.js`). With 64, Convoy's drain
 * is bound by the round trip and the comparison measures who obeys the protocol; with 1,024 the
 * loopback round trip no longer limits it and the comparison measures the brokers' work.
 */
export const UPLINK_INFLIGHT = 1024;
/**
 * Reconnect delay towards HQ, about 1 s on both sides: Convoy full jitter up to 1000 ms
 * (uniform 0-1 s), Mosquitto `restart_timeout 1 1` (jitter between 1 and 1 s: in practice every 1-2 s).
 */
const UPLINK_RETRY_MS = 1000;
/** Outbox budget: far above a 1M x 200 B backlog, so nothing is evicted. */
const UPLINK_OUTBOX_BUDGET = 4 * 2 ** 30;

/**
 * Convoy as the truck: the plain settings, store on (the outbox lives in the SQLite convoy.db),
 * uplink to 127.0.0.1:hqPort over MQTT 5, route bench/# -> fleet/{gateway}/bench/# at QoS 1,
 * class telemetry, no drain pacing.
 */
export function convoyUplinkConfig(port: number, dataDir: string, hqPort: number, window = UPLINK_INFLIGHT): string {
  return [
    convoyConfig(port, dataDir, true).trimEnd(),
    '[uplink]',
    'enabled = true',
    `gateway_id = "${UPLINK_GATEWAY}"`,
    `endpoints = ["127.0.0.1:${hqPort}"]`,
    'protocol_version = 5',
    `backoff_initial_ms = ${UPLINK_RETRY_MS}`,
    `backoff_max_ms = ${UPLINK_RETRY_MS}`,
    '[[uplink.routes]]',
    'local = "bench/#"',
    'remote = "fleet/{gateway}/bench/#"',
    'qos = 1',
    'class = "telemetry"',
    '[outbox]',
    `budget_bytes = ${UPLINK_OUTBOX_BUDGET}`,
    // The backlog is drained as fast as HQ takes it (the truck config paces it for LTE).
    'drain_rate_msgs = 0',
    'drain_rate_bytes = 0',
    `inflight_window = ${window}`,
    '',
  ].join('\n');
}

/**
 * Mosquitto as the truck: the plain settings plus a bridge `hq` (MQTT 5 like Convoy's uplink,
 * clean session false, bench/# out at QoS 1 remapped to fleet/gw1/bench/#) and persistence on.
 * Mosquitto keeps the bridge queue in memory and writes mosquitto.db only at autosave (1800 s)
 * and shutdown.
 */
export function mosquittoTruckConfig(port: number, dataDir: string, hqPort: number): string {
  return [
    // (max_inflight_messages is for the truck's LAN clients; the bridge keeps no such limit.)
    mosquittoConfig(port, dataDir).trimEnd(),
    'connection hq',
    `address 127.0.0.1:${hqPort}`,
    // local bench/1 -> remote "" stripped, "fleet/gw1/" prepended: fleet/gw1/bench/1
    `topic bench/# out 1 "" fleet/${UPLINK_GATEWAY}/`,
    'bridge_protocol_version mqttv50',
    'cleansession false',
    `clientid truck-${UPLINK_GATEWAY}`,
    // "base cap" form: decorrelated jitter, here a retry every ~1-2 s. The constant form
    // (`restart_timeout 1`) waited ~6 s between attempts in 2.0.11 on this machine.
    `restart_timeout ${UPLINK_RETRY_MS / 1000} ${UPLINK_RETRY_MS / 1000}`,
    '',
  ].join('\n');
}

/**
 * The truck broker of the uplink benchmarks, forwarding to 127.0.0.1:hqPort: Convoy's uplink
 * (its store in dir/data, made by Convoy) or a Mosquitto bridge (dir/data made here, writable by
 * the user `mosquitto`). `window` is Convoy's inflight_window; the bridge has none.
 */
export function truckUplinkConfig(kind: BrokerKind, dir: string, port: number, hqPort: number, window = UPLINK_INFLIGHT): string {
  return kind === 'convoy'
    ? convoyUplinkConfig(port, path.join(dir, 'data'), hqPort, window)
    : mosquittoTruckConfig(port, makeDataDir(dir, 'data'), hqPort);
}

/**
 * HQ: Mosquitto with the plain settings, max_inflight_messages `window` (its MQTT 5 receive
 * maximum, default 20; it also bounds what HQ keeps in flight to the counting subscriber, for both
 * trucks alike), and persistence on only so that the counting subscriber's session survives HQ's
 * restart (no message is dropped for want of a subscriber while it reconnects); with
 * autosave_interval at 1800 s it writes only at shutdown, never during a measurement.
 */
export function mosquittoHqConfig(port: number, dataDir: string, window = UPLINK_INFLIGHT): string {
  return mosquittoConfig(port, dataDir).replace(/^max_inflight_messages \d+$/m, `max_inflight_messages ${window}`);
}

/** A broker process started from a ready config text in a directory the caller owns. */
export interface ConfiguredBroker {
  pid: number;
  port: number;
  proc: Spawned;
  stop(): Promise<void>;
}

/** Temp dir for one scenario run, removed by `removeTempDir` (or at exit). */
export function makeTempDir(prefix: string): string {
  const dir = mkdtempSync(path.join(benchTmpRoot(), `convoy-bench-${prefix}-`));
  tempDirs.add(dir);
  // Mosquitto started as root drops to the user `mosquitto`: its data dirs below must be reachable.
  chmodSync(dir, 0o755);
  return dir;
}

export function removeTempDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
  tempDirs.delete(dir);
}

/** A data dir below a temp dir that both Convoy (root) and Mosquitto (user mosquitto) can write. */
export function makeDataDir(dir: string, name: string): string {
  const d = path.join(dir, name);
  mkdirSync(d, { recursive: true });
  chmodSync(d, 0o777);
  return d;
}

/**
 * Starts Convoy or Mosquitto with `config` written to `dir/<name>.conf|toml`; waits until it listens.
 * `wrap` runs Mosquitto under another command (valgrind and its options: hq-cost.ts).
 */
export async function startConfigured(
  kind: BrokerKind,
  label: string,
  root: string,
  dir: string,
  name: string,
  port: number,
  config: string,
  readyTimeoutMs = 20_000,
  wrap: readonly string[] = [],
): Promise<ConfiguredBroker> {
  const file = path.join(dir, `${name}.${kind === 'convoy' ? 'toml' : 'conf'}`);
  writeFileSync(file, config);
  let proc: Spawned;
  // HQ is another machine: only the truck's storage is slowed down.
  const env = name === 'truck' ? storageEnv : {};
  if (kind === 'convoy') {
    const [cmd, args] = convoyCommand(root, file);
    proc = spawnWithFdLimit(cmd, args, { cwd: root, env });
  } else {
    const [cmd, ...args] = [...wrap, MOSQUITTO_BIN, '-c', file];
    proc = spawnWithFdLimit(cmd, args, { cwd: dir, env });
  }
  const stop = (): Promise<void> => stopProcess(proc);
  try {
    await waitListening(label, port, proc, readyTimeoutMs);
  } catch (err) {
    await stop();
    throw err;
  }
  return { pid: proc.pid, port, proc, stop };
}

/**
 * A free port below the kernel's ephemeral range (ip_local_port_range, usually 32768-60999), for
 * a broker that is stopped and started again on the same port: no outgoing connection of the
 * load generators or the truck's reconnect attempts can take it in between.
 */
export async function freeStablePort(): Promise<number> {
  let low = 32768;
  try {
    low = Number.parseInt(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0] ?? '', 10) || low;
  } catch {
    // keep the usual default
  }
  const lo = Math.max(1024, low - 12_000);
  const hi = Math.max(lo + 1000, low);
  for (let i = 0; i < 50; i++) {
    const port = lo + Math.floor(Math.random() * (hi - lo));
    const ok = await new Promise<boolean>((resolve) => {
      const srv = net.createServer();
      srv.unref();
      srv.once('error', () => resolve(false));
      srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
    });
    if (ok) return port;
  }
  return freePort();
}
