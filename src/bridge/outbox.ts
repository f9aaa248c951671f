// The outbox: the store-and-forward queue towards HQ (the Outbox of types.ts) over an OutboxStore.
//
// - seq: one more than the highest seq the store has ever held (the store keeps a high-water mark,
//   so an emptied outbox continues its numbering after a restart). A refused message takes no seq,
//   so HQ sees a gap only for messages that were accepted and then dropped (evicted, expired).
// - Size: what a record counts for in the budget (recordSize): payload, both topics, encoded
//   properties and a fixed overhead for the row and its index entries.
// - Capacity: the byte budget, lowered by the filesystem floor. The floor is measured with statfs
//   at most once per spaceCheckMs (1 s): capacity = outbox bytes + free bytes + free pages inside
//   the database - min_free_bytes (deleted rows free pages for reuse, not filesystem space).
// - Eviction: see eviction.ts (expired, then the oldest of the lowest class, never alarms; when
//   that cannot make room the newcomer is refused). Every drop is counted by reason in stats().
// - Reads (next, newestPerTopic) return only committed records: a record becomes readable after
//   the grouped commit that made it durable, and onCommitted listeners are told then (the
//   forwarder reads on that signal). Records whose time to live has passed are dropped on the way
//   and counted as expired.
// - Every append and removal is pending work of the state store's grouped commits. onWrite is
//   called for each append, so the broker holds the publisher's acknowledgement until that commit.
//   Removals (acknowledged by HQ, evicted, expired) wait for no acknowledgement and commit on the
//   store's own schedule (a crash before it brings a record back: sent again, never lost); flagging
//   them to the broker made every commit's completion start the next one, which the store then
//   sealed with a handful of deletes: about 330 commits/s during a drain instead of about 80.
import fs from 'node:fs';
import { encodeProperties } from '../store/sqlite-state-store.js';
import type { OutboxRow, OutboxStore } from '../store/outbox-store.js';
import { emptyTotals, floorCapacity, outboxCapacity, planEviction } from './eviction.js';
import {
  OUTBOX_CLASSES,
  type Outbox,
  type OutboxClass,
  type OutboxDropReason,
  type OutboxRecord,
  type OutboxStats,
} from './types.js';

/** Bytes a record counts for beyond its payload, topics and properties (row, index entries). */
export const RECORD_OVERHEAD_BYTES = 64;
/** Expired records looked at per eviction. */
const EXPIRED_SCAN_LIMIT = 1024;
/** Most oldest records fetched at a time while evicting. */
const EVICT_BATCH = 256;

export function recordSize(rec: Omit<OutboxRecord, 'seq'>): number {
  const props = rec.properties === undefined ? 0 : Buffer.byteLength(encodeProperties(rec.properties) ?? '');
  return (
    rec.payload.length + Buffer.byteLength(rec.topic) + Buffer.byteLength(rec.localTopic) + props + RECORD_OVERHEAD_BYTES
  );
}

export interface FsSpace {
  /** Blocks available to unprivileged users. */
  bavail: number;
  bsize: number;
}

export interface OutboxLog {
  warn(obj: object, msg?: string): void;
}

export interface CreateOutboxOptions {
  store: OutboxStore;
  /** [outbox] budget_bytes. */
  budgetBytes: number;
  /** [outbox] min_free_bytes. */
  minFreeBytes: number;
  /** A directory on the filesystem the floor applies to (data_dir); omitted: no floor check. */
  dataDir?: string;
  now?: () => number;
  /** Called for every append (the broker then holds the publisher's ack for the commit). */
  onWrite?: () => void;
  /** Default fs.statfsSync (a seam for tests). */
  statfs?: (dir: string) => FsSpace;
  /** How long one statfs measurement is used, in ms (default 1000). */
  spaceCheckMs?: number;
  log?: OutboxLog;
}

export interface OutboxHandle extends Outbox {
  /** cb(committedSeq) after each grouped commit that made new records readable. Returns an unsubscribe. */
  onCommitted(cb: (committedSeq: number) => void): () => void;
  /** The highest seq readable by next(). */
  readonly committedSeq: number;
  /** Bytes the outbox may hold now (budget, lowered by the floor). */
  capacity(): number;
}

export function createOutbox(opts: CreateOutboxOptions): OutboxHandle {
  const { store, budgetBytes, minFreeBytes, dataDir } = opts;
  const now = opts.now ?? Date.now;
  const onWrite = opts.onWrite ?? ((): void => {});
  const statfs = opts.statfs ?? ((dir: string): FsSpace => fs.statfsSync(dir));
  const spaceCheckMs = opts.spaceCheckMs ?? 1000;
  const dropped: Record<OutboxDropReason, number> = { expired: 0, evicted: 0, refused_full: 0 };

  let floorCap = Infinity;
  let measuredAt = -Infinity;
  let warnedStatfs = false;

  function capacity(t: number): number {
    if (dataDir !== undefined && t - measuredAt >= spaceCheckMs) {
      measuredAt = t;
      try {
        const st = statfs(dataDir);
        floorCap = floorCapacity({
          outboxBytes: store.totalBytes(),
          freeBytes: st.bavail * st.bsize,
          reusableBytes: store.reusableBytes(),
          minFreeBytes,
        });
        warnedStatfs = false;
      } catch (err) {
        if (!warnedStatfs) opts.log?.warn({ dir: dataDir, err: String(err) }, 'outbox: cannot measure free space');
        warnedStatfs = true;
      }
    }
    return outboxCapacity(budgetBytes, floorCap);
  }

  function isExpired(row: { expiresAt: number }, t: number): boolean {
    return row.expiresAt > 0 && row.expiresAt <= t;
  }

  return {
    append(rec) {
      const size = recordSize(rec);
      const t = now();
      const cap = capacity(t);
      if (store.totalBytes() + size > cap) {
        const totals = store.totals();
        const expiredRefs = store.expired(t, EXPIRED_SCAN_LIMIT);
        const expired = emptyTotals();
        for (const r of expiredRefs) {
          expired[r.cls].count++;
          expired[r.cls].bytes += r.size;
        }
        const d = planEviction({ byClass: totals, expired, incoming: { cls: rec.cls, size }, capacityBytes: cap });
        let remaining = d.needBytes;
        if (d.dropExpired) {
          for (const r of expiredRefs) {
            if (store.delete(r.seq) === null) continue;
            dropped.expired++;
            remaining -= r.size;
          }
        }
        if (!d.accept) {
          dropped.refused_full++;
          return null;
        }
        for (const { cls } of d.evict) {
          const avg = totals[cls].count > 0 ? totals[cls].bytes / totals[cls].count : 1;
          while (remaining > 0) {
            // About as many as the bytes needed take (usually one record per append).
            const want = Math.min(EVICT_BATCH, Math.max(1, Math.ceil(remaining / Math.max(1, avg))));
            const oldest = store.oldest(cls, want);
            if (oldest.length === 0) break;
            for (const r of oldest) {
              if (remaining <= 0) break;
              if (store.delete(r.seq) === null) continue;
              dropped.evicted++;
              remaining -= r.size;
            }
          }
        }
      }
      // One object per message: the store keeps it and reads hand it out (records are read-only).
      const row: OutboxRow = {
        seq: store.lastSeq + 1,
        cls: rec.cls,
        localTopic: rec.localTopic,
        topic: rec.topic,
        payload: rec.payload,
        qos: rec.qos,
        createdAt: rec.createdAt,
        expiresAt: rec.expiresAt,
        size,
      };
      // The broker's properties object may be shared with other deliveries of the message.
      if (rec.properties !== undefined) row.properties = { ...rec.properties };
      store.append(row);
      onWrite();
      return row;
    },

    remove(seq) {
      store.delete(seq);
    },

    next(cls: OutboxClass, afterSeq: number, limit: number) {
      const t = now();
      let rows: OutboxRecord[] = store.readCommitted(cls, afterSeq, limit);
      // The usual case: nothing expired, and the store's (new) array is the answer.
      if (!rows.some((r) => isExpired(r, t))) return rows;
      const out: OutboxRecord[] = [];
      let want = limit;
      for (;;) {
        for (const row of rows) {
          if (!isExpired(row, t)) out.push(row);
          else if (store.delete(row.seq) !== null) dropped.expired++;
        }
        const last = rows[rows.length - 1];
        if (rows.length < want || last === undefined || out.length >= limit) return out;
        // Expired records made room: read on after them.
        want = limit - out.length;
        rows = store.readCommitted(cls, last.seq, want);
      }
    },

    newestPerTopic(cls: OutboxClass, limit: number) {
      const t = now();
      const out: OutboxRecord[] = [];
      for (const row of store.newestPerTopic(cls, limit)) {
        if (!isExpired(row, t)) out.push(row);
        else if (store.delete(row.seq) !== null) dropped.expired++;
      }
      return out;
    },

    stats(): OutboxStats {
      const totals = store.totals();
      const byClass = {} as OutboxStats['byClass'];
      let count = 0;
      let bytes = 0;
      for (const cls of OUTBOX_CLASSES) {
        byClass[cls] = { ...totals[cls] };
        count += totals[cls].count;
        bytes += totals[cls].bytes;
      }
      return { count, bytes, byClass, dropped: { ...dropped }, lastSeq: store.lastSeq };
    },

    onCommitted(cb) {
      return store.onCommitted(cb);
    },

    removalsPending() {
      return store.deletesPending;
    },

    onRemovalsDurable(cb) {
      return store.onDeletesCommitted(cb);
    },

    flushRemovals() {
      store.flushDeletes();
    },

    get committedSeq() {
      return store.committedSeq;
    },

    capacity() {
      return capacity(now());
    },
  };
}
