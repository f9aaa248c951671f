// Convoy as a child process (`bin/convoy run --config FILE`) for end-to-end tests: started with a
// given environment, awaited by its `"msg":"listening"` log line (never by sleeping), SIGKILLed or
// stopped, and restarted on the same data directory and LAN port. Its JSON log lines are kept
// (across restarts) so tests can await and count events such as "uplink: connected to HQ".
//
// Every process started here is killed by `ConvoyProcess.killAll()` (call it in `after`), and, as
// a last resort, when the test process exits. Temporary data directories made here are removed
// by `cleanup()` / `killAll()`.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The checkout root (this file runs from dist/test/helpers). */
export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const CONVOY_BIN = join(REPO_ROOT, 'bin', 'convoy');
export const TRUCK_TOML = join(REPO_ROOT, 'examples', 'truck.toml');

/** One parsed JSON log line, with the process generation (0 = first start) that wrote it. */
export interface LogLine {
  level: number;
  msg: string;
  gen: number;
  /** Date.now() in the test process when the line was read. */
  at: number;
  [key: string]: unknown;
}

export interface ConvoyProcessOptions {
  /** Configuration file; default examples/truck.toml. */
  config?: string;
  /** Environment for the child (added to process.env). CONVOY_DATA and CONVOY_LAN_PORT are set here unless given. */
  env?: Record<string, string>;
  /** Data directory; default a new temp dir (removed by cleanup()). */
  dataDir?: string;
  /** LAN port; default 0 at the first start, then the port it got (so restarts keep it). */
  lanPort?: number;
  /** Deadline for the "listening" line, per start (default 10 s). */
  readyTimeoutMs?: number;
}

export interface ConvoyExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

const live = new Set<ConvoyProcess>();
let exitHook = false;

export class ConvoyProcess {
  readonly dataDir: string;
  readonly config: string;
  /** LAN port of the current (or last) process. */
  port = 0;
  /** Every log line of every generation, in order. */
  readonly logs: LogLine[] = [];
  /** Non-JSON output (stderr, stray stdout), for error messages. */
  other = '';
  /** Generation of the current process (0, 1, ... one per start). */
  gen = -1;
  private child: ChildProcess | null = null;
  private exitP: Promise<ConvoyExit> = Promise.resolve({ code: null, signal: null });
  private running = false;
  private readonly ownDir: boolean;
  private readonly env: Record<string, string>;
  private readonly readyTimeoutMs: number;
  private watchers: Array<() => void> = [];

  private constructor(opts: ConvoyProcessOptions) {
    this.ownDir = opts.dataDir === undefined;
    this.dataDir = opts.dataDir ?? mkdtempSync(join(tmpdir(), 'convoy-proc-'));
    this.config = opts.config ?? TRUCK_TOML;
    this.env = { ...(opts.env ?? {}) };
    this.port = opts.lanPort ?? Number(this.env.CONVOY_LAN_PORT ?? 0);
    this.readyTimeoutMs = opts.readyTimeoutMs ?? 10_000;
  }

  /** Starts Convoy and resolves once it logged "listening" (the LAN port is then known). */
  static async start(opts: ConvoyProcessOptions = {}): Promise<ConvoyProcess> {
    if (!exitHook) {
      exitHook = true;
      process.once('exit', () => {
        for (const p of live) p.child?.kill('SIGKILL');
      });
    }
    const p = new ConvoyProcess(opts);
    live.add(p);
    try {
      await p.spawn();
    } catch (e) {
      await p.cleanup();
      throw e;
    }
    return p;
  }

  /** Kills every process started by this helper and removes their temp dirs (for `after`). */
  static async killAll(): Promise<void> {
    await Promise.all([...live].map((p) => p.cleanup()));
  }

  get isRunning(): boolean {
    return this.running;
  }

  get pid(): number {
    return this.child?.pid ?? -1;
  }

  /** Lines of the current generation (or of `gen`). */
  linesOf(gen = this.gen): LogLine[] {
    return this.logs.filter((l) => l.gen === gen);
  }

  /** Lines (all generations) whose msg equals `msg`. */
  count(msg: string): number {
    return this.logs.filter((l) => l.msg === msg).length;
  }

  private async spawn(): Promise<void> {
    this.gen++;
    const gen = this.gen;
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      CONVOY_DATA: this.dataDir,
      CONVOY_LAN_HOST: '127.0.0.1',
      ...this.env,
      CONVOY_LAN_PORT: String(this.port),
    };
    const child = spawn(CONVOY_BIN, ['run', '--config', this.config], { stdio: ['ignore', 'pipe', 'pipe'], env });
    this.child = child;
    this.running = true;
    let partial = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      partial += d;
      let nl: number;
      while ((nl = partial.indexOf('\n')) >= 0) {
        const line = partial.slice(0, nl);
        partial = partial.slice(nl + 1);
        this.onLine(line, gen);
      }
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      this.other = (this.other + d).slice(-64 * 1024);
      this.wake();
    });
    this.exitP = new Promise((res) => {
      child.once('close', (code, signal) => {
        if (partial) this.onLine(partial, gen);
        partial = '';
        if (this.child === child) this.running = false;
        this.wake();
        res({ code, signal });
      });
    });
    child.once('error', (e) => {
      this.other += `spawn error: ${e.message}\n`;
    });
    const listening = await this.waitForLog((l) => l.msg === 'listening', { gen, timeoutMs: this.readyTimeoutMs, what: '"listening"' });
    const m = /:(\d+)$/.exec(typeof listening.listener === 'string' ? listening.listener : '');
    if (!m) throw new Error(`convoy: cannot read the LAN port from ${JSON.stringify(listening)}`);
    this.port = Number(m[1]);
  }

  private onLine(line: string, gen: number): void {
    if (line.trim() === '') return;
    try {
      const obj = JSON.parse(line) as Record<string, unknown>;
      this.logs.push({ ...obj, level: Number(obj.level), msg: typeof obj.msg === 'string' ? obj.msg : '', gen, at: Date.now() });
    } catch {
      this.other = (this.other + line + '\n').slice(-64 * 1024);
    }
    this.wake();
  }

  private wake(): void {
    const w = this.watchers;
    this.watchers = [];
    for (const f of w) f();
  }

  /**
   * Resolves with the first log line (of generation `gen`, default any, at index ≥ `from`) matching
   * `pred`; fails after the timeout or when that generation's process exits first.
   */
  waitForLog(
    pred: (l: LogLine) => boolean,
    opts: { gen?: number; from?: number; timeoutMs?: number; what?: string } = {},
  ): Promise<LogLine> {
    const timeoutMs = opts.timeoutMs ?? 10_000;
    const from = opts.from ?? 0;
    return new Promise((resolvePromise, reject) => {
      const timer = setTimeout(() => {
        reject(new Error(`convoy: timed out after ${timeoutMs} ms waiting for ${opts.what ?? 'a log line'}; ${this.tail()}`));
      }, timeoutMs);
      const check = (): void => {
        for (let i = from; i < this.logs.length; i++) {
          const l = this.logs[i]!;
          if ((opts.gen === undefined || l.gen === opts.gen) && pred(l)) {
            clearTimeout(timer);
            resolvePromise(l);
            return;
          }
        }
        if (opts.gen !== undefined && (opts.gen < this.gen || !this.running)) {
          clearTimeout(timer);
          reject(new Error(`convoy exited before ${opts.what ?? 'the awaited log line'}; ${this.tail()}`));
          return;
        }
        this.watchers.push(check);
      };
      check();
    });
  }

  /** The last log lines and stderr, for error messages. */
  tail(n = 15): string {
    const lines = this.logs.slice(-n).map((l) => `[${l.gen}] ${l.msg} ${JSON.stringify(Object.fromEntries(Object.entries(l).filter(([k]) => !['level', 'msg', 'gen', 'at', 'time', 'app'].includes(k))))}`);
    return `last log lines:\n  ${lines.join('\n  ')}\nstderr: ${this.other.slice(-2000)}`;
  }

  /** SIGKILL (a crash or power cut); resolves when the process is gone. */
  async kill(): Promise<ConvoyExit> {
    if (this.running) this.child?.kill('SIGKILL');
    return this.exitP;
  }

  /** SIGTERM (a clean stop: "offline" at HQ); SIGKILL if it has not exited after `graceMs`. */
  async stop(graceMs = 5000): Promise<ConvoyExit> {
    if (!this.running) return this.exitP;
    this.child?.kill('SIGTERM');
    const t = setTimeout(() => this.child?.kill('SIGKILL'), graceMs);
    try {
      return await this.exitP;
    } finally {
      clearTimeout(t);
    }
  }

  /** Starts a new process on the same data dir, config, environment and LAN port. */
  async restart(): Promise<void> {
    if (this.running) await this.kill();
    await this.spawn();
  }

  /** Kills the process and removes the data dir if this helper made it. Idempotent. */
  async cleanup(): Promise<void> {
    await this.kill();
    live.delete(this);
    if (this.ownDir) rmSync(this.dataDir, { recursive: true, force: true });
  }
}
