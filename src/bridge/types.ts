// Shapes shared by the uplink's parts: the outbox (store-and-forward queue), the forwarder that
// drains it to HQ, and the link that holds the MQTT connection to HQ.
import type { Properties, QoS } from '../mqtt/packets.js';

/** Priority classes, drained in this order; alarms are never evicted. */
export const OUTBOX_CLASSES = ['alarm', 'event', 'telemetry', 'bulk'] as const;
export type OutboxClass = (typeof OUTBOX_CLASSES)[number];

/** One message waiting for HQ. The topic is already the remote topic. */
export interface OutboxRecord {
  /** Per-gateway monotonic sequence number: the outbox order, and what HQ sees as `seq`. */
  seq: number;
  cls: OutboxClass;
  /** Local topic it was published on (for "newest per topic" and diagnostics). */
  localTopic: string;
  /** Topic at HQ. */
  topic: string;
  payload: Buffer;
  qos: QoS;
  /** MQTT 5 properties to send (application properties of the local message). */
  properties?: Properties;
  /** Date.now() when accepted. */
  createdAt: number;
  /** Date.now() after which it is dropped instead of sent; 0 = never. */
  expiresAt: number;
}

/** Why the outbox dropped a message. Stable names: counters and $SYS. */
export type OutboxDropReason = 'expired' | 'evicted' | 'refused_full';

export interface OutboxStats {
  count: number;
  bytes: number;
  byClass: Record<OutboxClass, { count: number; bytes: number }>;
  dropped: Record<OutboxDropReason, number>;
  /** Highest seq ever given out. */
  lastSeq: number;
}

/**
 * The outbox as the bridge sees it. Appends and removals are part of the store's grouped commit
 * (an append made while handling a PUBLISH holds that PUBLISH's acknowledgement until durable).
 */
export interface Outbox {
  /**
   * Accepts a message: assigns its seq, enforces the byte budget and the filesystem floor
   * (evicting expired, then the oldest of the lowest class, never alarms). Returns the record,
   * or null when refused (only alarms left and no room: counted as refused_full).
   */
  append(rec: Omit<OutboxRecord, 'seq'>): OutboxRecord | null;
  /** HQ acknowledged it (PUBACK / PUBCOMP): delete. */
  remove(seq: number): void;
  /**
   * Up to `limit` records of a class with seq > afterSeq, in seq order, expired ones dropped and
   * counted on the way. The array is new on every call: the caller may keep and change it.
   */
  next(cls: OutboxClass, afterSeq: number, limit: number): OutboxRecord[];
  /** The newest record per local topic of a class (for "where is the truck now" after reconnect). */
  newestPerTopic(cls: OutboxClass, limit: number): OutboxRecord[];
  stats(): OutboxStats;
  /**
   * Optional: removed records whose removal is not durable yet (a crash would bring them back, to
   * be sent again), and a callback after each commit that made removals durable. The forwarder
   * counts them against its bound on duplicates; an outbox without them has none pending.
   */
  removalsPending?(): number;
  onRemovalsDurable?(cb: () => void): () => void;
  /** Optional: commit pending removals now (an outbox may let them wait to commit many at once). */
  flushRemovals?(): void;
}
