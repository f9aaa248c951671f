// Starting and stopping the brokers under test, with equivalent settings:
// anonymous access, no persistence, no queue limits (QoS 1 must not be dropped
// under fan-in), and the same in-flight window per client.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { isRunning, sleep, spawnWithFdLimit, stopProcess, type Spawned } from './proc.js';

export type BrokerKind = 'convoy' | 'mosquitto';
export const BROKER_KINDS: readonly BrokerKind[] = ['convoy', 'mosquitto'];

/** Convoy `limits.max_inflight` and Mosquitto `max_inflight_messages`. */
export const MAX_INFLIGHT = 32;

export const MOSQUITTO_BIN = process.env.CONVOY_BENCH_MOSQUITTO ?? '/usr/sbin/mosquitto';

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

export interface RunningBroker {
  side: BrokerSide;
  pid: number;
  port: number;
  proc: Spawned;
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

export function convoyConfig(port: number, dataDir: string): string {
  return [
    `data_dir = ${JSON.stringify(dataDir)}`,
    '[log]',
    'level = "warn"',
    '[[listeners]]',
    'type = "tcp"',
    'host = "127.0.0.1"',
    `port = ${port}`,
    '[limits]',
    'max_connections = 20000',
    `max_inflight = ${MAX_INFLIGHT}`,
    'max_queued_messages = 0',
    'max_queued_bytes = 0',
    '[store]',
    'enabled = false',
    '[sys]',
    'interval_s = 0',
    '',
  ].join('\n');
}

export function mosquittoConfig(port: number): string {
  return [
    `listener ${port} 127.0.0.1`,
    'allow_anonymous true',
    'persistence false',
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

export async function startBroker(side: BrokerSide, root: string, readyTimeoutMs = 20_000): Promise<RunningBroker> {
  const dir = mkdtempSync(path.join(os.tmpdir(), `convoy-bench-${side.kind}-`));
  tempDirs.add(dir);
  const port = await freePort();
  let proc: Spawned;
  if (side.kind === 'convoy') {
    const dataDir = path.join(dir, 'data');
    const file = path.join(dir, 'convoy.toml');
    writeFileSync(file, convoyConfig(port, dataDir));
    const [cmd, args] = convoyCommand(root, file);
    proc = spawnWithFdLimit(cmd, args, {
      cwd: root,
    });
  } else {
    const file = path.join(dir, 'mosquitto.conf');
    writeFileSync(file, mosquittoConfig(port));
    proc = spawnWithFdLimit(MOSQUITTO_BIN, ['-c', file], { cwd: dir });
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
  return { side, pid: proc.pid, port, proc, stop: cleanup };
}

/** First line of `mosquitto -h`, e.g. "mosquitto version 2.0.11". */
export function mosquittoVersion(): string {
  const r = spawnSync(MOSQUITTO_BIN, ['-h'], { encoding: 'utf8' });
  const text = `${r.stdout ?? ''}${r.stderr ?? ''}`;
  const m = /mosquitto version (\S+)/.exec(text);
  return m?.[1] ?? 'unknown';
}
