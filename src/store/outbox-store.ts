// The outbox's rows (low level: no budget, no eviction policy, no clock; see bridge/outbox.ts).
//
// Two implementations with the same behaviour:
// - SqliteOutboxStore: segments in convoy.db (outbox_segments: the records one commit appended to
//   a class, packed into one row; outbox_gone: which records of a segment are deleted; see
//   outbox-segment.ts). It is a participant of the state store's grouped commits
//   (SqliteStateStore.attachParticipant): append/delete only record pending work, which is written
//   in the same transaction as the broker's journal changes of that event-loop turn (one fsync; a
//   PUBLISH routed uplink is acknowledged only once both are durable). Every live segment is known
//   in memory (its seqs, class, live count, earliest expiry), so reads, eviction and expiry go to
//   the right rows without indexes; the newest committed records stay in memory as well (the tail).
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
// The seq high-water mark: the segments' highest seq covers committed appends; a transaction that
// deletes records also writes the highest seq appended so far to outbox_meta, so an outbox emptied by
// acknowledgements does not restart at 1 after a restart (HQ would take new messages for
// duplicates). Seqs of appends lost in a crash before their commit are given out again: they never
// reached HQ (see above) and no publisher was acknowledged for them.
import { OUTBOX_CLASSES, type OutboxClass, type OutboxRecord } from '../bridge/types.js';
import { emptyTotals, totalBytes, type ClassTotalsByClass } from '../bridge/eviction.js';
import { MemoryStateStore } from './memory-state-store.js';
import {
  type CommitParticipant,
  type SqliteStateStore,
  type WriteBatch,
} from './sqlite-state-store.js';
import { SeqMap } from './seq-map.js';
import { decodeSegment, encodeSegment, goneBitmap, isGone, setGone } from './outbox-segment.js';
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
  /** Committed rows of a class with seq > afterSeq, in seq order, at most limit (a new array). */
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
  /** Deleted rows whose delete is not committed yet (a crash would bring them back). */
  readonly deletesPending: number;
  /** Called after each commit that made deletes durable. Returns an unsubscribe. */
  onDeletesCommitted(cb: () => void): () => void;
  /** Commits pending deletes now, where the store lets them wait. */
  flushDeletes(): void;
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
  protected pendingAppends = new Map<number, OutboxRow>();
  /** Committed rows deleted, not committed yet. */
  protected pendingDeletes = new SeqMap<OutboxRowRef>();
  /** Appends and deletes in a commit that has not been confirmed yet. */
  protected sealedAppends = new Map<number, OutboxRow>();
  protected sealedDeletes = new SeqMap<OutboxRowRef>();
  protected last = 0;
  protected committedMax = 0;
  /** No pending or sealed append expires before this. */
  protected pendingMinExpiry = Infinity;
  private readonly listeners = new Set<(seq: number) => void>();
  private readonly deleteListeners = new Set<() => void>();
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

  /**
   * No pending or sealed delete has a higher seq (0 when there are none). A drain reads records
   * far ahead of the ones being deleted: deleting() answers those without a lookup.
   */
  private deleteHigh = 0;

  /** Deleted, but the delete is not committed yet. */
  protected deleting(seq: number): boolean {
    if (seq > this.deleteHigh) return false;
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
      // (What lookupCommitted returned may say where the record is, for the commit: see write.)
      this.pendingDeletes.set(seq, found);
      if (seq > this.deleteHigh) this.deleteHigh = seq;
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

  get deletesPending(): number {
    return this.pendingDeletes.size + this.sealedDeletes.size;
  }

  onDeletesCommitted(cb: () => void): () => void {
    this.deleteListeners.add(cb);
    return () => this.deleteListeners.delete(cb);
  }

  /** Deletes wait for nothing here (the memory store commits each batch at once). */
  flushDeletes(): void {}

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
    // The pending maps become the sealed ones (the sealed are empty unless a failed commit is
    // retried): copying them entry by entry was a tenth of a drain's allocations.
    if (this.sealedAppends.size === 0) {
      [this.sealedAppends, this.pendingAppends] = [this.pendingAppends, this.sealedAppends];
    } else {
      for (const [seq, row] of this.pendingAppends) this.sealedAppends.set(seq, row);
      this.pendingAppends.clear();
    }
    if (this.sealedDeletes.size === 0) {
      [this.sealedDeletes, this.pendingDeletes] = [this.pendingDeletes, this.sealedDeletes];
    } else {
      this.pendingDeletes.forEach((r, seq) => this.sealedDeletes.set(seq, r));
      this.pendingDeletes.clear();
    }
  }

  committed(): void {
    let appended = 0;
    for (const seq of this.sealedAppends.keys()) if (seq > appended) appended = seq;
    this.afterCommit();
    this.sealedAppends.clear();
    const deleted = this.sealedDeletes.size > 0;
    this.sealedDeletes.clear();
    if (this.pendingDeletes.size === 0) this.deleteHigh = 0;
    let min = Infinity;
    for (const row of this.pendingAppends.values()) if (row.expiresAt > 0 && row.expiresAt < min) min = row.expiresAt;
    this.pendingMinExpiry = min;
    if (appended > this.committedMax) {
      this.committedMax = appended;
      for (const cb of [...this.listeners]) cb(this.committedMax);
    }
    if (deleted) for (const cb of [...this.deleteListeners]) cb();
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

/** How long deletes alone may wait for a commit (a crash brings them back: sent again, once). */
const DELETE_COMMIT_DELAY_MS = 20;
/** Deletes alone are committed at once from this many on. */
const DELETE_COMMIT_BATCH = 1024;
/** Rows newestPerTopic looks at (the newest live records of the class). */
const NEWEST_SCAN_ROWS = 4096;
/**
 * Bytes of committed rows SqliteOutboxStore keeps in memory (its tail): about 2,000 records of
 * 200 B, some 40 ms of a busy link, while the forwarder reads them a millisecond or two after
 * their commit. With HQ unreachable nothing reads them, and every row that leaves a larger tail
 * has lived long enough to be promoted to V8's old space, as garbage: 4 MB instead of 512 KB
 * accepted a backlog about 10 % slower, with about 15 MB more RSS (bench A/B, 6 pairs).
 */
const TAIL_MAX_BYTES = 512 * 1024;
/**
 * Without a read for this long (the link to HQ is down), commits put nothing in the tail: it would
 * only be filled and trimmed again, about a tenth of the main thread while a backlog is accepted,
 * and every row trimmed from it had lived long enough to be old-space garbage.
 */
const TAIL_IDLE_MS = 1000;
/** Slots of SqliteOutboxStore.handedOut, a power of two above a few in-flight windows. */
const HANDED_OUT_SLOTS = 16384;
/** Decoded segments kept (the drain's, eviction's and expiry's current ones). */
const DECODED_MAX = 4;
/** Segments with fewer records are merged (see SqliteOutboxStore.mergeSmall) ... */
const MERGE_SMALL_RECORDS = 64;
/** ... once this many of them follow each other in a class. */
const MERGE_RUN = 32;

/**
 * Where a committed record is: its segment, its index there and its size. Kept for records handed
 * out and for pending deletes, so that deleting one (HQ's acknowledgement, then the commit) needs
 * neither a search nor the segment's records decoded: with a window of a thousand records in
 * flight, acknowledgements trail the reads by several segments, and a decoded-segment cache of a
 * few decoded each segment three times over (two fifths of the drain's main thread, profiled).
 */
interface Placed extends OutboxRowRef {
  seg: Segment;
  index: number;
}

function isPlaced(r: OutboxRowRef): r is Placed {
  return (r as Partial<Placed>).seg !== undefined;
}

/**
 * One row of outbox_segments as the store tracks it in memory (every live segment, without its
 * records: a few dozen bytes per commit's worth of a class).
 */
interface Segment {
  /** Seq of its first record (the row id). */
  readonly id: number;
  readonly cls: OutboxClass;
  readonly lastSeq: number;
  readonly count: number;
  /** Sum of its records' sizes (deleted ones included): what its rows weigh in the tail. */
  readonly bytes: number;
  /** Records not deleted (the deletes written or being written included). */
  live: number;
  /** No live record expires before this (a lower bound); Infinity when none expires. */
  minExpiry: number;
  /** Deleted records (bit per record), null while none is. */
  gone: Uint8Array | null;
  /** outbox_gone has a row for it (to delete with the segment). */
  goneStored: boolean;
  /** Its records are durable and readable (in this row, or still in the rows it merges). */
  committed: boolean;
  /** Its own row has committed (the table can give its records). */
  stored: boolean;
  /** Made by mergeSmall, or found at open: never merged (a record is rewritten at most once). */
  merged: boolean;
  /** Listed in the deletes being sealed. */
  touched: boolean;
  /**
   * Its records while they are in memory anyway (sealed, or in the tail): reads and deletes then
   * decode nothing. Null once they have left the tail (and for segments found at open).
   */
  rows: OutboxRow[] | null;
  /** Its bytes, from its write until its commit (the tail's records are made from them). */
  data: Buffer | null;
}

/** Index of the first item whose key is above `value` (items sorted by key), by bisection. */
function firstAbove<T>(items: readonly T[], value: number, keyOf: (item: T) => number): number {
  let lo = 0;
  let hi = items.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (keyOf(items[mid]!) <= value) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

const seqOf = (row: OutboxRow): number => row.seq;

/** Index of the first record with seq > afterSeq (records are in seq order). */
function firstAfter(rows: readonly OutboxRow[], afterSeq: number): number {
  return firstAbove(rows, afterSeq, seqOf);
}

/** Index of the last segment with id <= seq, or -1. */
function segmentAtOrBefore(segs: readonly Segment[], seq: number): number {
  return firstAbove(segs, seq, (seg) => seg.id) - 1;
}

export class SqliteOutboxStore extends OutboxStoreBase {
  private readonly stmt;
  private readonly write_;
  private readonly pageSize: number;
  private commitRequested = false;
  /** Commits deletes that no other work has taken along (see requestCommit). */
  private deleteTimer: NodeJS.Timeout | null = null;
  /** Live segments per class, in seq order. */
  private readonly segments: Record<OutboxClass, Segment[]> = { alarm: [], event: [], telemetry: [], bulk: [] };
  /** Segments sealed into the commit in flight (committed once it is). */
  private sealedSegments: Segment[] = [];
  /** Decoded records of recently read segments, most recent last. */
  private readonly decodedCache: { seg: Segment; rows: OutboxRow[] }[] = [];
  /** See oldestCommitted. */
  private readonly headSkip: Record<OutboxClass, number> = { alarm: 0, event: 0, telemetry: 0, bulk: 0 };
  /** No committed record expires before this (a lower bound). */
  private nextExpiry = Infinity;
  /**
   * Where recently handed-out records are (readCommitted, newestPerTopic, oldest, expired), in
   * slot seq mod HANDED_OUT_SLOTS: deleting one once HQ has acknowledged it then needs no search.
   * A later record in the same slot replaces it (it is then found by locate()). Not a Map: a
   * drain set and deleted an entry per message, and the Map's tables were 8 % of its garbage.
   */
  private readonly handedOut = new Array<Placed | undefined>(HANDED_OUT_SLOTS).fill(undefined);
  /**
   * The tail: the newest committed segments keep their records in memory (Segment.rows) after
   * their commit, oldest first in this queue, so a read soon after the commit (the usual case
   * while the link is up) decodes nothing. Reads go through visitCommitted either way: the drain
   * of a backlog from the table runs the same code as the steady state, already compiled. Bounded
   * by TAIL_MAX_BYTES (tailBytes): beyond it the oldest segments drop their records (they stay in
   * the table). Kept only while somebody reads (see TAIL_IDLE_MS).
   */
  private tail: Segment[] = [];
  private tailWeight = 0;
  /** When readCommitted or newestPerTopic ran last (-Infinity: never). */
  private lastReadAt = -Infinity;
  /** The tail was emptied for want of readers and commits leave it empty. */
  private tailIdle = false;

  constructor(
    private readonly state: SqliteStateStore,
    private readonly tailMaxBytes = TAIL_MAX_BYTES,
    private readonly now: () => number = Date.now,
  ) {
    super(state);
    const db = state.db;
    this.write_ = {
      insertSegment: state.statement(
        'INSERT OR REPLACE INTO outbox_segments (id, cls, last_seq, count, bytes, min_expires, records) VALUES (?, ?, ?, ?, ?, ?, ?)',
      ),
      deleteSegment: state.statement('DELETE FROM outbox_segments WHERE id = ?'),
      putGone: state.statement('INSERT OR REPLACE INTO outbox_gone (segment, bits) VALUES (?, ?)'),
      deleteGone: state.statement('DELETE FROM outbox_gone WHERE segment = ?'),
      setLastSeq: state.statement('UPDATE outbox_meta SET last_seq = max(last_seq, ?) WHERE id = 1'),
    };
    this.stmt = {
      records: db.prepare('SELECT records FROM outbox_segments WHERE id = ?').pluck(),
      freelist: db.prepare('PRAGMA freelist_count').pluck(),
    };
    this.pageSize = db.pragma('page_size', { simple: true }) as number;

    let maxSeq = 0;
    for (const r of db
      .prepare('SELECT id, cls, last_seq, count, bytes, min_expires FROM outbox_segments ORDER BY id')
      .raw(true)
      .iterate() as IterableIterator<[number, number, number, number, number, number]>) {
      const [id, code, lastSeq, count, bytes, minExpires] = r;
      const cls = classOf(code);
      this.segments[cls].push({
        id, cls, lastSeq, count, bytes, live: count, minExpiry: minExpires > 0 ? minExpires : Infinity,
        gone: null, goneStored: false, committed: true, stored: true, merged: true, touched: false, rows: null, data: null,
      });
      const t = this.counts[cls];
      t.count += count;
      t.bytes += bytes;
      if (minExpires > 0 && minExpires < this.nextExpiry) this.nextExpiry = minExpires;
      if (lastSeq > maxSeq) maxSeq = lastSeq;
    }
    for (const [segment, bits] of db.prepare('SELECT segment, bits FROM outbox_gone').raw(true).iterate() as IterableIterator<[number, Buffer]>) {
      const seg = this.findSegment(segment);
      if (seg === null) continue;
      seg.gone = goneBitmap(seg.count);
      seg.gone.set(bits.subarray(0, seg.gone.length));
      seg.goneStored = true;
      const rows = this.decoded(seg);
      const t = this.counts[seg.cls];
      for (let i = 0; i < rows.length; i++) {
        if (!isGone(seg.gone, i)) continue;
        seg.live--;
        t.count--;
        t.bytes -= rows[i]!.size;
      }
    }
    const meta = (db.prepare('SELECT last_seq FROM outbox_meta WHERE id = 1').pluck().get() as number | undefined) ?? 0;
    this.last = Math.max(maxSeq, meta);
    this.committedMax = this.last;
    state.attachParticipant(this);
  }

  /** The live segment with this id, or null. */
  private findSegment(id: number): Segment | null {
    for (const cls of OUTBOX_CLASSES) {
      const segs = this.segments[cls];
      const i = segmentAtOrBefore(segs, id);
      if (i >= 0 && segs[i]!.id === id) return segs[i]!;
    }
    return null;
  }

  /** A segment's records: in memory while young, else decoded (once while among the last few read). */
  private decoded(seg: Segment): OutboxRow[] {
    if (seg.rows !== null) return seg.rows;
    const cache = this.decodedCache;
    for (let i = cache.length - 1; i >= 0; i--) {
      const c = cache[i]!;
      if (c.seg !== seg) continue;
      if (i !== cache.length - 1) {
        cache.splice(i, 1);
        cache.push(c);
      }
      return c.rows;
    }
    const blob = this.stmt.records.get(seg.id) as Buffer | undefined;
    if (blob === undefined) throw new Error(`outbox segment ${seg.id} is missing from the table`);
    // A view made in JavaScript of the Buffer better-sqlite3 made in C++: the two have different
    // hidden classes, and the send path, compiled for the tail's records (made from segments
    // encoded here), was deoptimized and compiled again on the first backlog read from the table.
    const data = Buffer.from(blob.buffer, blob.byteOffset, blob.byteLength);
    const rows = decodeSegment(data, seg.cls);
    cache.push({ seg, rows });
    if (cache.length > DECODED_MAX) cache.shift();
    return rows;
  }

  /** Where the live record seq is, or null. */
  private locate(seq: number): Placed | null {
    for (const cls of OUTBOX_CLASSES) {
      const segs = this.segments[cls];
      const seg = segs[segmentAtOrBefore(segs, seq)];
      // (A sealed segment's records are in memory; a committed one's are in the table.)
      if (seg === undefined || seq > seg.lastSeq || (seg.rows === null && !seg.stored)) continue;
      const rows = this.decoded(seg);
      const j = firstAfter(rows, seq - 1);
      if (rows[j]?.seq === seq && !isGone(seg.gone, j)) return { seq, cls, size: rows[j].size, seg, index: j };
    }
    return null;
  }

  /** The place still holds the live record seq: its segment is live (not merged or dropped since). */
  private stillAt(at: Placed, seq: number): boolean {
    const segs = this.segments[at.seg.cls];
    return segs[segmentAtOrBefore(segs, seq)] === at.seg && !isGone(at.seg.gone, at.index);
  }

  /**
   * A new segment of `rows` (one class, seq order) into the batch. A merged one is readable at
   * once (its records are durable in the rows it replaces); either keeps its records in memory at
   * least until its own row has committed.
   */
  private writeSegment(batch: WriteBatch, cls: OutboxClass, rows: OutboxRow[], merged: boolean): Segment {
    const { data, summary } = encodeSegment(rows);
    batch.run(this.write_.insertSegment, summary.firstSeq, CLASS_CODE[cls], summary.lastSeq, summary.count, summary.bytes, summary.minExpires, data);
    const seg: Segment = {
      id: summary.firstSeq, cls, lastSeq: summary.lastSeq, count: summary.count, bytes: summary.bytes, live: summary.count,
      minExpiry: summary.minExpires > 0 ? summary.minExpires : Infinity,
      gone: null, goneStored: false, committed: merged, stored: false, merged, touched: false, rows, data,
    };
    this.sealedSegments.push(seg);
    return seg;
  }

  /**
   * Segments' rows (and bitmaps) out of the table in this batch, and out of memory: each found by
   * bisection, then taken out of its class's list in runs. A drain empties segments at the head of
   * a class's list, where a splice is cheap; one by one, with a search each, every removal moved
   * the whole list.
   */
  private dropSegments(batch: WriteBatch, drop: readonly Segment[]): void {
    const at: Partial<Record<OutboxClass, number[]>> = {};
    for (const seg of drop) {
      batch.run(this.write_.deleteSegment, seg.id);
      if (seg.goneStored) batch.run(this.write_.deleteGone, seg.id);
      const i = segmentAtOrBefore(this.segments[seg.cls], seg.id);
      if (i >= 0 && this.segments[seg.cls][i] === seg) (at[seg.cls] ??= []).push(i);
    }
    for (const cls of OUTBOX_CLASSES) {
      const idx = at[cls];
      if (idx === undefined) continue;
      idx.sort((x, y) => y - x);
      const segs = this.segments[cls];
      // Descending: a run of adjacent indexes goes in one splice.
      for (let k = 0; k < idx.length; ) {
        let j = k;
        while (j + 1 < idx.length && idx[j + 1] === idx[j]! - 1) j++;
        segs.splice(idx[j]!, j - k + 1);
        k = j + 1;
      }
    }
    const gone = new Set(drop);
    const cache = this.decodedCache;
    for (let i = cache.length - 1; i >= 0; i--) if (gone.has(cache[i]!.seg)) cache.splice(i, 1);
  }

  protected write(batch: WriteBatch): void {
    // Work added from now on needs a commit of its own.
    this.commitRequested = false;
    const s = this.write_;
    if (this.pendingAppends.size > 0) {
      // One segment per class (appends are in seq order, so each class's are too).
      const byClass: Partial<Record<OutboxClass, OutboxRow[]>> = {};
      for (const r of this.pendingAppends.values()) (byClass[r.cls] ??= []).push(r);
      for (const cls of OUTBOX_CLASSES) {
        const rows = byClass[cls];
        if (rows !== undefined) this.segments[cls].push(this.writeSegment(batch, cls, rows, false));
      }
    }
    if (this.pendingDeletes.size > 0) {
      const touched: Segment[] = [];
      // forEach: a for-of over entries makes a [seq, ref] pair per delete.
      this.pendingDeletes.forEach((found, seq) => {
        let at = isPlaced(found) ? found : null;
        if (at === null || !this.stillAt(at, seq)) at = this.locate(seq);
        if (at === null) return;
        const { seg, index } = at;
        seg.gone ??= goneBitmap(seg.count);
        setGone(seg.gone, index);
        seg.live--;
        if (!seg.touched) {
          seg.touched = true;
          touched.push(seg);
        }
      });
      const emptied: Segment[] = [];
      for (const seg of touched) {
        seg.touched = false;
        if (seg.live > 0) {
          // A copy with an ArrayBuffer of its own (Buffer.from would take a slice of the 8 KB
          // pool, all of which the hand-over to the writer thread copies), as in encodeSegment.
          batch.run(s.putGone, seg.id, seg.gone!.slice());
          seg.goneStored = true;
          continue;
        }
        // Every record acknowledged (or dropped): the whole segment goes, its pages freed at once.
        emptied.push(seg);
      }
      if (emptied.length > 0) this.dropSegments(batch, emptied);
      batch.run(s.setLastSeq, this.last);
    }
    for (const cls of OUTBOX_CLASSES) this.mergeSmall(cls, batch);
  }

  /**
   * At a low message rate every commit makes a segment of a record or two, and each live segment
   * costs memory (the directory) and a row. A run of MERGE_RUN small committed segments of a class
   * is rewritten as one segment of their live records, in the same transaction as the rest of the
   * batch: each such record is written twice, and the directory keeps about one entry per
   * MERGE_RUN records however slowly they came.
   */
  private mergeSmall(cls: OutboxClass, batch: WriteBatch): void {
    const segs = this.segments[cls];
    // The newest run of small readable segments (every delete so far is in their gone bits).
    let end = segs.length;
    while (end > 0 && !segs[end - 1]!.committed) end--;
    let start = end;
    while (start > 0 && end - start < MERGE_RUN) {
      const seg = segs[start - 1]!;
      if (seg.count >= MERGE_SMALL_RECORDS || seg.merged) break;
      start--;
    }
    if (end - start < MERGE_RUN) return;
    const run = segs.slice(start, end);
    const rows: OutboxRow[] = [];
    for (const seg of run) {
      const all = this.decoded(seg);
      for (let j = 0; j < all.length; j++) if (!isGone(seg.gone, j)) rows.push(all[j]!);
    }
    this.dropSegments(batch, run);
    if (rows.length === 0) return;
    const merged = this.writeSegment(batch, cls, rows, true);
    segs.splice(start, 0, merged);
    // Records handed out point at the segments just replaced.
    for (let i = 0; i < rows.length; i++) {
      const row = rows[i]!;
      if (this.handedOut[row.seq & (HANDED_OUT_SLOTS - 1)]?.seq === row.seq) this.handOut(merged, row, i);
    }
  }

  protected requestCommit(): void {
    if (this.commitRequested) return;
    // Deletes alone wait (up to DELETE_COMMIT_DELAY_MS, or DELETE_COMMIT_BATCH of them, or a
    // flushDeletes()): nobody waits for them, and during a drain a commit per event-loop turn
    // rewrote the same gone bitmaps hundreds of times a second. Any commit takes them along.
    if (this.pendingAppends.size === 0 && this.pendingDeletes.size < DELETE_COMMIT_BATCH) {
      if (this.deleteTimer === null) {
        this.deleteTimer = setTimeout(this.onDeleteTimer, DELETE_COMMIT_DELAY_MS);
        this.deleteTimer.unref();
      }
      return;
    }
    this.commitNow();
  }

  override flushDeletes(): void {
    if (this.pendingDeletes.size > 0 && !this.commitRequested) this.commitNow();
  }

  private readonly onDeleteTimer = (): void => {
    this.deleteTimer = null;
    if (this.hasPending && !this.commitRequested) this.commitNow();
  };

  private commitNow(): void {
    if (this.deleteTimer !== null) {
      clearTimeout(this.deleteTimer);
      this.deleteTimer = null;
    }
    // The state store defers the flush to the end of this turn (or its window) and gathers every
    // commit() of the turn, the broker's included, into it. One request per batch.
    this.commitRequested = true;
    this.state.commit().catch(() => {
      this.commitRequested = false;
      this.commitFailed();
    });
  }

  protected override afterCommit(): void {
    const sealed = this.sealedSegments;
    for (const seg of sealed) {
      seg.committed = true;
      seg.stored = true;
    }
    this.sealedSegments = [];
    if (this.pendingMinExpiry < this.nextExpiry) this.nextExpiry = this.pendingMinExpiry;
    if (this.now() - this.lastReadAt > TAIL_IDLE_MS) {
      // Nobody reads: the rows committed now stay in the table only.
      if (!this.tailIdle) this.emptyTail();
      for (const seg of sealed) {
        seg.rows = null;
        seg.data = null;
      }
      return;
    }
    this.tailIdle = false;
    for (const seg of sealed) {
      const data = seg.data;
      seg.data = null;
      if (seg.rows === null) continue;
      // A new segment's records are read back from its bytes, as a drain from the table gets
      // them: one record class on every path. With the publishers' objects here, the send path
      // was compiled for those, then deoptimized and compiled again when a backlog drained from
      // the table, on V8's compiler threads, competing with HQ for the cores. (A merged segment's
      // records were read back already, as those of the segments it replaced.)
      if (data !== null && !seg.merged) seg.rows = decodeSegment(data, seg.cls, seg.rows);
      this.tail.push(seg);
      this.tailWeight += seg.bytes;
    }
    // Over budget: the oldest segments drop their records (they stay in the table).
    let drop = 0;
    while (this.tailWeight > this.tailMaxBytes && drop < this.tail.length) {
      const seg = this.tail[drop++]!;
      this.tailWeight -= seg.bytes;
      if (seg.stored) seg.rows = null;
    }
    if (drop > 0) this.tail.splice(0, drop);
  }

  /** Empties the tail: every committed row is read from the table until readers come back. */
  private emptyTail(): void {
    this.tailIdle = true;
    this.tail = [];
    this.tailWeight = 0;
    for (const cls of OUTBOX_CLASSES) for (const seg of this.segments[cls]) if (seg.stored) seg.rows = null;
  }

  /** Bytes of committed records held in memory (the tail; a segment's deleted records included). */
  get tailBytes(): number {
    return this.tailWeight;
  }

  private handOut(seg: Segment, row: OutboxRow, index: number): OutboxRow {
    this.handedOut[row.seq & (HANDED_OUT_SLOTS - 1)] = { seq: row.seq, cls: row.cls, size: row.size, seg, index };
    return row;
  }

  protected lookupCommitted(seq: number): OutboxRowRef | null {
    const slot = seq & (HANDED_OUT_SLOTS - 1);
    let at = this.handedOut[slot] ?? null;
    if (at !== null && at.seq === seq) this.handedOut[slot] = undefined;
    else at = null;
    if (at === null || !this.stillAt(at, seq)) at = this.locate(seq);
    return at;
  }

  readCommitted(cls: OutboxClass, afterSeq: number, limit: number): OutboxRow[] {
    if (limit <= 0) return [];
    this.lastReadAt = this.now();
    const out: OutboxRow[] = [];
    this.visitCommitted(cls, afterSeq, (seg, row, index) => {
      if (!this.deleting(row.seq)) out.push(this.handOut(seg, row, index));
      return out.length < limit;
    });
    return out;
  }

  /**
   * Calls visit with each committed, not deleted record of a class with seq > afterSeq, in seq
   * order, while it returns true. (Pending deletes are the visitor's business.)
   */
  private visitCommitted(cls: OutboxClass, afterSeq: number, visit: (seg: Segment, row: OutboxRow, index: number) => boolean): void {
    const segs = this.segments[cls];
    for (let i = Math.max(0, segmentAtOrBefore(segs, afterSeq)); i < segs.length; i++) {
      const seg = segs[i]!;
      // Not committed yet: neither it nor any later segment of the class is readable.
      if (!seg.committed) return;
      if (seg.lastSeq <= afterSeq) continue;
      const rows = this.decoded(seg);
      for (let j = firstAfter(rows, afterSeq); j < rows.length; j++) {
        if (!isGone(seg.gone, j) && !visit(seg, rows[j]!, j)) return;
      }
    }
  }

  newestPerTopic(cls: OutboxClass, limit: number): OutboxRow[] {
    if (limit <= 0) return [];
    this.lastReadAt = this.now();
    // The newest record of each local topic among the class's newest NEWEST_SCAN_ROWS live records:
    // a topic silent for longer than that is not "where the truck is now" and drains with the backlog.
    const seen = new Set<string>();
    const out: OutboxRow[] = [];
    const segs = this.segments[cls];
    let scanned = 0;
    for (let i = segs.length - 1; i >= 0 && scanned < NEWEST_SCAN_ROWS && out.length < limit; i--) {
      const seg = segs[i]!;
      if (!seg.committed) continue;
      const rows = this.decoded(seg);
      for (let j = rows.length - 1; j >= 0 && scanned < NEWEST_SCAN_ROWS && out.length < limit; j--) {
        const row = rows[j]!;
        if (isGone(seg.gone, j) || this.deleting(row.seq)) continue;
        scanned++;
        if (seen.has(row.localTopic)) continue;
        seen.add(row.localTopic);
        out.push(this.handOut(seg, row, j));
      }
    }
    return out.sort((a, b) => a.seq - b.seq);
  }

  protected oldestCommitted(cls: OutboxClass, limit: number): OutboxRowRef[] {
    // Records deleted this turn (evicted, acknowledged) stay live until the seal: the scan starts
    // after the run of them at the head it has already seen, so evicting many records in one turn
    // does not walk the same deleted records again and again. A record at or below the mark never
    // becomes live again (pending deletes are never undone, new seqs are higher).
    const out: OutboxRowRef[] = [];
    let atHead = true;
    if (limit <= 0) return out;
    this.visitCommitted(cls, this.headSkip[cls], (seg, row, index) => {
      if (this.deleting(row.seq)) {
        if (atHead) this.headSkip[cls] = row.seq;
        return true;
      }
      atHead = false;
      this.handOut(seg, row, index);
      out.push({ seq: row.seq, cls, size: row.size });
      return out.length < limit;
    });
    return out;
  }

  protected expiredCommitted(now: number, limit: number): ExpiredRef[] {
    // Only segments whose earliest live expiry has passed are decoded; each such scan tightens
    // that bound. Up to `limit` found (more may be left: the next call looks again).
    const found: ExpiredRef[] = [];
    if (now < this.nextExpiry) return found;
    let next = Infinity;
    let full = false;
    for (const cls of OUTBOX_CLASSES) {
      for (const seg of this.segments[cls]) {
        if (!seg.committed) break;
        if (seg.minExpiry > now || full) {
          if (seg.minExpiry < next) next = seg.minExpiry;
          continue;
        }
        const rows = this.decoded(seg);
        let min = Infinity;
        for (let j = 0; j < rows.length; j++) {
          const row = rows[j]!;
          if (row.expiresAt <= 0 || isGone(seg.gone, j) || this.deleting(row.seq)) continue;
          if (row.expiresAt < min) min = row.expiresAt;
          if (row.expiresAt > now) continue;
          this.handOut(seg, row, j);
          found.push({ seq: row.seq, cls, size: row.size, expiresAt: row.expiresAt });
        }
        seg.minExpiry = min;
        if (min < next) next = min;
        if (found.length >= limit) full = true;
      }
    }
    found.sort((a, b) => a.expiresAt - b.expiresAt || a.seq - b.seq);
    this.nextExpiry = next;
    return found.slice(0, limit);
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
    return firstAfter(this.rows, afterSeq);
  }

  remove(seq: number): void {
    this.live.delete(seq);
    if (this.rows.length > 64 && this.live.size * 2 < this.rows.length) {
      this.rows = this.rows.filter((r) => this.live.has(r.seq));
    }
  }
}

/** Committed rows held in memory, by class: the whole committed view of MemoryOutboxStore. */
class CommittedRows {
  private readonly byClass: Readonly<Record<OutboxClass, ClassRows>> = {
    alarm: new ClassRows(), event: new ClassRows(), telemetry: new ClassRows(), bulk: new ClassRows(),
  };
  private readonly classOfSeq = new Map<number, OutboxClass>();

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
  }

  remove(seq: number): void {
    const cls = this.classOfSeq.get(seq);
    if (cls === undefined) return;
    this.classOfSeq.delete(seq);
    this.byClass[cls].remove(seq);
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
    this.sealedDeletes.forEach((_, seq) => this.committedRows.remove(seq));
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
