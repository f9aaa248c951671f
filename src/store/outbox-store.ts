// The outbox's rows (low level: no budget, no eviction policy, no clock; see bridge/outbox.ts).
//
// Two implementations with the same behaviour:
// - SqliteOutboxStore: the `outbox` table of convoy.db. It is a participant of the state store's
//   grouped commits (SqliteStateStore.attachParticipant): append/delete only record pending work,
//   which is written in the same transaction as the broker's journal changes of that event-loop
//   turn (one fsync; a PUBLISH routed uplink is acknowledged only once both are durable).
// - MemoryOutboxStore: the same on a MemoryStateStore (or on its own), for a gateway without a
//   data directory.
//
// Pending, sealed, committed: pending work is what no commit has taken yet; sealed work is in a
// commit the writer thread is running (or in a failed one that will be retried); committed work
// is durable. readCommitted and newestPerTopic return only committed rows (minus rows deleted but
// not committed yet), so the forwarder never sends a record that a crash could still take back —
// a seq that reached HQ is never given to another message. oldest, expired, delete and totals see
// pending and sealed appends too (the budget counts what was accepted). onCommitted listeners are
// told after each commit that made appends durable.
//
// The seq high-water mark: max(seq) of the table covers committed appends; a transaction that
// deletes rows also writes the highest seq appended so far to outbox_meta, so an outbox emptied by
// acknowledgements does not restart at 1 after a restart (HQ would take new messages for
// duplicates). Seqs of appends lost in a crash before their commit are given out again: they never
// reached HQ (see above) and no publisher was acknowledged for them.
import type { QoS } from '../mqtt/packets.js';
import { OUTBOX_CLASSES, type OutboxClass, type OutboxRecord } from '../bridge/types.js';
import { emptyTotals, totalBytes, type ClassTotalsByClass } from '../bridge/eviction.js';
import { MemoryStateStore } from './memory-state-store.js';
import {
  decodeProperties,
  encodeProperties,
  type CommitParticipant,
  type SqliteStateStore,
  type WriteBatch,
} from './sqlite-state-store.js';
import { noGaps, seqRuns } from './seq-runs.js';
import type { StoreFault } from './state-store.js';

/** A record with the bytes it counts for in the budget. */
export interface OutboxRow extends OutboxRecord {
  size: number;
}

/** What eviction and removal need to know about a row. */
export interface OutboxRowRef {
  seq: number;
  cls: OutboxClass;
  size: number;
}

type ExpiredRef = OutboxRowRef & { expiresAt: number };

/** Where the outbox store's pending work commits. */
export interface CommitHost {
  attachParticipant(p: CommitParticipant): () => void;
  commit(): Promise<void>;
  readonly fault: StoreFault | null;
}

export interface OutboxStore {
  /** Highest seq appended so far (pending included); at open, the highest ever committed. */
  readonly lastSeq: number;
  /** Highest seq whose append is committed (readable). */
  readonly committedSeq: number;
  /** Appends or deletes wait for a commit. */
  readonly hasPending: boolean;
  /**
   * Adds a row; its seq must be greater than lastSeq. Committed with the next grouped commit. The
   * store keeps the object (no copy per message): the caller must not change it afterwards, and
   * reads may hand out that same object.
   */
  append(row: OutboxRow): void;
  /** Deletes a row (committed or pending). Returns what it was, or null when there is no such row. */
  delete(seq: number): OutboxRowRef | null;
  /** Committed rows of a class with seq > afterSeq, in seq order, at most limit. */
  readCommitted(cls: OutboxClass, afterSeq: number, limit: number): OutboxRow[];
  /** The newest committed row of each local topic of a class: the `limit` most recent ones, in seq order. */
  newestPerTopic(cls: OutboxClass, limit: number): OutboxRow[];
  /** The oldest rows of a class (committed or pending), in seq order. */
  oldest(cls: OutboxClass, limit: number): OutboxRowRef[];
  /** Rows with 0 < expiresAt <= now (committed or pending), soonest expiry first. */
  expired(now: number, limit: number): OutboxRowRef[];
  /** Count and bytes per class (pending appends and deletes included). A copy. */
  totals(): ClassTotalsByClass;
  /** Bytes of all classes (as totals(), without the copy: asked on every append). */
  totalBytes(): number;
  /** Free bytes inside the database file (reused before it grows); 0 in memory. */
  reusableBytes(): number;
  /** Called after each commit that made appends readable, with committedSeq. Returns an unsubscribe. */
  onCommitted(cb: (committedSeq: number) => void): () => void;
}

export const CLASS_CODE: Record<OutboxClass, number> = { alarm: 0, event: 1, telemetry: 2, bulk: 3 };

function classOf(code: number): OutboxClass {
  return OUTBOX_CLASSES[code] ?? 'bulk';
}

function ref(row: OutboxRow): OutboxRowRef {
  return { seq: row.seq, cls: row.cls, size: row.size };
}

function copyRow(row: OutboxRow): OutboxRow {
  const copy: OutboxRow = { ...row };
  if (row.properties !== undefined) copy.properties = { ...row.properties };
  return copy;
}

/** What both stores share: pending appends/deletes, totals, listeners, commit requests. */
abstract class OutboxStoreBase implements OutboxStore, CommitParticipant {
  protected readonly counts = emptyTotals();
  /** Appends not committed yet, by seq (insertion order = seq order). */
  protected readonly pendingAppends = new Map<number, OutboxRow>();
  /** Committed rows deleted, not committed yet. */
  protected readonly pendingDeletes = new Set<number>();
  /** Appends and deletes in a commit that has not been confirmed yet. */
  protected readonly sealedAppends = new Map<number, OutboxRow>();
  protected readonly sealedDeletes = new Set<number>();
  protected last = 0;
  protected committedMax = 0;
  /** No pending or sealed append expires before this. */
  protected pendingMinExpiry = Infinity;
  private readonly listeners = new Set<(seq: number) => void>();
  private retryTimer: NodeJS.Timeout | null = null;

  protected constructor(protected readonly host: CommitHost) {}

  get lastSeq(): number {
    return this.last;
  }

  get committedSeq(): number {
    return this.committedMax;
  }

  get hasPending(): boolean {
    return this.pendingAppends.size > 0 || this.pendingDeletes.size > 0;
  }

  /** Deleted, but the delete is not committed yet. */
  protected deleting(seq: number): boolean {
    return this.pendingDeletes.has(seq) || this.sealedDeletes.has(seq);
  }

  protected readonly isDeleting = (seq: number): boolean => this.deleting(seq);

  append(row: OutboxRow): void {
    if (!(row.seq > this.last)) throw new RangeError(`outbox seq ${row.seq} is not above ${this.last}`);
    this.last = row.seq;
    this.pendingAppends.set(row.seq, row);
    const t = this.counts[row.cls];
    t.count++;
    t.bytes += row.size;
    if (row.expiresAt > 0 && row.expiresAt < this.pendingMinExpiry) this.pendingMinExpiry = row.expiresAt;
    this.requestCommit();
  }

  delete(seq: number): OutboxRowRef | null {
    const pending = this.pendingAppends.get(seq);
    let found: OutboxRowRef | null;
    if (pending !== undefined) {
      this.pendingAppends.delete(seq);
      found = ref(pending);
    } else {
      if (this.deleting(seq)) return null;
      const sealed = this.sealedAppends.get(seq);
      found = sealed !== undefined ? ref(sealed) : this.lookupCommitted(seq);
      if (found === null) return null;
      this.pendingDeletes.add(seq);
      this.requestCommit();
    }
    const t = this.counts[found.cls];
    t.count--;
    t.bytes -= found.size;
    return found;
  }

  totalBytes(): number {
    return totalBytes(this.counts);
  }

  totals(): ClassTotalsByClass {
    const t = emptyTotals();
    for (const cls of OUTBOX_CLASSES) t[cls] = { ...this.counts[cls] };
    return t;
  }

  onCommitted(cb: (committedSeq: number) => void): () => void {
    this.listeners.add(cb);
    return () => this.listeners.delete(cb);
  }

  oldest(cls: OutboxClass, limit: number): OutboxRowRef[] {
    if (limit <= 0) return [];
    const out = this.oldestCommitted(cls, limit);
    // Sealed rows the writer has committed already may be in `out`: seqs only grow, so skip up to its last.
    let after = out.length > 0 ? out[out.length - 1]!.seq : 0;
    for (const rows of [this.sealedAppends, this.pendingAppends]) {
      for (const row of rows.values()) {
        if (out.length >= limit) return out;
        if (row.cls !== cls || row.seq <= after || this.deleting(row.seq)) continue;
        out.push(ref(row));
        after = row.seq;
      }
    }
    return out;
  }

  expired(now: number, limit: number): OutboxRowRef[] {
    if (limit <= 0) return [];
    const found = this.expiredCommitted(now, limit);
    if (now >= this.pendingMinExpiry) {
      const seen = new Set(found.map((r) => r.seq));
      for (const rows of [this.sealedAppends, this.pendingAppends]) {
        for (const row of rows.values()) {
          if (row.expiresAt > 0 && row.expiresAt <= now && !seen.has(row.seq) && !this.deleting(row.seq)) {
            found.push({ ...ref(row), expiresAt: row.expiresAt });
          }
        }
      }
    }
    found.sort((a, b) => a.expiresAt - b.expiresAt || a.seq - b.seq);
    return found.slice(0, limit).map((r) => ({ seq: r.seq, cls: r.cls, size: r.size }));
  }

  // ---- the participant ----

  seal(batch: WriteBatch): void {
    this.write(batch);
    for (const [seq, row] of this.pendingAppends) this.sealedAppends.set(seq, row);
    for (const seq of this.pendingDeletes) this.sealedDeletes.add(seq);
    this.pendingAppends.clear();
    this.pendingDeletes.clear();
  }

  committed(): void {
    let appended = 0;
    for (const seq of this.sealedAppends.keys()) if (seq > appended) appended = seq;
    this.afterCommit();
    this.sealedAppends.clear();
    this.sealedDeletes.clear();
    let min = Infinity;
    for (const row of this.pendingAppends.values()) if (row.expiresAt > 0 && row.expiresAt < min) min = row.expiresAt;
    this.pendingMinExpiry = min;
    if (appended > this.committedMax) {
      this.committedMax = appended;
      for (const cb of [...this.listeners]) cb(this.committedMax);
    }
  }

  /** Adds the statements of the pending work to a commit (SQLite) or nothing (memory). */
  protected abstract write(batch: WriteBatch): void;

  /** Moves the (just committed) sealed work into the committed view, where the store keeps one. */
  protected abstract afterCommit(): void;

  protected abstract lookupCommitted(seq: number): OutboxRowRef | null;
  /** Committed rows (not pending deletes) of a class, oldest first. */
  protected abstract oldestCommitted(cls: OutboxClass, limit: number): OutboxRowRef[];
  /** Committed expired rows (not pending deletes), soonest expiry first. */
  protected abstract expiredCommitted(now: number, limit: number): ExpiredRef[];
  abstract readCommitted(cls: OutboxClass, afterSeq: number, limit: number): OutboxRow[];
  abstract newestPerTopic(cls: OutboxClass, limit: number): OutboxRow[];
  abstract reusableBytes(): number;

  /** Makes sure a commit is coming for new pending work. */
  protected abstract requestCommit(): void;

  /** A failed commit is retried (every second while the store is faulted) as long as work is pending. */
  protected commitFailed(): void {
    if (this.retryTimer !== null || this.host.fault === null) return;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      if (this.hasPending) this.host.commit().catch(() => this.commitFailed());
    }, 1000);
    this.retryTimer.unref();
  }
}

/**
 * A row as the read statements return it: an array in COLUMNS order (better-sqlite3's raw mode,
 * measured 30 % cheaper per row than an object with named keys; the backlog drain reads every
 * row of a large outbox from here).
 */
type SqlRow = [
  seq: number,
  cls: number,
  localTopic: string,
  topic: string,
  payload: Buffer,
  qos: number,
  properties: string | null,
  createdAt: number,
  expiresAt: number,
  size: number,
];

function rowFromSql(r: SqlRow): OutboxRow {
  const row: OutboxRow = {
    seq: r[0],
    cls: classOf(r[1]),
    localTopic: r[2],
    topic: r[3],
    payload: r[4],
    qos: r[5] as QoS,
    createdAt: r[7],
    expiresAt: r[8],
    size: r[9],
  };
  if (r[6] !== null) row.properties = decodeProperties(r[6]);
  return row;
}

/** Rows newestPerTopic looks at (the newest of the class). */
const NEWEST_SCAN_ROWS = 4096;
/** Bytes of committed rows SqliteOutboxStore keeps in memory (its tail). */
const TAIL_MAX_BYTES = 4 * 1024 * 1024;
/** Entries of SqliteOutboxStore.handedOut (a few in-flight windows). */
const HANDED_OUT_MAX = 8192;

const COLUMNS = 'seq, cls, local_topic, topic, payload, qos, properties, created_at, expires_at, size';

export class SqliteOutboxStore extends OutboxStoreBase {
  private readonly stmt;
  private readonly write_;
  private readonly pageSize: number;
  private commitRequested = false;
  /** See oldestCommitted and expiredCommitted. */
  private readonly headSkip: Record<OutboxClass, number> = { alarm: 0, event: 0, telemetry: 0, bulk: 0 };
  private expiredSkip = { expiresAt: 0, seq: 0 };
  /** No committed row expires before this (a lower bound). */
  private nextExpiry = 0;
  /**
   * Class and size of committed rows recently handed out (readCommitted, newestPerTopic): deleting
   * one once HQ has acknowledged it then needs no lookup. Bounded; a miss falls back to the table.
   */
  private readonly handedOut = new Map<number, OutboxRowRef>();
  /**
   * The newest committed rows, kept in memory after their commit: per class, every live committed
   * row with seq > tailFrom[cls] is in tail[cls]. A read whose cursor is past tailFrom (the usual
   * case while the link is up: rows are read soon after they commit) needs no SQL. Bounded by
   * TAIL_MAX_BYTES: beyond it the oldest rows leave the tail and tailFrom moves up.
   */
  private readonly tail = new CommittedRows();
  private readonly tailFrom: Record<OutboxClass, number> = { alarm: 0, event: 0, telemetry: 0, bulk: 0 };

  constructor(
    private readonly state: SqliteStateStore,
    private readonly tailMaxBytes = TAIL_MAX_BYTES,
  ) {
    super(state);
    const db = state.db;
    this.write_ = {
      insert: state.statement(`INSERT OR REPLACE INTO outbox (${COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`),
      deleteRange: state.statement('DELETE FROM outbox WHERE seq BETWEEN ? AND ?'),
      setLastSeq: state.statement('UPDATE outbox_meta SET last_seq = max(last_seq, ?) WHERE id = 1'),
    };
    this.stmt = {
      lookup: db.prepare('SELECT cls, size FROM outbox WHERE seq = ?'),
      after: db.prepare(`SELECT ${COLUMNS} FROM outbox WHERE cls = ? AND seq > ? ORDER BY seq LIMIT ?`).raw(true),
      // The newest rows of a class, newest first (outbox_by_class backwards).
      newestOfClass: db.prepare(`SELECT ${COLUMNS} FROM outbox WHERE cls = ? ORDER BY seq DESC LIMIT ?`).raw(true),
      expired: db.prepare(
        'SELECT seq, cls, size, expires_at FROM outbox WHERE expires_at > 0 AND (expires_at, seq) > (?, ?) ' +
          'AND expires_at <= ? ORDER BY expires_at, seq LIMIT ?',
      ),
      oldest: db.prepare('SELECT seq, size FROM outbox WHERE cls = ? AND seq > ? ORDER BY seq LIMIT ?'),
      nextExpiry: db.prepare('SELECT min(expires_at) FROM outbox WHERE expires_at > ?').pluck(),
      freelist: db.prepare('PRAGMA freelist_count').pluck(),
    };
    this.pageSize = db.pragma('page_size', { simple: true }) as number;

    for (const r of db.prepare('SELECT cls, count(*) AS n, coalesce(sum(size), 0) AS bytes FROM outbox GROUP BY cls').all() as {
      cls: number;
      n: number;
      bytes: number;
    }[]) {
      const t = this.counts[classOf(r.cls)];
      t.count += r.n;
      t.bytes += r.bytes;
    }
    const maxRow = db.prepare('SELECT coalesce(max(seq), 0) FROM outbox').pluck().get() as number;
    const meta = (db.prepare('SELECT last_seq FROM outbox_meta WHERE id = 1').pluck().get() as number | undefined) ?? 0;
    this.last = Math.max(maxRow, meta);
    this.committedMax = this.last;
    for (const cls of OUTBOX_CLASSES) this.tailFrom[cls] = this.last;
    state.attachParticipant(this);
  }

  protected write(batch: WriteBatch): void {
    // Work added from now on needs a commit of its own.
    this.commitRequested = false;
    const s = this.write_;
    for (const r of this.pendingAppends.values()) {
      batch.run(
        s.insert,
        r.seq,
        CLASS_CODE[r.cls],
        r.localTopic,
        r.topic,
        r.payload,
        r.qos,
        encodeProperties(r.properties),
        r.createdAt,
        r.expiresAt,
        r.size,
      );
    }
    if (this.pendingDeletes.size > 0) {
      // HQ acknowledges mostly in order: consecutive seqs go as one range. (A seq between two runs
      // may be a live row of another class, so runs never span a gap.)
      const runs = seqRuns([...this.pendingDeletes], noGaps);
      for (let i = 0; i < runs.length; i += 2) batch.run(s.deleteRange, runs[i], runs[i + 1]);
      batch.run(s.setLastSeq, this.last);
    }
  }

  protected requestCommit(): void {
    // The state store defers the flush to the end of this turn (or its window) and gathers every
    // commit() of the turn, the broker's included, into it. One request per batch.
    if (this.commitRequested) return;
    this.commitRequested = true;
    this.state.commit().catch(() => {
      this.commitRequested = false;
      this.commitFailed();
    });
  }

  protected override afterCommit(): void {
    // The table is the committed view; the tail mirrors its newest rows.
    this.expiredSkip = { expiresAt: 0, seq: 0 };
    if (this.pendingMinExpiry < this.nextExpiry) this.nextExpiry = this.pendingMinExpiry;
    for (const seq of this.sealedDeletes) this.tail.remove(seq);
    for (const row of this.sealedAppends.values()) if (!this.sealedDeletes.has(row.seq)) this.tail.add(row);
    // Over budget: the oldest rows leave the tail (they stay in the table).
    while (this.tail.bytes > this.tailMaxBytes) {
      const { cls, upTo } = this.tail.dropOldest();
      if (upTo > this.tailFrom[cls]) this.tailFrom[cls] = upTo;
    }
  }

  private handOut(r: SqlRow): OutboxRow {
    const row = rowFromSql(r);
    const cache = this.handedOut;
    cache.set(row.seq, { seq: row.seq, cls: row.cls, size: row.size });
    if (cache.size > HANDED_OUT_MAX) {
      for (const seq of cache.keys()) {
        cache.delete(seq);
        if (cache.size <= HANDED_OUT_MAX / 2) break;
      }
    }
    return row;
  }

  protected lookupCommitted(seq: number): OutboxRowRef | null {
    const known = this.handedOut.get(seq);
    if (known !== undefined) {
      this.handedOut.delete(seq);
      return known;
    }
    const inTail = this.tail.get(seq);
    if (inTail !== undefined) return ref(inTail);
    const r = this.stmt.lookup.get(seq) as { cls: number; size: number } | undefined;
    return r === undefined ? null : { seq, cls: classOf(r.cls), size: r.size };
  }

  readCommitted(cls: OutboxClass, afterSeq: number, limit: number): OutboxRow[] {
    const out: OutboxRow[] = [];
    // Everything after the cursor is in the tail.
    if (afterSeq >= this.tailFrom[cls]) return this.tail.after(cls, afterSeq, limit, this.isDeleting);
    let after = afterSeq;
    while (out.length < limit) {
      const want = limit - out.length;
      const rows = this.stmt.after.all(CLASS_CODE[cls], after, want) as SqlRow[];
      for (const r of rows) {
        // Committed by the writer but not confirmed yet: next time.
        if (r[0] > this.committedMax) return out;
        if (!this.deleting(r[0])) out.push(this.handOut(r));
      }
      const lastRow = rows[rows.length - 1];
      if (rows.length < want || lastRow === undefined) break;
      after = lastRow[0];
    }
    return out;
  }

  newestPerTopic(cls: OutboxClass, limit: number): OutboxRow[] {
    if (limit <= 0) return [];
    // The newest row of each local topic among the class's newest NEWEST_SCAN_ROWS rows: a topic
    // silent for longer than that is not "where the truck is now" and drains with the backlog.
    // (No index by topic: it cost a B-tree write on every append and delete.)
    const seen = new Set<string>();
    const out: OutboxRow[] = [];
    for (const r of this.stmt.newestOfClass.iterate(CLASS_CODE[cls], NEWEST_SCAN_ROWS) as IterableIterator<SqlRow>) {
      if (r[0] > this.committedMax || this.deleting(r[0]) || seen.has(r[2])) continue;
      seen.add(r[2]);
      out.push(this.handOut(r));
      if (out.length >= limit) break;
    }
    return out.sort((a, b) => a.seq - b.seq);
  }

  protected oldestCommitted(cls: OutboxClass, limit: number): OutboxRowRef[] {
    // Rows deleted this turn (evicted, acknowledged) stay in the table until the commit: the scan
    // starts after the run of them at the head it has already seen, so evicting many records in
    // one turn does not read the same deleted rows again and again. A row at or below the mark
    // never becomes live again (pending deletes are never undone, new seqs are higher).
    const out: OutboxRowRef[] = [];
    let after = this.headSkip[cls];
    let atHead = true;
    while (out.length < limit) {
      // One more than wanted: the head row is usually one deleted since the last call.
      const want = limit - out.length + 1;
      const rows = this.stmt.oldest.all(CLASS_CODE[cls], after, want) as { seq: number; size: number }[];
      for (const r of rows) {
        if (this.deleting(r.seq)) {
          if (atHead) this.headSkip[cls] = r.seq;
          continue;
        }
        atHead = false;
        if (out.length < limit) out.push({ seq: r.seq, cls, size: r.size });
      }
      const lastRow = rows[rows.length - 1];
      if (rows.length < want || lastRow === undefined) break;
      after = lastRow.seq;
    }
    return out;
  }

  protected expiredCommitted(now: number, limit: number): ExpiredRef[] {
    // As above: a cursor over the run of expired rows already deleted this turn (reset at each
    // commit, which may bring rows with an earlier expiry).
    const out: ExpiredRef[] = [];
    if (now < this.nextExpiry) return out;
    let cursor = this.expiredSkip;
    let atHead = true;
    while (out.length < limit) {
      const want = limit - out.length;
      const rows = this.stmt.expired.all(cursor.expiresAt, cursor.seq, now, want) as {
        seq: number;
        cls: number;
        size: number;
        expires_at: number;
      }[];
      for (const r of rows) {
        if (this.deleting(r.seq)) {
          if (atHead) this.expiredSkip = { expiresAt: r.expires_at, seq: r.seq };
          continue;
        }
        atHead = false;
        out.push({ seq: r.seq, cls: classOf(r.cls), size: r.size, expiresAt: r.expires_at });
      }
      const lastRow = rows[rows.length - 1];
      if (rows.length < want || lastRow === undefined) break;
      cursor = { expiresAt: lastRow.expires_at, seq: lastRow.seq };
    }
    if (out.length === 0) {
      // Nothing (live) has expired: no need to look again before the next expiry.
      this.nextExpiry = (this.stmt.nextExpiry.get(now) as number | null) ?? Infinity;
    }
    return out;
  }

  reusableBytes(): number {
    try {
      return (this.stmt.freelist.get() as number) * this.pageSize;
    } catch {
      return 0;
    }
  }
}

/** Committed rows of one class: an array in seq order (with dead entries, compacted lazily) and the live ones by seq. */
class ClassRows {
  rows: OutboxRow[] = [];
  readonly live = new Map<number, OutboxRow>();

  /** Index of the first entry with seq > afterSeq. */
  firstAfter(afterSeq: number): number {
    let lo = 0;
    let hi = this.rows.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.rows[mid]!.seq <= afterSeq) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  remove(seq: number): void {
    this.live.delete(seq);
    if (this.rows.length > 64 && this.live.size * 2 < this.rows.length) {
      this.rows = this.rows.filter((r) => this.live.has(r.seq));
    }
  }
}

/**
 * Committed rows held in memory, by class: the whole committed view of MemoryOutboxStore, the
 * newest rows (the tail) of SqliteOutboxStore.
 */
class CommittedRows {
  private readonly byClass: Record<OutboxClass, ClassRows> = {
    alarm: new ClassRows(), event: new ClassRows(), telemetry: new ClassRows(), bulk: new ClassRows(),
  };
  private readonly classOfSeq = new Map<number, OutboxClass>();
  /** Sum of the rows' sizes. */
  bytes = 0;

  of(cls: OutboxClass): ClassRows {
    return this.byClass[cls];
  }

  get(seq: number): OutboxRow | undefined {
    const cls = this.classOfSeq.get(seq);
    return cls === undefined ? undefined : this.byClass[cls].live.get(seq);
  }

  /** Adds a row; its seq is above every seq of its class already held. */
  add(row: OutboxRow): void {
    const c = this.byClass[row.cls];
    c.rows.push(row);
    c.live.set(row.seq, row);
    this.classOfSeq.set(row.seq, row.cls);
    this.bytes += row.size;
  }

  remove(seq: number): void {
    const cls = this.classOfSeq.get(seq);
    if (cls === undefined) return;
    const row = this.byClass[cls].live.get(seq)!;
    this.classOfSeq.delete(seq);
    this.byClass[cls].remove(seq);
    this.bytes -= row.size;
  }

  /** Live rows of a class with seq > afterSeq, in seq order, at most limit, minus those `skip` names. */
  after(cls: OutboxClass, afterSeq: number, limit: number, skip: (seq: number) => boolean): OutboxRow[] {
    const c = this.byClass[cls];
    const out: OutboxRow[] = [];
    for (let i = c.firstAfter(afterSeq); i < c.rows.length && out.length < limit; i++) {
      const row = c.rows[i]!;
      if (c.live.has(row.seq) && !skip(row.seq)) out.push(row);
    }
    return out;
  }

  /** Drops the oldest quarter of the fullest class; returns it with the highest seq dropped. */
  dropOldest(): { cls: OutboxClass; upTo: number } {
    let cls: OutboxClass = 'bulk';
    for (const c of OUTBOX_CLASSES) if (this.byClass[c].live.size > this.byClass[cls].live.size) cls = c;
    // Live rows in insertion order, which is seq order.
    const live = [...this.byClass[cls].live.keys()];
    const drop = live.slice(0, Math.max(1, Math.ceil(live.length / 4)));
    for (const seq of drop) this.remove(seq);
    return { cls, upTo: drop[drop.length - 1] ?? 0 };
  }
}

export interface MemoryOutboxStoreOptions {
  /**
   * The state store whose commits carry the outbox's (the broker's MemoryStateStore, so appends
   * commit with the broker's batch as with SQLite). Without one, the store commits on its own at the
   * end of the event-loop turn.
   */
  host?: CommitHost;
}

export class MemoryOutboxStore extends OutboxStoreBase {
  private readonly committedRows = new CommittedRows();
  private commitScheduled = false;
  /** No committed row expires before this. */
  private nextExpiry = Infinity;

  constructor(opts: MemoryOutboxStoreOptions = {}) {
    super(opts.host ?? new MemoryStateStore());
    this.host.attachParticipant(this);
  }

  private rowsOf(cls: OutboxClass): ClassRows {
    return this.committedRows.of(cls);
  }

  protected write(): void {
    // Nothing to write: afterCommit moves the sealed work into the committed view.
  }

  protected afterCommit(): void {
    for (const seq of this.sealedDeletes) this.committedRows.remove(seq);
    for (const row of this.sealedAppends.values()) {
      this.committedRows.add(row);
      if (row.expiresAt > 0 && row.expiresAt < this.nextExpiry) this.nextExpiry = row.expiresAt;
    }
  }

  protected requestCommit(): void {
    // Deferred: a MemoryStateStore commits synchronously, and an append must not become readable
    // (and call onCommitted listeners) in the middle of the caller's work.
    if (this.commitScheduled) return;
    this.commitScheduled = true;
    setImmediate(() => {
      this.commitScheduled = false;
      if (this.hasPending) this.host.commit().catch(() => this.commitFailed());
    });
  }

  protected lookupCommitted(seq: number): OutboxRowRef | null {
    const row = this.committedRows.get(seq);
    return row === undefined ? null : ref(row);
  }

  readCommitted(cls: OutboxClass, afterSeq: number, limit: number): OutboxRow[] {
    return this.committedRows.after(cls, afterSeq, limit, this.isDeleting).map(copyRow);
  }

  newestPerTopic(cls: OutboxClass, limit: number): OutboxRow[] {
    const c = this.rowsOf(cls);
    const seen = new Set<string>();
    const out: OutboxRow[] = [];
    for (let i = c.rows.length - 1; i >= 0 && out.length < limit; i--) {
      const row = c.rows[i]!;
      if (!c.live.has(row.seq) || this.deleting(row.seq) || seen.has(row.localTopic)) continue;
      seen.add(row.localTopic);
      out.push(copyRow(row));
    }
    return out.reverse();
  }

  protected oldestCommitted(cls: OutboxClass, limit: number): OutboxRowRef[] {
    const out: OutboxRowRef[] = [];
    for (const row of this.rowsOf(cls).live.values()) {
      if (out.length >= limit) break;
      if (!this.deleting(row.seq)) out.push(ref(row));
    }
    return out;
  }

  protected expiredCommitted(now: number, limit: number): ExpiredRef[] {
    // A scan of the live rows, skipped while nothing can have expired yet.
    if (now < this.nextExpiry) return [];
    const found: ExpiredRef[] = [];
    let next = Infinity;
    for (const cls of OUTBOX_CLASSES) {
      for (const row of this.rowsOf(cls).live.values()) {
        if (row.expiresAt <= 0 || this.deleting(row.seq)) continue;
        if (row.expiresAt <= now) found.push({ ...ref(row), expiresAt: row.expiresAt });
        else if (row.expiresAt < next) next = row.expiresAt;
      }
    }
    found.sort((a, b) => a.expiresAt - b.expiresAt || a.seq - b.seq);
    // While expired rows are left (returned but maybe not deleted, or beyond the limit), scan again.
    const first = found[0];
    this.nextExpiry = first !== undefined ? first.expiresAt : next;
    return found.slice(0, limit);
  }

  reusableBytes(): number {
    return 0;
  }
}
