// Child processes for tests (mosquitto_pub / mosquitto_sub): started, awaited by output or exit
// (never by sleeping), and killed by the test's cleanup.
import { spawn, type ChildProcess } from 'node:child_process';

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export class Proc {
  readonly child: ChildProcess;
  stdout = '';
  stderr = '';
  readonly exited: Promise<Exit>;
  private watchers: Array<() => void> = [];
  private done = false;

  constructor(readonly command: string, readonly args: string[]) {
    this.child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    this.child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      this.stdout += d;
      this.wake();
    });
    this.child.stderr!.setEncoding('utf8').on('data', (d: string) => {
      this.stderr += d;
      this.wake();
    });
    this.exited = new Promise((resolve, reject) => {
      this.child.once('error', reject);
      this.child.once('close', (code, signal) => {
        this.done = true;
        this.wake();
        resolve({ code, signal, stdout: this.stdout, stderr: this.stderr });
      });
    });
    this.exited.catch(() => undefined);
  }

  private wake(): void {
    const w = this.watchers;
    this.watchers = [];
    for (const f of w) f();
  }

  /** Resolves when stdout matches `re`; fails on timeout or when the process exits first. */
  waitForStdout(re: RegExp, timeoutMs = 5000): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${this.command}: timed out waiting for ${String(re)}; stdout: ${this.stdout} stderr: ${this.stderr}`)), timeoutMs);
      const check = (): void => {
        if (re.test(this.stdout)) {
          clearTimeout(timer);
          resolve();
        } else if (this.done) {
          clearTimeout(timer);
          reject(new Error(`${this.command} exited before ${String(re)}; stdout: ${this.stdout} stderr: ${this.stderr}`));
        } else {
          this.watchers.push(check);
        }
      };
      check();
    });
  }

  /** The exit, bounded by a timeout that fails the test (the process is then killed by cleanup). */
  async exit(timeoutMs = 5000): Promise<Exit> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${this.command} did not exit within ${timeoutMs} ms; stdout: ${this.stdout} stderr: ${this.stderr}`)), timeoutMs);
    });
    try {
      return await Promise.race([this.exited, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  async kill(): Promise<void> {
    if (this.done || this.child.exitCode !== null || this.child.signalCode !== null) return;
    this.child.kill('SIGKILL');
    await this.exited.catch(() => undefined);
  }
}

/** Every process a test starts, for cleanup. */
export class ProcPool {
  private readonly procs: Proc[] = [];

  start(command: string, args: string[]): Proc {
    const p = new Proc(command, args);
    this.procs.push(p);
    return p;
  }

  async killAll(): Promise<void> {
    await Promise.all(this.procs.splice(0).map((p) => p.kill()));
  }
}
