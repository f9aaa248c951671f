// The store writer thread (see writer.ts): owns convoy.db's write connection, runs each batch it
// is sent as one transaction, answers, then checkpoints when enough has been written.
//
// Message garbage collection happens here, at the end of each transaction: a message is deleted
// once no delivery references it. The candidates are the message ids returned by GcSource
// statements (a deleted delivery's message) and named by GcCandidate entries. The message with
// the highest id stays until a higher one is written: it records the last id given out, without
// a counter row that would cost a page per commit.
import { parentPort, workerData } from 'node:worker_threads';
import Database from 'better-sqlite3';
import { FLAG_CLOSED, FLAG_DONE, FLAG_FAILED, StatementKind, type WorkerReply, type WorkerRequest } from './writer.js';

const { path, flags } = workerData as { path: string; flags: Int32Array };
const port = parentPort!;

/** Estimated WAL bytes after which a PASSIVE checkpoint runs (after the answer is sent). */
const CHECKPOINT_AFTER_BYTES = 1024 * 1024;
/** Rough WAL cost of one statement beyond its parameters. */
const OP_OVERHEAD_BYTES = 96;
const BUSY_TIMEOUT_MS = 5000;

interface Registered {
  stmt: Database.Statement;
  kind: StatementKind;
}

let db: Database.Database;
try {
  db = new Database(path, { timeout: BUSY_TIMEOUT_MS });
  // Per-connection settings (journal_mode = WAL is stored in the file; see db.ts for the why).
  db.pragma('synchronous = FULL');
  db.pragma('wal_autocheckpoint = 1000');
  db.pragma('journal_size_limit = 4194304');
  db.pragma('temp_store = MEMORY');
  db.pragma('foreign_keys = OFF');
} catch (err) {
  post({ type: 'fatal', message: `cannot open ${path} for writing: ${err instanceof Error ? err.message : String(err)}` });
  throw err;
}

const statements = new Map<number, Registered>();
let gcStatement: Database.Statement | null = null;
let maxMessageId = -1;
const gcCandidates = new Set<number>();
let walBytes = 0;

function post(reply: WorkerReply): void {
  port.postMessage(reply);
}

function highestMessageId(): number {
  if (maxMessageId < 0) {
    maxMessageId = (db.prepare('SELECT coalesce(max(id), 0) FROM messages').pluck().get() as number) ?? 0;
  }
  return maxMessageId;
}

let currentOps: unknown[] = [];
const args: unknown[] = [];

const transaction = db.transaction(() => {
  const ops = currentOps;
  let bytes = 0;
  for (let i = 0; i < ops.length; ) {
    const id = ops[i] as number;
    const n = ops[i + 1] as number;
    const reg = statements.get(id);
    if (reg === undefined) throw new Error(`store writer: unknown statement ${id}`);
    args.length = n;
    for (let k = 0; k < n; k++) {
      const p = ops[i + 2 + k];
      args[k] = p;
      if (p instanceof Uint8Array) bytes += p.length;
      else if (typeof p === 'string') bytes += p.length;
    }
    i += 2 + n;
    bytes += OP_OVERHEAD_BYTES;
    switch (reg.kind) {
      case StatementKind.Plain:
        reg.stmt.run(...args);
        break;
      case StatementKind.MessagePut: {
        reg.stmt.run(...args);
        const mid = args[0] as number;
        if (mid > highestMessageId()) maxMessageId = mid;
        break;
      }
      case StatementKind.GcSource:
        for (const mid of reg.stmt.all(...args) as number[]) gcCandidates.add(mid);
        break;
      case StatementKind.GcCandidate:
        gcCandidates.add(args[0] as number);
        break;
      case StatementKind.Gc:
        gcStatement = reg.stmt;
        break;
    }
  }
  if (gcCandidates.size > 0 && gcStatement !== null) {
    const max = highestMessageId();
    for (const mid of gcCandidates) if (mid < max) gcStatement.run(mid, mid);
  }
  return bytes;
});

port.on('message', (req: WorkerRequest) => {
  switch (req.type) {
    case 'statement': {
      const stmt = db.prepare(req.sql);
      if (req.kind === StatementKind.GcSource) stmt.pluck();
      statements.set(req.id, { stmt, kind: req.kind });
      if (req.kind === StatementKind.Gc) gcStatement = stmt;
      break;
    }
    case 'commit': {
      currentOps = req.ops;
      const before = maxMessageId;
      try {
        walBytes += transaction();
        // The candidates this (now committed) transaction handled; the highest id waits.
        const max = highestMessageId();
        for (const mid of gcCandidates) if (mid < max) gcCandidates.delete(mid);
        Atomics.store(flags, FLAG_FAILED, 0);
        Atomics.store(flags, FLAG_DONE, req.id);
        post({ type: 'done', id: req.id, ok: true });
      } catch (err) {
        maxMessageId = before; // the rolled-back puts do not count
        const e = err as { code?: unknown; message?: unknown };
        Atomics.store(flags, FLAG_FAILED, 1);
        Atomics.store(flags, FLAG_DONE, req.id);
        post({
          type: 'done',
          id: req.id,
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
          // A busy or failing checkpoint is retried after the next megabyte; commits go on.
        }
      }
      break;
    }
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
