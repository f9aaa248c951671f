// What the broker persists, as a journal of changes: the broker keeps its working state in memory
// and tells the store every change; the store makes them durable in grouped commits and hands the
// whole state back at start. Two implementations run the same conformance suite: MemoryStateStore
// (no durability: the default for tests and a gateway without a data directory) and
// SqliteStateStore (the data directory's convoy.db).
import type { Properties, QoS, Will } from '../mqtt/packets.js';

export interface StoredSubscription {
  filter: string;
  qos: QoS;
  noLocal: boolean;
  retainAsPublished: boolean;
  retainHandling: 0 | 1 | 2;
  subscriptionId?: number;
}

/** An application message, stored once however many sessions it is queued for. */
export interface StoredMessage {
  topic: string;
  payload: Buffer;
  qos: QoS;
  retain: boolean;
  properties?: Properties;
  senderId: string;
  /** Date.now() at receipt. */
  receivedAt: number;
  /** Date.now() after which it must not be delivered; 0 = never. */
  expiresAt: number;
}

/** One message on its way to one session. */
export interface StoredDelivery {
  /** Per-session order; strictly increasing in the order the broker created the deliveries. */
  seq: number;
  messageId: number;
  qos: QoS;
  retain: boolean;
  subIds?: number[];
  shareKey?: string;
  /** 'queued': not sent yet (packetId 0); 'publish': sent, awaiting PUBACK/PUBREC; 'pubrel': PUBREL sent. */
  state: 'queued' | 'publish' | 'pubrel';
  packetId: number;
}

export interface StoredSession {
  clientId: string;
  /** Seconds; 0xFFFFFFFF = never. */
  expiryInterval: number;
  /** Date.now() of the last disconnect; 0 if it was connected when the store last committed. */
  disconnectedAt: number;
  subscriptions: StoredSubscription[];
  /** Ordered by seq. */
  deliveries: StoredDelivery[];
  /** QoS 2 packet ids received and PUBREC'd, awaiting PUBREL. */
  incomingQos2: number[];
  /** A will waiting for its delay interval, with the Date.now() when it is due. */
  delayedWill?: { will: Will; dueAt: number };
}

export interface StoredState {
  sessions: StoredSession[];
  /** Messages referenced by at least one delivery, by id. */
  messages: Map<number, StoredMessage>;
  retained: StoredMessage[];
  /**
   * At least the highest id of any stored message: the broker gives out ids above it. (An id given
   * out but never written, because its deliveries were acknowledged first, may be given out again.)
   */
  lastMessageId: number;
  /**
   * The previous process did not close the store (a crash or a power cut). Then a delivery stored
   * as 'queued' may have been sent before its new state was committed: the broker sends it with
   * DUP set ("might be a re-delivery", MQTT 5 §3.3.1.1).
   */
  unclean: boolean;
}

/** Why the store cannot take more writes right now (the broker refuses new durable publishes). */
export type StoreFault = 'disk_full' | 'read_only' | 'io_error';

export interface StateStore {
  /** Everything stored, for the broker to rebuild its memory at start. */
  load(): StoredState;

  putSession(clientId: string, expiryInterval: number, disconnectedAt: number): void;
  /** Removes the session with its subscriptions, deliveries, QoS 2 ids and delayed will. */
  deleteSession(clientId: string): void;
  putSubscription(clientId: string, sub: StoredSubscription): void;
  deleteSubscription(clientId: string, filter: string): void;

  /** Stores a message under an id the broker assigned (increasing). */
  putMessage(id: number, msg: StoredMessage): void;
  /** Inserts or replaces (by clientId + seq) a delivery. */
  putDelivery(clientId: string, d: StoredDelivery): void;
  /** Removes a delivery; a message no delivery references any more is deleted in a later batch. */
  deleteDelivery(clientId: string, seq: number): void;

  putIncomingQos2(clientId: string, packetId: number): void;
  deleteIncomingQos2(clientId: string, packetId: number): void;

  putDelayedWill(clientId: string, will: Will, dueAt: number): void;
  deleteDelayedWill(clientId: string): void;

  putRetained(msg: StoredMessage): void;
  deleteRetained(topic: string): void;

  /**
   * Resolves when every change made before the call is durable. All changes made in one
   * event-loop turn (or within the configured window) share one transaction. Rejects with a
   * StoreError when the commit failed; the changes of a failed batch are kept and retried.
   */
  commit(): Promise<void>;
  /**
   * Optional: checks (cheaply, without I/O) whether a commit has finished and settles it now. The
   * broker calls it at the end of each turn of packet handling, so a finished commit is noticed
   * before the next batch is formed.
   */
  poll?(): void;
  /** True when changes are waiting for a commit. */
  readonly pending: boolean;
  /** Set while the store cannot write (disk full, read-only); cleared when a commit succeeds again. */
  readonly fault: StoreFault | null;
  close(): void;
}

export class StoreError extends Error {
  constructor(readonly fault: StoreFault, message: string) {
    super(message);
    this.name = 'StoreError';
  }
}
