// Child-process plumbing and /proc readers for the benchmark harness.
//
// Every child (brokers and mqttbench) is started through
//   bash -c 'ulimit -n 65536 || ulimit -n <hard limit>; exec "$@"'
// so the fd limit is raised and, thanks to `exec`, the pid we get back is the
// pid of the real program: /proc/<pid>/stat and /proc/<pid>/status then
// describe the broker itself, not a wrapper shell.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { closeSync, fsyncSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';

export const FD_LIMIT = 65536;

const live = new Set<ChildProcess>();

/** Keeps the last `max` characters written to a stream, for error messages. */
export class Tail {
  private text = '';
  constructor(private readonly max = 16_384) {}
  push(chunk: Buffer | string): void {
    this.text += chunk.toString();
    if (this.text.length > this.max) this.text = this.text.slice(this.text.length - this.max);
  }
  toString(): string {
    return this.text;
  }
}

export interface Spawned {
  child: ChildProcess;
  pid: number;
  stdout: Tail;
  stderr: Tail;
  /** Resolves once the process has exited (never rejects). */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Starts `cmd args...` with a raised fd limit; stdout/stderr are always drained. */
export function spawnWithFdLimit(
  cmd: string,
  args: readonly string[],
  opts: { cwd?: string; stdoutMax?: number; env?: Record<string, string> } = {},
): Spawned {
  const script = `ulimit -n ${FD_LIMIT} 2>/dev/null || ulimit -n "$(ulimit -Hn)"; exec "$@"`;
  const child = spawn('bash', ['-c', script, 'bash', cmd, ...args], {
    cwd: opts.cwd,
    ...(opts.env ? { env: { ...process.env, ...opts.env } } : {}),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  live.add(child);
  const stdout = new Tail(opts.stdoutMax ?? 16_384);
  const stderr = new Tail();
  // Drain both pipes: a broker blocked on a full stdout pipe would ruin the numbers.
  child.stdout?.on('data', (b: Buffer) => stdout.push(b));
  child.stderr?.on('data', (b: Buffer) => stderr.push(b));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('close', (code, signal) => {
      live.delete(child);
      resolve({ code, signal });
    });
    child.once('error', (err) => {
      live.delete(child);
      stderr.push(`\nspawn error: ${err.message}\n`);
      resolve({ code: null, signal: null });
    });
  });
  if (child.pid === undefined) throw new Error(`could not spawn ${cmd}`);
  return { child, pid: child.pid, stdout, stderr, exited };
}

export function isRunning(s: Spawned): boolean {
  return s.child.exitCode === null && s.child.signalCode === null;
}

/** SIGTERM, then SIGKILL after `graceMs`; resolves when the process is gone. */
export async function stopProcess(s: Spawned, graceMs = 3000): Promise<void> {
  if (!isRunning(s)) {
    await s.exited;
    return;
  }
  s.child.kill('SIGTERM');
  let timer: NodeJS.Timeout | undefined;
  const killed = new Promise<void>((resolve) => {
    timer = setTimeout(() => {
      if (isRunning(s)) s.child.kill('SIGKILL');
      resolve();
    }, graceMs);
  });
  await Promise.race([s.exited, killed]);
  clearTimeout(timer);
  await s.exited;
}

/** Synchronous last resort for exit/SIGINT paths. */
export function killAllChildren(): void {
  for (const c of live) {
    try {
      c.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
  live.clear();
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

let clkTck: number | undefined;

/** Clock ticks per second for /proc/PID/stat times (`getconf CLK_TCK`, typically 100). */
export function clockTicks(): number {
  if (clkTck === undefined) {
    let v = NaN;
    try {
      v = Number.parseInt(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim(), 10);
    } catch {
      // fall through to the default
    }
    clkTck = Number.isFinite(v) && v > 0 ? v : 100;
  }
  return clkTck;
}

/** utime + stime of a process in clock ticks (fields 14 and 15 of /proc/PID/stat). */
export function readCpuTicks(pid: number, file = `/proc/${pid}/stat`): number {
  const stat = readFileSync(file, 'utf8');
  // The command name (field 2) may contain spaces; fields after it start past the last ')'.
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // rest[0] is field 3 (state), so field N is rest[N - 3].
  const utime = Number(rest[14 - 3]);
  const stime = Number(rest[15 - 3]);
  if (!Number.isFinite(utime) || !Number.isFinite(stime)) {
    throw new Error(`cannot parse /proc/${pid}/stat`);
  }
  return utime + stime;
}

/**
 * utime + stime of a process's main thread (its tid is the pid) in clock ticks; the rest of
 * readCpuTicks is its other threads (for Convoy: the store writer, the libuv pool).
 */
export function readMainThreadCpuTicks(pid: number): number {
  return readCpuTicks(pid, `/proc/${pid}/task/${pid}/stat`);
}

/** A `kB` field (VmRSS, VmHWM ...) of /proc/PID/status. */
export function readStatusKb(pid: number, key: string): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const m = new RegExp(`^${key}:\\s+(\\d+)\\s+kB`, 'm').exec(status);
  if (!m?.[1]) throw new Error(`no ${key} in /proc/${pid}/status`);
  return Number(m[1]);
}

/**
 * `write_bytes` of /proc/PID/io: bytes this process (all its threads) caused to be sent to the
 * storage layer. Counted when a page of the page cache is dirtied, so a page rewritten after
 * each fsync counts each time; writes to tmpfs count nothing. null when the file cannot be read
 * (another user, or a kernel without task I/O accounting).
 */
export function readWriteBytes(pid: number): number | null {
  try {
    const io = readFileSync(`/proc/${pid}/io`, 'utf8');
    const m = /^write_bytes:\s+(\d+)$/m.exec(io);
    return m?.[1] ? Number(m[1]) : null;
  } catch {
    return null;
  }
}

/**
 * The fsync latency of the filesystem holding `dir` right now: median over `n` rounds of writing
 * one 4 KB block into a scratch file and fsyncing it, in µs. A durable broker's commit costs at
 * least one of these, and on a shared virtual disk it changes from minute to minute, so the
 * durable figures are reported next to it.
 */
export function fsyncProbeUs(dir: string, n = 50): number {
  const file = join(dir, `.fsync-probe-${process.pid}`);
  const fd = openSync(file, 'w');
  const block = Buffer.alloc(4096, 0x5a);
  const times: number[] = [];
  try {
    for (let i = 0; i < n; i++) {
      writeSync(fd, block, 0, block.length, (i % 16) * block.length);
      const t0 = process.hrtime.bigint();
      fsyncSync(fd);
      times.push(Number(process.hrtime.bigint() - t0) / 1000);
    }
  } finally {
    closeSync(fd);
    rmSync(file, { force: true });
  }
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)]!;
}

/** Polls until `pred()` is true; false when `timeoutMs` passed first. */
export async function waitFor(pred: () => boolean, timeoutMs: number, stepMs = 20): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (!pred()) {
    if (Date.now() > deadline) return false;
    await sleep(stepMs);
  }
  return true;
}

/**
 * Restricts every thread of a running process to `cpus` (a taskset list, e.g. "1" or "0,2-3").
 * Threads it starts later inherit the mask. Throws when taskset (util-linux) fails.
 */
export function pinToCpus(pid: number, cpus: string): void {
  try {
    execFileSync('taskset', ['-a', '-p', '-c', cpus, String(pid)], { stdio: ['ignore', 'ignore', 'pipe'] });
  } catch (err) {
    throw new Error(`could not pin pid ${pid} to CPUs ${cpus} with taskset: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
}
