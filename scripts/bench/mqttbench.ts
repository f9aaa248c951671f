// Building and running the shared C load generator (mqttbench.c), and building the benchmark's
// own C pieces: the slow-storage shim (bench/slow-fsync.c) and the persistent-session subscriber
// (bench/persistent-sub.c).
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { isRunning, spawnWithFdLimit, stopProcess, waitFor, type Spawned } from './proc.js';

/** A C source built with gcc into bench/.build/. */
export interface BuiltBinary {
  source: string;
  binary: string;
  rebuilt: boolean;
  gccArgs: string[];
}

/** `../shared/tools/mqttbench/mqttbench.c` relative to the project root, or $CONVOY_MQTTBENCH_SRC. */
export function mqttbenchSource(root: string): string {
  const env = process.env.CONVOY_MQTTBENCH_SRC;
  return path.resolve(root, env && env.length > 0 ? env : '../shared/tools/mqttbench/mqttbench.c');
}

/**
 * The build line from the source's header comment
 * (`gcc -O2 -Wall -o mqttbench mqttbench.c -lpthread`), with the output and
 * source paths substituted.
 */
function gccArgsFor(source: string, out: string, fallback: string): string[] {
  const head = readFileSync(source, 'utf8').slice(0, 4000);
  const m = /^[\s*]*gcc\s+(.+?)\s*$/m.exec(head);
  const tokens = (m?.[1] ?? fallback).split(/\s+/);
  const args: string[] = [];
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i] ?? '';
    if (t === '-o') {
      args.push('-o', out);
      i++;
    } else if (t.endsWith('.c')) {
      args.push(source);
    } else {
      args.push(t);
    }
  }
  return args;
}

/** Builds into bench/.build/ unless the binary is newer than the source. */
export function ensureMqttbench(root: string): BuiltBinary {
  const source = mqttbenchSource(root);
  if (!existsSync(source)) {
    throw new Error(`mqttbench source not found at ${source} (set CONVOY_MQTTBENCH_SRC)`);
  }
  return buildC(root, source, 'mqttbench', '-O2 -Wall -o mqttbench mqttbench.c -lpthread');
}

/**
 * bench/slow-fsync.c built as bench/.build/slow-fsync.so: an LD_PRELOAD shim that makes fsync
 * and fdatasync take CONVOY_FSYNC_DELAY_US longer and wait for the bytes written since the last
 * sync at CONVOY_STORAGE_KB_PER_S (--fsync-delay-us, --storage-kb-s: storage as slow as an SD card).
 */
export function ensureSlowFsync(root: string): BuiltBinary {
  return buildC(root, path.join(root, 'bench', 'slow-fsync.c'), 'slow-fsync.so', '-O2 -Wall -shared -fPIC -o slow-fsync.so slow-fsync.c -ldl');
}

/**
 * bench/persistent-sub.c built as bench/.build/persistent-sub: the persistent-session subscriber
 * of durable-qos1 and the counting subscriber at HQ of uplink-drain.
 */
export function ensurePersistentSub(root: string): BuiltBinary {
  return buildC(root, path.join(root, 'bench', 'persistent-sub.c'), 'persistent-sub', '-O2 -Wall -o persistent-sub persistent-sub.c');
}

/** Builds `source` with the gcc line of its header comment into bench/.build/`name`, unless up to date. */
function buildC(root: string, source: string, name: string, fallbackLine: string): BuiltBinary {
  const dir = path.join(root, 'bench', '.build');
  mkdirSync(dir, { recursive: true });
  const ignore = path.join(dir, '.gitignore');
  if (!existsSync(ignore)) writeFileSync(ignore, '# build output of the benchmark harness\n*\n');
  const binary = path.join(dir, name);
  const stamp = `${binary}.source`;
  const tmp = `${binary}.tmp-${process.pid}`;
  const buildArgs = gccArgsFor(source, tmp, fallbackLine);
  // as recorded in the results: the final path, not the temporary one gcc writes to
  const gccArgs = buildArgs.map((a) => (a === tmp ? binary : a));
  const upToDate =
    existsSync(binary) &&
    existsSync(stamp) &&
    readFileSync(stamp, 'utf8') === source &&
    statSync(binary).mtimeMs >= statSync(source).mtimeMs;
  if (upToDate) return { source, binary, rebuilt: false, gccArgs };
  process.stderr.write(`building ${name}: gcc ${gccArgs.join(' ')}\n`);
  execFileSync('gcc', buildArgs, { stdio: ['ignore', 'inherit', 'inherit'] });
  renameSync(tmp, binary);
  writeFileSync(stamp, source);
  return { source, binary, rebuilt: true, gccArgs };
}

export type BenchJson = Record<string, unknown>;

export interface BenchRun {
  exitCode: number | null;
  signal: string | null;
  json: BenchJson | null;
  stderr: string;
  wallS: number;
}

/**
 * Runs mqttbench (or another tool that ends with one JSON line on stdout, like the Node drivers)
 * and parses that line.
 */
export async function runMqttbench(binary: string, args: readonly string[], killAfterMs: number): Promise<BenchRun> {
  const t0 = process.hrtime.bigint();
  const p = spawnWithFdLimit(binary, args, { stdoutMax: 1 << 20 });
  const timer = setTimeout(() => void stopProcess(p, 1000), killAfterMs);
  const { code, signal } = await p.exited;
  clearTimeout(timer);
  const wallS = Number(process.hrtime.bigint() - t0) / 1e9;
  return { exitCode: code, signal, json: lastJsonLine(p.stdout.toString()), stderr: p.stderr.toString(), wallS };
}

/** The last line of `text` that is a JSON object (optionally skipping some), or null. */
export function lastJsonLine(text: string, skip: (line: string) => boolean = () => false): BenchJson | null {
  const lines = text.split('\n').filter((l) => l.startsWith('{') && !skip(l));
  const last = lines[lines.length - 1];
  if (last === undefined) return null;
  try {
    const v: unknown = JSON.parse(last);
    return v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as BenchJson) : null;
  } catch {
    return null; // the caller reports stderr
  }
}

/** A numeric field of the mqttbench JSON, or null when absent / negative sentinel. */
export function num(json: BenchJson | null, key: string): number | null {
  const v = json?.[key];
  return typeof v === 'number' && Number.isFinite(v) && v >= 0 ? v : null;
}

export function mqttbenchVersion(binary: string): string {
  // --help prints its banner ("mqttbench 1.0 - ...") on stderr.
  const r = spawnSync(binary, ['--help'], { encoding: 'utf8' });
  return /mqttbench (\S+)/.exec(`${r.stdout ?? ''}${r.stderr ?? ''}`)?.[1] ?? 'unknown';
}

/** Starts the persistent-session subscriber and waits until its subscription is acknowledged. */
export async function startPersistentSub(
  subBinary: string,
  port: number,
  expected: number,
  timeoutS: number,
  clientId: string,
  filter: string,
): Promise<Spawned> {
  const p = spawnWithFdLimit(subBinary, [
    '--port', String(port),
    '--expected', String(expected),
    '--client-id', clientId,
    '--filter', filter,
    '--timeout', String(timeoutS + 60),
  ]);
  const ready = await waitFor(() => p.stdout.toString().includes('"ready":true') || !isRunning(p), 15_000);
  if (!ready || !isRunning(p)) {
    await stopProcess(p, 500);
    throw new Error(`the persistent subscriber did not subscribe:\n${p.stdout.toString()}${p.stderr.toString()}`);
  }
  return p;
}

/** Waits for the subscriber to have everything (it exits), else stops it: it then reports what it has. */
export async function finishPersistentSub(p: Spawned, waitMs: number): Promise<{ exitCode: number | null; json: BenchJson | null; stderr: string }> {
  if (!(await waitFor(() => !isRunning(p), waitMs, 10))) await stopProcess(p, 3000);
  const { code } = await p.exited;
  return { exitCode: code, json: lastJsonLine(p.stdout.toString(), (l) => l.includes('"ready":true')), stderr: p.stderr.toString() };
}
