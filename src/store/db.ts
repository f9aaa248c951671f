// Opening convoy.db: pragmas, a time-bounded integrity check, schema migrations, and recovery from
// a corrupt file (moved aside, a fresh database created) so the broker never crash-loops on a bad
// store.
//
// Pragmas and why:
// - journal_mode = WAL: a commit appends to the write-ahead log (sequential writes, one fsync)
//   instead of rewriting the database pages and a rollback journal (two or more fsyncs).
// - synchronous = FULL: the WAL is fsynced at every commit, so a transaction that commit() reported
//   durable survives a power cut. With NORMAL, WAL mode only fsyncs at checkpoints: the database
//   stays consistent after a power cut, but the last transactions before it can be lost (they were
//   in the page cache, not on the medium). The broker acknowledges a QoS 1/2 PUBLISH only after its
//   commit, so NORMAL would lose acknowledged messages. The cost is one fsync per grouped commit,
//   which is why commits are grouped (see sqlite-state-store.ts).
// - busy_timeout: another process (a diagnostic sqlite3 shell) holding a lock makes us wait a
//   little instead of failing at once.
// - wal_autocheckpoint: the store runs PASSIVE checkpoints itself right after a commit has been
//   reported (so acknowledgements are not delayed by them) in steps of about 4 MB of parameters
//   (8-10 MB of WAL); the automatic checkpoint, inside a commit, stays on only as a backstop.
//   Large steps write less: a checkpoint copies each page once however often the WAL rewrote it,
//   and the hot pages (the tables' ends, the freelist, the header) are rewritten every commit.
// - journal_size_limit: after a checkpoint the WAL file is truncated back to this size, which
//   is above what a checkpoint step leaves in it. The WAL file is then reused in place: growing
//   it again after each truncation made every fsync commit file-system metadata too (measured:
//   5 % fewer durable msgs/s than with a 1 MB step, instead of 5 % more).
// - page_size = 2048 for a new database (an existing one keeps its size: changing it needs a
//   VACUUM). A commit writes every page it touched, whole, to the WAL; the hot ones (the tables'
//   ends, the freelist, the header) are touched by every commit however little changed in them,
//   so smaller pages write less: durable QoS 1 about 575 -> 510 bytes per message and the uplink
//   steady 1,000 -> 800, at the same rate (bench A/B, 3 pairs each). 1024 wrote more (930): a
//   message row no longer fits a page's local share and spills into overflow pages.
// - No foreign keys (see migrations.ts).
import fs from 'node:fs';
import nodePath from 'node:path';
import Database from 'better-sqlite3';
import { EXPECTED_TABLES, MIGRATIONS, SCHEMA_VERSION } from './migrations.js';

export type SqliteDatabase = Database.Database;

/** The part of a pino Logger the store uses. */
export interface StoreLog {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

export interface OpenDatabaseOptions {
  log: StoreLog;
  /** Time budget for the integrity check at open (default 1000 ms). */
  integrityCheckMs?: number;
}

export interface OpenDatabaseResult {
  db: SqliteDatabase;
  /**
   * The write-ahead log was there before the database was opened: the previous process did not
   * close it (closing the last connection checkpoints and deletes the WAL), so it crashed or lost
   * power. False for a new database.
   */
  unclean: boolean;
  /** Set when the file was corrupt: where it was moved and why. The broker should raise an alarm. */
  recovered?: { movedTo: string; reason: string };
}

/** Page size of a new database (see the header comment). */
export const PAGE_SIZE = 2048;
/** Backstop automatic checkpoint, in WAL bytes (the store checkpoints itself far more often). */
export const WAL_AUTOCHECKPOINT_BYTES = 16 * 1024 * 1024;
export const JOURNAL_SIZE_LIMIT = 16 * 1024 * 1024;
export const BUSY_TIMEOUT_MS = 5000;

/**
 * The per-connection settings (journal_mode = WAL is stored in the file), for the read connection
 * here and the writer thread's connection alike; see the header comment for the why.
 */
export function applyConnectionSettings(db: SqliteDatabase): void {
  db.pragma('synchronous = FULL');
  const pageSize = db.pragma('page_size', { simple: true }) as number;
  db.pragma(`wal_autocheckpoint = ${Math.ceil(WAL_AUTOCHECKPOINT_BYTES / pageSize)}`);
  db.pragma(`journal_size_limit = ${JOURNAL_SIZE_LIMIT}`);
  db.pragma('temp_store = MEMORY');
  db.pragma('foreign_keys = OFF'); // better-sqlite3 turns them on; the schema has none (migrations.ts)
}
/**
 * Conservative read rate for the integrity check (an SD card on a small ARM board): a database
 * larger than budget × this rate only gets a structural check at open.
 */
const CHECK_BYTES_PER_MS = 20_000;

/** The database was written by a newer Convoy: not corrupt, so it is left alone. */
export class StoreVersionError extends Error {
  constructor(
    readonly file: string,
    readonly version: number,
    readonly supported: number,
  ) {
    super(
      `${file} has schema version ${version}, but this Convoy supports up to version ${supported}: ` +
        'it was written by a newer Convoy. Run that newer version again, or move the file away to start ' +
        'with an empty store (sessions, queued messages and retained messages in it will not be used).',
    );
    this.name = 'StoreVersionError';
  }
}

/** Something we detected ourselves that means the file cannot be used as a Convoy store. */
class CorruptStoreError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CorruptStoreError';
  }
}

function sqliteCode(err: unknown): string | undefined {
  const code = err instanceof Error ? (err as { code?: unknown }).code : undefined;
  return typeof code === 'string' ? code : undefined;
}

function isCorruption(err: unknown): boolean {
  if (err instanceof CorruptStoreError) return true;
  const code = sqliteCode(err);
  if (code === undefined || !(err instanceof Database.SqliteError)) return false;
  return code.startsWith('SQLITE_CORRUPT') || code === 'SQLITE_NOTADB' || code === 'SQLITE_IOERR_SHORT_READ';
}

/**
 * Opens (creating if needed) the store database. A corrupt or unusable file is moved aside as
 * `<file>.corrupt-<timestamp>` (with its -wal/-shm) and a fresh database is created; `recovered`
 * says so. Throws StoreVersionError for a database from a newer Convoy, and other errors when the
 * file cannot be opened at all (permissions, read-only filesystem): those are not corruption and
 * moving the file would not help.
 */
export function openDatabase(file: string, opts: OpenDatabaseOptions): OpenDatabaseResult {
  fs.mkdirSync(nodePath.dirname(nodePath.resolve(file)), { recursive: true });
  const unclean = fs.existsSync(`${file}-wal`);
  try {
    return { db: openChecked(file, opts, true), unclean };
  } catch (err) {
    if (!(err instanceof MovedAsideError)) throw err;
    const { movedTo, reason } = err;
    opts.log.error({ file, movedTo, reason }, 'store database is corrupt: moved aside, starting with an empty store');
    // Exactly one more attempt, on a fresh file: if that fails too, the error goes to the caller.
    const db = openChecked(file, opts, false);
    return { db, unclean, recovered: { movedTo, reason } };
  }
}

class MovedAsideError extends Error {
  constructor(
    readonly movedTo: string,
    readonly reason: string,
  ) {
    super(reason);
  }
}

function openChecked(file: string, opts: OpenDatabaseOptions, mayMoveAside: boolean): SqliteDatabase {
  const db = new Database(file, { timeout: BUSY_TIMEOUT_MS });
  try {
    // Only takes effect while the file is still empty (a new database). Before journal_mode: the
    // first statement that reads the file, where a garbage header fails with SQLITE_NOTADB.
    db.pragma(`page_size = ${PAGE_SIZE}`);
    const mode = db.pragma('journal_mode = WAL', { simple: true });
    if (mode !== 'wal') throw new Error(`${file}: could not switch to WAL mode (journal_mode is ${String(mode)})`);
    applyConnectionSettings(db);

    const version = db.pragma('user_version', { simple: true }) as number;
    if (version > SCHEMA_VERSION) throw new StoreVersionError(file, version, SCHEMA_VERSION);
    if (version < 0) throw new CorruptStoreError(`invalid schema version ${version}`);

    checkIntegrity(db, file, opts);

    if (version === 0) {
      const tables = db.prepare("SELECT count(*) FROM sqlite_schema WHERE type = 'table'").pluck().get() as number;
      if (tables > 0) throw new CorruptStoreError(`schema version 0 but the file already has ${tables} tables`);
    }
    if (version < SCHEMA_VERSION) migrate(db, file, version, opts.log);
    checkSchema(db);
    return db;
  } catch (err) {
    let moved: MovedAsideError | undefined;
    if (mayMoveAside && isCorruption(err)) {
      // Renamed while still open: closing first would let SQLite checkpoint into the file or
      // delete its WAL, destroying what someone may want to examine.
      const reason = `${sqliteCode(err) ?? (err as Error).name}: ${(err as Error).message}`;
      moved = new MovedAsideError(moveAside(file), reason);
    }
    try {
      db.close();
    } catch {
      // A corrupt database may fail its closing checkpoint: nothing more to do with it.
    }
    throw moved ?? err;
  }
}

function fileSize(file: string): number {
  try {
    return fs.statSync(file).size;
  } catch {
    return 0;
  }
}

function checkIntegrity(db: SqliteDatabase, file: string, opts: OpenDatabaseOptions): void {
  const budgetMs = opts.integrityCheckMs ?? 1000;
  const size = fileSize(file) + fileSize(`${file}-wal`);
  const started = performance.now();
  if (size <= budgetMs * CHECK_BYTES_PER_MS) {
    // quick_check: page, B-tree and record structure without the (slow) index consistency check.
    const results = db.prepare('PRAGMA quick_check(5)').pluck().all() as string[];
    if (results.length !== 1 || results[0] !== 'ok') {
      throw new CorruptStoreError(`integrity check failed: ${results.join('; ')}`);
    }
  } else {
    // Too large to read entirely within the budget: check that the schema and the first and last
    // pages of every table read back. A deeper fault shows as SQLITE_CORRUPT on use, and the store
    // reports it as an I/O fault rather than crashing.
    const tables = db.prepare("SELECT name FROM sqlite_schema WHERE type = 'table'").pluck().all() as string[];
    for (const table of tables) {
      const quoted = `"${table.replaceAll('"', '""')}"`;
      db.prepare(`SELECT * FROM ${quoted} LIMIT 1`).all();
      if (Object.hasOwn(EXPECTED_TABLES, table)) {
        const key = EXPECTED_TABLES[table]?.[0] ?? 'rowid';
        db.prepare(`SELECT * FROM ${quoted} ORDER BY "${key}" DESC LIMIT 1`).all();
      }
    }
    opts.log.warn(
      { file, bytes: size, budgetMs },
      'store database too large for a full check within the budget: checked its structure only',
    );
  }
  const ms = Math.round(performance.now() - started);
  if (ms > budgetMs) opts.log.warn({ file, ms, budgetMs }, 'store integrity check took longer than its budget');
}

function migrate(db: SqliteDatabase, file: string, from: number, log: StoreLog): void {
  db.transaction(() => {
    for (let v = from; v < SCHEMA_VERSION; v++) {
      const step = MIGRATIONS[v];
      if (step === undefined) throw new Error(`missing migration ${v}`);
      db.exec(step.sql);
    }
    db.pragma(`user_version = ${SCHEMA_VERSION}`);
  })();
  if (from > 0) log.info({ file, from, to: SCHEMA_VERSION }, 'store schema migrated');
  // A new database ran every step, including ones that drop indexes: give their pages back, so
  // the free-list (counted as reusable space by the outbox budget) starts empty.
  else db.exec('VACUUM');
}

function checkSchema(db: SqliteDatabase): void {
  const columnsOf = db.prepare('SELECT name FROM pragma_table_info(?)').pluck();
  for (const [table, expected] of Object.entries(EXPECTED_TABLES)) {
    const columns = new Set(columnsOf.all(table) as string[]);
    if (columns.size === 0) {
      throw new CorruptStoreError(`schema version ${SCHEMA_VERSION} but table ${table} is missing`);
    }
    for (const column of expected) {
      if (!columns.has(column)) {
        throw new CorruptStoreError(`schema version ${SCHEMA_VERSION} but table ${table} has no column ${column}`);
      }
    }
  }
}

/** Renames the database and its companions to `<file>.corrupt-<timestamp>[-n]`; returns the new name. */
function moveAside(file: string): string {
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  let target = `${file}.corrupt-${stamp}`;
  for (let n = 1; fs.existsSync(target); n++) target = `${file}.corrupt-${stamp}-${n}`;
  fs.renameSync(file, target);
  for (const suffix of ['-wal', '-shm', '-journal']) {
    try {
      fs.renameSync(`${file}${suffix}`, `${target}${suffix}`);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
  }
  return target;
}
