// The commit writer: every write to convoy.db runs in one worker thread (writer-worker.ts) that
// owns the database's only write connection. The event loop never waits for SQLite or an fsync:
// it hands a sealed batch of statements to the worker and goes on serving clients; the worker
// runs the batch as one transaction (one WAL fsync) and answers. While it works, the next batch
// gathers on the main thread, so under load a batch holds everything that arrived during one
// commit — the slower the medium (an SD card), the larger the batches, and the cost per message
// falls as load rises. Checkpoints run in the worker as well, after it has answered.
//
// A batch is a flat array: statement id, parameter count, parameters, … (one structured clone per
// batch, no object per statement). Statements are registered once (statement()) and referred to
// by number.
//
// close() is synchronous (shutdown paths and tests rely on it): it hands over what is left and
// waits on a shared-memory flag (Atomics.wait) until the worker has committed it and closed its
// connection.
import { Worker } from 'node:worker_threads';

/** A batch of statements for one transaction. */
export class WriteBatch {
  /** Statement id, parameter count, parameters; repeated. */
  ops: unknown[] = [];

  get empty(): boolean {
    return this.ops.length === 0;
  }

  run(statement: number, ...params: unknown[]): void {
    const ops = this.ops;
    ops.push(statement, params.length);
    for (let i = 0; i < params.length; i++) ops.push(params[i]);
  }
}

/** A failed commit as the worker reported it (code: SQLite's or the system's). */
export interface WriteFailure {
  code: string;
  message: string;
}

export type WorkerRequest =
  | { type: 'statement'; id: number; sql: string }
  | { type: 'commit'; id: number; ops: unknown[] }
  | { type: 'exec'; sql: string }
  | { type: 'close' };

export type WorkerReply =
  | { type: 'done'; id: number; ok: true }
  | { type: 'done'; id: number; ok: false; code: string; message: string }
  | { type: 'fatal'; message: string };

/** Shared flags: [0] last batch finished, [1] 1 once the connection is closed, [2] 1 if that batch failed. */
export const FLAG_DONE = 0;
export const FLAG_CLOSED = 1;
export const FLAG_FAILED = 2;

const CLOSE_TIMEOUT_MS = 30_000;

export interface StoreWriterOptions {
  path: string;
  /** Called with the outcome of each commit, in order. */
  onDone(id: number, failure: WriteFailure | null): void;
  /** The worker could not start or died: every later commit fails with this. */
  onFatal(message: string): void;
}

export class StoreWriter {
  private readonly worker: Worker;
  private readonly flags = new Int32Array(new SharedArrayBuffer(12));
  private nextStatement = 1;
  private nextBatch = 1;
  private inFlight = 0;
  private dead: string | null = null;
  private closed = false;

  constructor(private readonly opts: StoreWriterOptions) {
    this.worker = new Worker(new URL('./writer-worker.js', import.meta.url), {
      workerData: { path: opts.path, flags: this.flags },
      // The parent's node options (--input-type, --cpu-prof, …) are not the writer's business.
      execArgv: [],
    });
    this.worker.unref();
    this.worker.on('message', (reply: WorkerReply) => {
      if (reply.type === 'fatal') return this.die(reply.message);
      this.inFlight--;
      if (this.inFlight === 0) this.worker.unref();
      this.opts.onDone(reply.id, reply.ok ? null : { code: reply.code, message: reply.message });
    });
    this.worker.on('error', (err) => this.die(err.message));
    this.worker.on('exit', (code) => {
      if (!this.closed) this.die(`the store writer thread exited (code ${code})`);
    });
  }

  /** Set when the worker is gone; commits cannot succeed any more. */
  get failure(): string | null {
    return this.dead;
  }

  /**
   * Whether batch `id` has committed successfully, read from shared memory: lets the owner learn
   * it at the end of its own turn instead of waiting for the reply message, which the event loop
   * may only deliver after a long run of socket reads.
   */
  committed(id: number): boolean {
    return Atomics.load(this.flags, FLAG_DONE) >= id && Atomics.load(this.flags, FLAG_FAILED) === 0;
  }

  private die(message: string): void {
    if (this.dead !== null || this.closed) return;
    this.dead = message;
    this.opts.onFatal(message);
  }

  /** Registers a statement with the worker; returns its id for WriteBatch.run. */
  statement(sql: string): number {
    const id = this.nextStatement++;
    this.post({ type: 'statement', id, sql });
    return id;
  }

  /** Runs SQL on the write connection outside any batch, in order with them (connection settings). */
  exec(sql: string): void {
    this.post({ type: 'exec', sql });
  }

  /** Sends a batch; returns its id (onDone reports it). */
  commit(batch: WriteBatch): number {
    const id = this.nextBatch++;
    if (this.inFlight++ === 0) this.worker.ref();
    this.post({ type: 'commit', id, ops: batch.ops });
    return id;
  }

  private post(req: WorkerRequest): void {
    if (this.dead !== null || this.closed) return;
    this.worker.postMessage(req);
  }

  /**
   * Commits `last` (if not empty), closes the worker's connection and waits for both. Returns
   * null when everything handed over is committed, else what went wrong.
   */
  close(last: WriteBatch | null): string | null {
    if (this.closed) return null;
    if (last !== null && !last.empty && this.dead === null) this.commit(last);
    // Every batch sent must have committed: the one still in flight too, not only `last`.
    const id = this.nextBatch - 1;
    this.post({ type: 'close' });
    const deadline = Date.now() + CLOSE_TIMEOUT_MS;
    let outcome: string | null = this.dead;
    if (this.dead === null) {
      while (Atomics.load(this.flags, FLAG_CLOSED) === 0) {
        const left = deadline - Date.now();
        if (left <= 0) {
          outcome = 'the store writer did not finish within 30 s';
          break;
        }
        Atomics.wait(this.flags, FLAG_CLOSED, 0, left);
      }
      if (outcome === null && id !== 0 && (Atomics.load(this.flags, FLAG_DONE) < id || Atomics.load(this.flags, FLAG_FAILED) === 1)) {
        outcome = 'the last commit failed';
      }
    }
    this.closed = true;
    void this.worker.terminate();
    return outcome;
  }
}
