// The store writer thread (see writer.ts): owns convoy.db's write connection, runs each batch it
// is sent as one transaction, answers, then checkpoints when enough has been written.
import { parentPort, workerData } from 'node:worker_threads';
import Database from 'better-sqlite3';
import { applyConnectionSettings, BUSY_TIMEOUT_MS } from './db.js';
import { multiRowInsert } from './multi-row.js';
import { FLAG_CLOSED, FLAG_DONE, FLAG_FAILED, type WorkerReply, type WorkerRequest } from './writer.js';

const { path, flags } = workerData as { path: string; flags: Int32Array };
const port = parentPort!;

/** Estimated WAL bytes after which a PASSIVE checkpoint runs (after the answer is sent). */
const CHECKPOINT_AFTER_BYTES = 4 * 1024 * 1024;
/** Rough WAL cost of one statement beyond its parameters. */
const OP_OVERHEAD_BYTES = 96;
/**
 * Page cache of this connection, KiB (SQLite's default is 2,000). SQLite ends each commit by
 * truncating the page cache to the database's size; with the default cache, that walk of its hash
 * table (pcache1TruncateUnsafe) was 4 % of a drain's CPU in a truck that had drained before (perf,
 * this thread). The writer only touches the tables' ends, the freelist and the pages it rewrites,
 * so a small cache serves it as well: with 256 KiB the walk went to 0.1 %, durable QoS 1 was
 * unchanged and the drain's CPU went down (bench A/B, 3 pairs each).
 */
const WRITER_CACHE_KIB = 256;

function post(reply: WorkerReply): void {
  port.postMessage(reply);
}

let db: Database.Database;
try {
  db = new Database(path, { timeout: BUSY_TIMEOUT_MS });
  applyConnectionSettings(db);
  db.pragma(`cache_size = -${WRITER_CACHE_KIB}`);
} catch (err) {
  post({ type: 'fatal', message: `cannot open ${path} for writing: ${err instanceof Error ? err.message : String(err)}` });
  throw err;
}

/** A registered statement; an INSERT also gets a MULTI_ROWS-row form (multi-row.ts), prepared when first needed. */
interface Registered {
  stmt: Database.Statement;
  sql: string;
  /** undefined: not prepared yet; null: not a single-row INSERT. */
  multi: Database.Statement | null | undefined;
}

/** Rows per multi-row INSERT: most of the per-statement saving, and a batch's runs are often shorter than 64. */
const MULTI_ROWS = 16;

const statements = new Map<number, Registered>();
let walBytes = 0;
let currentOps: unknown[] = [];
const args: unknown[] = [];

function multiOf(r: Registered): Database.Statement | null {
  if (r.multi === undefined) {
    const sql = multiRowInsert(r.sql, MULTI_ROWS);
    r.multi = sql === null ? null : db.prepare(sql);
  }
  return r.multi;
}

/** Rough bytes a parameter adds to the WAL. */
function paramBytes(p: unknown): number {
  if (p instanceof Uint8Array || typeof p === 'string') return p.length;
  return 0;
}

/**
 * Runs the flat batch (statement id, parameter count, parameters; repeated); returns rough bytes
 * written. A run of MULTI_ROWS or more of the same INSERT goes MULTI_ROWS rows per statement.
 */
const transaction = db.transaction((): number => {
  const ops = currentOps;
  let bytes = 0;
  for (let i = 0; i < ops.length; ) {
    const id = ops[i] as number;
    const n = ops[i + 1] as number;
    const r = statements.get(id);
    if (r === undefined) throw new Error(`store writer: unknown statement ${id}`);
    const step = 2 + n;
    const end = i + MULTI_ROWS * step;
    let many = end <= ops.length;
    for (let j = i + step; many && j < end; j += step) many = ops[j] === id;
    const multi = many ? multiOf(r) : null;
    // One statement for MULTI_ROWS rows of a run, else for this row alone.
    const rows = multi !== null ? MULTI_ROWS : 1;
    args.length = rows * n;
    let a = 0;
    for (let row = 0; row < rows; row++, i += step) {
      for (let k = 0; k < n; k++) {
        const p = ops[i + 2 + k];
        args[a++] = p;
        bytes += paramBytes(p);
      }
    }
    bytes += rows * OP_OVERHEAD_BYTES;
    (multi ?? r.stmt).run(args);
  }
  return bytes;
});

function commit(id: number, ops: unknown[]): void {
  currentOps = ops;
  try {
    walBytes += transaction();
    Atomics.store(flags, FLAG_FAILED, 0);
    Atomics.store(flags, FLAG_DONE, id);
    post({ type: 'done', id, ok: true });
  } catch (err) {
    const e = err as { code?: unknown; message?: unknown };
    Atomics.store(flags, FLAG_FAILED, 1);
    Atomics.store(flags, FLAG_DONE, id);
    post({
      type: 'done',
      id,
      ok: false,
      code: typeof e.code === 'string' ? e.code : '',
      message: typeof e.message === 'string' ? e.message : String(err),
    });
  } finally {
    currentOps = [];
    args.length = 0;
  }
  if (walBytes >= CHECKPOINT_AFTER_BYTES) {
    walBytes = 0;
    try {
      db.pragma('wal_checkpoint(PASSIVE)');
    } catch {
      // A busy or failing checkpoint is retried after the next step; commits go on.
    }
  }
}

port.on('message', (req: WorkerRequest) => {
  switch (req.type) {
    case 'statement':
      try {
        statements.set(req.id, { stmt: db.prepare(req.sql), sql: req.sql, multi: undefined });
      } catch (err) {
        post({ type: 'fatal', message: `store writer: cannot prepare ${req.sql}: ${err instanceof Error ? err.message : String(err)}` });
      }
      break;
    case 'commit':
      commit(req.id, req.ops);
      break;
    case 'exec':
      try {
        db.exec(req.sql);
      } catch (err) {
        post({ type: 'fatal', message: `store writer: ${req.sql}: ${err instanceof Error ? err.message : String(err)}` });
      }
      break;
    case 'close':
      try {
        db.close();
      } finally {
        Atomics.store(flags, FLAG_CLOSED, 1);
        Atomics.notify(flags, FLAG_CLOSED);
        port.close();
      }
      break;
  }
});
