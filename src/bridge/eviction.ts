// The outbox's eviction policy (pure: no store, no clock, no filesystem).
//
// When a newcomer does not fit (the outbox would hold more than its capacity: the byte budget,
// lowered by the filesystem floor), room is made in this order:
//   1. expired records (any class, alarms included: their time to live has passed, they would be
//      dropped when read anyway; counted as `expired`);
//   2. the oldest records of the lowest class present: bulk, then telemetry, then event
//      (counted as `evicted`);
//   3. never alarms. When expired and non-alarm records together cannot make room (only alarms
//      left, or a newcomer larger than the capacity), the newcomer is refused (`refused_full`),
//      whatever its class, and nothing that is not expired is dropped for it.
// The newcomer's class does not restrict what it may evict: an alarm evicts non-alarms, and so
// does any other newcomer (the oldest data of the least important class goes first, so a steady
// bulk stream only ever evicts bulk). An alarm newcomer is refused only when only alarms remain.
import { OUTBOX_CLASSES, type OutboxClass } from './types.js';

export interface ClassTotals {
  count: number;
  bytes: number;
}

export type ClassTotalsByClass = Record<OutboxClass, ClassTotals>;

/** Classes in the order their oldest records are evicted. Alarms are not in it. */
export const EVICTION_ORDER: readonly OutboxClass[] = ['bulk', 'telemetry', 'event'];

export function emptyTotals(): ClassTotalsByClass {
  const t = {} as ClassTotalsByClass;
  for (const cls of OUTBOX_CLASSES) t[cls] = { count: 0, bytes: 0 };
  return t;
}

export function totalBytes(t: ClassTotalsByClass): number {
  let n = 0;
  for (const cls of OUTBOX_CLASSES) n += t[cls].bytes;
  return n;
}

/**
 * How many bytes the outbox may reach before the filesystem drops below its floor, from one
 * measurement: what it holds now, the filesystem's free bytes, the free pages inside the
 * database file (a deleted row's pages are reused before the file grows, but deleting rows does
 * not give space back to the filesystem), minus the floor.
 */
export function floorCapacity(m: {
  outboxBytes: number;
  freeBytes: number;
  reusableBytes: number;
  minFreeBytes: number;
}): number {
  return m.outboxBytes + m.freeBytes + m.reusableBytes - m.minFreeBytes;
}

/** Most bytes the outbox may hold now: the budget, or less when the floor says so. */
export function outboxCapacity(budgetBytes: number, floorCapacityBytes: number): number {
  return Math.max(0, Math.min(budgetBytes, floorCapacityBytes));
}

export interface EvictionInput {
  /** What the outbox holds per class (expired records included). */
  byClass: ClassTotalsByClass;
  /** The part of byClass known to be expired (dropped first). */
  expired: ClassTotalsByClass;
  incoming: { cls: OutboxClass; size: number };
  /** See outboxCapacity. */
  capacityBytes: number;
}

export interface EvictionDecision {
  /** Store the newcomer (after the drops below). */
  accept: boolean;
  /** Bytes that must be freed for the newcomer; 0 when it fits as things are. */
  needBytes: number;
  /** Drop the known expired records (also when refusing: they are dead anyway). */
  dropExpired: boolean;
  /**
   * Then evict the oldest records of these classes, in this order, at least `bytes` from each
   * (whole records, so a little more may go). Empty when refused: nothing live is dropped for a
   * newcomer that is not stored.
   */
  evict: { cls: OutboxClass; bytes: number }[];
}

export function planEviction(input: EvictionInput): EvictionDecision {
  const { byClass, expired, incoming, capacityBytes } = input;
  const need = totalBytes(byClass) + incoming.size - capacityBytes;
  if (need <= 0) return { accept: true, needBytes: 0, dropExpired: false, evict: [] };

  let expiredBytes = 0;
  for (const cls of OUTBOX_CLASSES) expiredBytes += Math.min(expired[cls].bytes, byClass[cls].bytes);
  const dropExpired = expiredBytes > 0;
  let remaining = need - expiredBytes;
  const evict: { cls: OutboxClass; bytes: number }[] = [];
  for (const cls of EVICTION_ORDER) {
    if (remaining <= 0) break;
    const live = byClass[cls].bytes - Math.min(expired[cls].bytes, byClass[cls].bytes);
    const take = Math.min(live, remaining);
    if (take > 0) {
      evict.push({ cls, bytes: take });
      remaining -= take;
    }
  }
  if (remaining > 0) return { accept: false, needBytes: need, dropExpired, evict: [] };
  return { accept: true, needBytes: need, dropExpired, evict };
}
