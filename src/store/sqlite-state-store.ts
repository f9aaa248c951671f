// The durable state store: convoy.db in the data directory (see db.ts for pragmas and recovery).
//
// Grouped commits: put*/delete* only append an entry to an in-memory batch. The first commit() after
// a change schedules one flush (setImmediate, or a timer of commitWindowMs); the flush applies the
// whole batch in one transaction (one WAL fsync) and settles every commit() promise waiting on it.
// So the cost per message falls as load rises: everything from one event-loop turn, or one window,
// shares one fsync.
//
// Coalescing: a delivery put and then replaced or deleted in the same batch is written at most once
// (the replaced/deleted put is dropped from the batch; a delete of a row that is not on disk costs a
// lookup, not a write).
//
// Message garbage collection: deleting a delivery (or a session) makes its message a candidate;
// at the end of the same transaction each candidate no delivery references any more is deleted
// (deliveries_by_message index). The message with the highest id is kept until a higher one exists:
// it records lastMessageId without a separate counter row that would cost a page per commit.
//
// Checkpoints: a PASSIVE checkpoint runs on its own event-loop turn after a flush has settled its
// promises, whenever about 1 MB of WAL has been written since the last one, so acknowledgements
// never wait for it and each step stays small.
//
// Participants: another component writing to the same database (the uplink outbox) attaches a
// CommitParticipant. Its pending work is applied inside the same transaction as the batch (after
// the batch's entries), so both become durable with one fsync or not at all; commit() schedules a
// flush when only participants have work. A failed transaction keeps the participants' pending work
// too (they are told `committed()` only after a successful one) and the retry applies it again.
//
// Errors: a failed flush keeps its batch (retried by the next commit()), sets `fault`
// (SQLITE_FULL/ENOSPC → disk_full, SQLITE_READONLY → read_only, else io_error) and rejects the
// waiting commits with a StoreError; the next successful flush clears `fault`.
import type { Properties, QoS, Will } from '../mqtt/packets.js';
import { openDatabase, type SqliteDatabase, type StoreLog } from './db.js';
import {
  StoreError,
  type StateStore,
  type StoreFault,
  type StoredDelivery,
  type StoredMessage,
  type StoredSession,
  type StoredState,
  type StoredSubscription,
} from './state-store.js';

export interface SqliteStateStoreOptions {
  /** The database file (created with its directory if missing). */
  path: string;
  log: StoreLog;
  /**
   * 0 (default): a commit runs on the next event-loop turn (setImmediate) after the first commit()
   * call. 1..MAX_COMMIT_WINDOW_MS: it waits that long to gather more changes into one transaction.
   */
  commitWindowMs?: number;
  /** Time budget for the integrity check at open (see openDatabase). */
  integrityCheckMs?: number;
}

/**
 * Another writer whose changes commit in the store's grouped transactions (see the header comment).
 * `apply` runs inside the transaction and may throw (the transaction is rolled back and the pending
 * work must stay for the retry); `committed` runs after the transaction succeeded.
 */
export interface CommitParticipant {
  readonly hasPending: boolean;
  /** Rough bytes the pending work writes (for the checkpoint schedule); 0 if unknown. */
  readonly pendingBytes?: number;
  apply(): void;
  committed(): void;
}

export const MAX_COMMIT_WINDOW_MS = 50;
/** Estimated WAL bytes after which a PASSIVE checkpoint is scheduled. */
const CHECKPOINT_AFTER_BYTES = 1024 * 1024;
/** Rough WAL cost of one commit beyond its rows: the pages a transaction always touches. */
const COMMIT_OVERHEAD_BYTES = 3 * 4096;
const ROW_OVERHEAD_BYTES = 64;

const enum Op {
  PutSession,
  DeleteSession,
  PutSubscription,
  DeleteSubscription,
  PutMessage,
  PutDelivery,
  DeleteDelivery,
  PutIncomingQos2,
  DeleteIncomingQos2,
  PutDelayedWill,
  DeleteDelayedWill,
  PutRetained,
  DeleteRetained,
}

type BatchEntry =
  | { op: Op.PutSession; clientId: string; expiryInterval: number; disconnectedAt: number }
  | { op: Op.DeleteSession; clientId: string }
  | { op: Op.PutSubscription; clientId: string; sub: StoredSubscription }
  | { op: Op.DeleteSubscription; clientId: string; filter: string }
  | { op: Op.PutMessage; id: number; msg: StoredMessage }
  | {
      op: Op.PutDelivery;
      clientId: string;
      seq: number;
      messageId: number;
      qos: QoS;
      retain: boolean;
      subIds: number[] | undefined;
      shareKey: string | undefined;
      state: StoredDelivery['state'];
      packetId: number;
    }
  | { op: Op.DeleteDelivery; clientId: string; seq: number }
  | { op: Op.PutIncomingQos2; clientId: string; packetId: number }
  | { op: Op.DeleteIncomingQos2; clientId: string; packetId: number }
  | { op: Op.PutDelayedWill; clientId: string; will: Will; dueAt: number }
  | { op: Op.DeleteDelayedWill; clientId: string }
  | { op: Op.PutRetained; msg: StoredMessage }
  | { op: Op.DeleteRetained; topic: string };

const DELIVERY_STATES = ['queued', 'publish', 'pubrel'] as const;
const STATE_CODE: Record<StoredDelivery['state'], number> = { queued: 0, publish: 1, pubrel: 2 };

interface MessageRow {
  topic: string;
  payload: Buffer;
  qos: number;
  retain: number;
  properties: string | null;
  sender: string;
  received_at: number;
  expires_at: number;
}

/** Maps a SQLite or system error to the fault the broker acts on. */
export function classifyStoreError(err: unknown): StoreFault {
  const e = err as { code?: unknown; message?: unknown };
  const code = typeof e.code === 'string' ? e.code : '';
  const message = typeof e.message === 'string' ? e.message : '';
  if (code.startsWith('SQLITE_FULL') || code === 'ENOSPC' || message.includes('ENOSPC')) return 'disk_full';
  if (code.startsWith('SQLITE_READONLY') || code === 'EROFS') return 'read_only';
  return 'io_error';
}

export class SqliteStateStore implements StateStore {
  /** The connection, for diagnostics and tests; the store owns it. */
  readonly db: SqliteDatabase;
  /** Set when the database file was corrupt at open and was replaced by a fresh one. */
  readonly recovered?: { movedTo: string; reason: string };

  private readonly log: StoreLog;
  private readonly commitWindowMs: number;
  private batch: (BatchEntry | null)[] = [];
  /** Index in `batch` of the latest pending putDelivery per client and seq (for coalescing). */
  private pendingDeliveries = new Map<string, Map<number, number>>();
  /** Messages that may have lost their last delivery. */
  private readonly gcCandidates = new Set<number>();
  /** Highest message id put so far (on disk or in the batch). */
  private maxMessageId: number;
  private batchBytes = 0;
  private walBytes = 0;

  private waiting: { promise: Promise<void>; resolve: () => void; reject: (e: Error) => void } | null = null;
  private timer: NodeJS.Immediate | NodeJS.Timeout | null = null;
  private checkpointTimer: NodeJS.Immediate | null = null;
  private currentFault: StoreFault | null = null;
  private closed = false;

  private readonly participants: CommitParticipant[] = [];
  /** The participants whose work the running transaction applies. */
  private applying: CommitParticipant[] = [];
  /** The participants of the last successful transaction, told by notifyParticipants(). */
  private committedParticipants: CommitParticipant[] = [];

  private readonly stmt;
  private readonly tx: () => void;
  private warnedClosed = false;

  constructor(opts: SqliteStateStoreOptions) {
    const window = opts.commitWindowMs ?? 0;
    if (!Number.isInteger(window) || window < 0 || window > MAX_COMMIT_WINDOW_MS) {
      throw new RangeError(`commitWindowMs must be an integer from 0 to ${MAX_COMMIT_WINDOW_MS}, not ${window}`);
    }
    this.commitWindowMs = window;
    this.log = opts.log;
    const opened = openDatabase(opts.path, {
      log: opts.log,
      ...(opts.integrityCheckMs !== undefined ? { integrityCheckMs: opts.integrityCheckMs } : {}),
    });
    this.db = opened.db;
    if (opened.recovered !== undefined) this.recovered = opened.recovered;

    const db = this.db;
    try {
      this.stmt = {
        putSession: db.prepare(
          'INSERT OR REPLACE INTO sessions (client_id, expiry_interval, disconnected_at) VALUES (?, ?, ?)',
        ),
        sessionMessages: db.prepare('SELECT DISTINCT message_id FROM deliveries WHERE client_id = ?').pluck(),
        deleteSession: db.prepare('DELETE FROM sessions WHERE client_id = ?'),
        deleteSessionSubscriptions: db.prepare('DELETE FROM subscriptions WHERE client_id = ?'),
        deleteSessionDeliveries: db.prepare('DELETE FROM deliveries WHERE client_id = ?'),
        deleteSessionQos2: db.prepare('DELETE FROM incoming_qos2 WHERE client_id = ?'),
        putSubscription: db.prepare(
          'INSERT OR REPLACE INTO subscriptions (client_id, filter, qos, no_local, retain_as_published, ' +
            'retain_handling, subscription_id) VALUES (?, ?, ?, ?, ?, ?, ?)',
        ),
        deleteSubscription: db.prepare('DELETE FROM subscriptions WHERE client_id = ? AND filter = ?'),
        putMessage: db.prepare(
          'INSERT OR REPLACE INTO messages (id, topic, payload, qos, retain, properties, sender, received_at, ' +
            'expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)',
        ),
        gcMessage: db.prepare(
          'DELETE FROM messages WHERE id = ? AND NOT EXISTS (SELECT 1 FROM deliveries WHERE message_id = ?)',
        ),
        putDelivery: db.prepare(
          'INSERT OR REPLACE INTO deliveries (client_id, seq, message_id, qos, retain, sub_ids, share_key, ' +
            'state, packet_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)',
        ),
        deleteDelivery: db
          .prepare('DELETE FROM deliveries WHERE client_id = ? AND seq = ? RETURNING message_id')
          .pluck(),
        putQos2: db.prepare('INSERT OR IGNORE INTO incoming_qos2 (client_id, packet_id) VALUES (?, ?)'),
        deleteQos2: db.prepare('DELETE FROM incoming_qos2 WHERE client_id = ? AND packet_id = ?'),
        putWill: db.prepare(
          'INSERT OR REPLACE INTO delayed_wills (client_id, topic, payload, qos, retain, properties, due_at) ' +
            'VALUES (?, ?, ?, ?, ?, ?, ?)',
        ),
        deleteWill: db.prepare('DELETE FROM delayed_wills WHERE client_id = ?'),
        putRetained: db.prepare(
          'INSERT OR REPLACE INTO retained (topic, payload, qos, retain, properties, sender, received_at, ' +
            'expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)',
        ),
        deleteRetained: db.prepare('DELETE FROM retained WHERE topic = ?'),
      };
      this.tx = db.transaction(() => {
        this.applyEntries();
        for (const p of this.applying) p.apply();
      });
      this.maxMessageId = (db.prepare('SELECT coalesce(max(id), 0) FROM messages').pluck().get() as number) ?? 0;
      // Messages left unreferenced by a crash between a delete and its garbage collection.
      const swept = db
        .prepare('DELETE FROM messages WHERE id < ? AND id NOT IN (SELECT message_id FROM deliveries)')
        .run(this.maxMessageId).changes;
      if (swept > 0) this.log.info({ messages: swept }, 'store removed unreferenced messages');
    } catch (err) {
      db.close();
      throw err;
    }
  }

  get pending(): boolean {
    return this.batch.length > 0 || this.participantsPending();
  }

  private participantsPending(): boolean {
    for (const p of this.participants) if (p.hasPending) return true;
    return false;
  }

  /**
   * Makes `p`'s pending work part of every grouped commit (same transaction as the batch).
   * Returns a function that detaches it.
   */
  attachParticipant(p: CommitParticipant): () => void {
    if (!this.participants.includes(p)) this.participants.push(p);
    return () => {
      const i = this.participants.indexOf(p);
      if (i >= 0) this.participants.splice(i, 1);
    };
  }

  get fault(): StoreFault | null {
    return this.currentFault;
  }

  load(): StoredState {
    const sessions = new Map<string, StoredSession>();
    for (const row of this.db
      .prepare('SELECT client_id, expiry_interval, disconnected_at FROM sessions ORDER BY client_id')
      .iterate() as IterableIterator<{ client_id: string; expiry_interval: number; disconnected_at: number }>) {
      sessions.set(row.client_id, {
        clientId: row.client_id,
        expiryInterval: row.expiry_interval,
        disconnectedAt: row.disconnected_at,
        subscriptions: [],
        deliveries: [],
        incomingQos2: [],
      });
    }

    for (const row of this.db
      .prepare('SELECT * FROM subscriptions ORDER BY client_id, filter')
      .iterate() as IterableIterator<{
      client_id: string;
      filter: string;
      qos: number;
      no_local: number;
      retain_as_published: number;
      retain_handling: number;
      subscription_id: number | null;
    }>) {
      const sub: StoredSubscription = {
        filter: row.filter,
        qos: row.qos as QoS,
        noLocal: row.no_local !== 0,
        retainAsPublished: row.retain_as_published !== 0,
        retainHandling: row.retain_handling as 0 | 1 | 2,
      };
      if (row.subscription_id !== null) sub.subscriptionId = row.subscription_id;
      sessions.get(row.client_id)?.subscriptions.push(sub);
    }

    const referenced = new Set<number>();
    for (const row of this.db
      .prepare('SELECT * FROM deliveries ORDER BY client_id, seq')
      .iterate() as IterableIterator<{
      client_id: string;
      seq: number;
      message_id: number;
      qos: number;
      retain: number;
      sub_ids: string | null;
      share_key: string | null;
      state: number;
      packet_id: number;
    }>) {
      const session = sessions.get(row.client_id);
      if (session === undefined) continue;
      const d: StoredDelivery = {
        seq: row.seq,
        messageId: row.message_id,
        qos: row.qos as QoS,
        retain: row.retain !== 0,
        state: DELIVERY_STATES[row.state] ?? 'queued',
        packetId: row.packet_id,
      };
      if (row.sub_ids !== null) d.subIds = row.sub_ids === '' ? [] : row.sub_ids.split(',').map(Number);
      if (row.share_key !== null) d.shareKey = row.share_key;
      session.deliveries.push(d);
      referenced.add(row.message_id);
    }

    for (const row of this.db
      .prepare('SELECT client_id, packet_id FROM incoming_qos2 ORDER BY client_id, packet_id')
      .iterate() as IterableIterator<{ client_id: string; packet_id: number }>) {
      sessions.get(row.client_id)?.incomingQos2.push(row.packet_id);
    }

    for (const row of this.db.prepare('SELECT * FROM delayed_wills').iterate() as IterableIterator<{
      client_id: string;
      topic: string;
      payload: Buffer;
      qos: number;
      retain: number;
      properties: string | null;
      due_at: number;
    }>) {
      const session = sessions.get(row.client_id);
      if (session === undefined) continue;
      const will: Will = { topic: row.topic, payload: row.payload, qos: row.qos as QoS, retain: row.retain !== 0 };
      if (row.properties !== null) will.properties = decodeProperties(row.properties);
      session.delayedWill = { will, dueAt: row.due_at };
    }

    const messages = new Map<number, StoredMessage>();
    for (const row of this.db.prepare('SELECT * FROM messages ORDER BY id').iterate() as IterableIterator<
      MessageRow & { id: number }
    >) {
      if (referenced.has(row.id)) messages.set(row.id, messageFromRow(row));
    }

    const retained: StoredMessage[] = [];
    for (const row of this.db.prepare('SELECT * FROM retained ORDER BY topic').iterate() as IterableIterator<MessageRow>) {
      retained.push(messageFromRow(row));
    }

    const lastMessageId = this.db.prepare('SELECT coalesce(max(id), 0) FROM messages').pluck().get() as number;
    return { sessions: [...sessions.values()], messages, retained, lastMessageId };
  }

  // ---- changes: each appends one batch entry ----

  putSession(clientId: string, expiryInterval: number, disconnectedAt: number): void {
    this.add({ op: Op.PutSession, clientId, expiryInterval, disconnectedAt });
  }

  deleteSession(clientId: string): void {
    // Earlier puts for this client stay in the batch (the delete wipes them); later ones must not
    // cancel puts from before the delete, so forget them.
    this.pendingDeliveries.delete(clientId);
    this.add({ op: Op.DeleteSession, clientId });
  }

  putSubscription(clientId: string, sub: StoredSubscription): void {
    this.add({ op: Op.PutSubscription, clientId, sub });
  }

  deleteSubscription(clientId: string, filter: string): void {
    this.add({ op: Op.DeleteSubscription, clientId, filter });
  }

  putMessage(id: number, msg: StoredMessage): void {
    if (id > this.maxMessageId) this.maxMessageId = id;
    this.batchBytes += msg.payload.length + msg.topic.length;
    this.add({ op: Op.PutMessage, id, msg });
  }

  putDelivery(clientId: string, d: StoredDelivery): void {
    let perClient = this.pendingDeliveries.get(clientId);
    if (perClient === undefined) {
      perClient = new Map();
      this.pendingDeliveries.set(clientId, perClient);
    } else {
      const earlier = perClient.get(d.seq);
      if (earlier !== undefined) this.cancelDelivery(earlier);
    }
    perClient.set(d.seq, this.batch.length);
    // Copied field by field into the entry: the broker may change its delivery object later.
    this.add({
      op: Op.PutDelivery,
      clientId,
      seq: d.seq,
      messageId: d.messageId,
      qos: d.qos,
      retain: d.retain,
      subIds: d.subIds,
      shareKey: d.shareKey,
      state: d.state,
      packetId: d.packetId,
    });
  }

  deleteDelivery(clientId: string, seq: number): void {
    const perClient = this.pendingDeliveries.get(clientId);
    const earlier = perClient?.get(seq);
    if (earlier !== undefined) {
      this.cancelDelivery(earlier);
      perClient?.delete(seq);
    }
    this.add({ op: Op.DeleteDelivery, clientId, seq });
  }

  /** Drops a put of a delivery that a later entry of the same batch replaces or deletes. */
  private cancelDelivery(index: number): void {
    const entry = this.batch[index];
    if (entry?.op === Op.PutDelivery) {
      // Its message may have been put in this batch with no other delivery: let the GC decide.
      this.gcCandidates.add(entry.messageId);
      this.batch[index] = null;
    }
  }

  putIncomingQos2(clientId: string, packetId: number): void {
    this.add({ op: Op.PutIncomingQos2, clientId, packetId });
  }

  deleteIncomingQos2(clientId: string, packetId: number): void {
    this.add({ op: Op.DeleteIncomingQos2, clientId, packetId });
  }

  putDelayedWill(clientId: string, will: Will, dueAt: number): void {
    this.add({ op: Op.PutDelayedWill, clientId, will, dueAt });
  }

  deleteDelayedWill(clientId: string): void {
    this.add({ op: Op.DeleteDelayedWill, clientId });
  }

  putRetained(msg: StoredMessage): void {
    this.batchBytes += msg.payload.length + msg.topic.length;
    this.add({ op: Op.PutRetained, msg });
  }

  deleteRetained(topic: string): void {
    this.add({ op: Op.DeleteRetained, topic });
  }

  private add(entry: BatchEntry): void {
    if (this.closed) {
      if (!this.warnedClosed) this.log.warn({}, 'store change after close() ignored');
      this.warnedClosed = true;
      return;
    }
    this.batch.push(entry);
  }

  // ---- commits ----

  commit(): Promise<void> {
    if (this.closed) return Promise.reject(new StoreError('io_error', 'the store is closed'));
    if (!this.pending) return Promise.resolve();
    if (this.waiting === null) {
      let resolve!: () => void;
      let reject!: (e: Error) => void;
      const promise = new Promise<void>((res, rej) => {
        resolve = res;
        reject = rej;
      });
      this.waiting = { promise, resolve, reject };
      this.timer =
        this.commitWindowMs > 0 ? setTimeout(this.onTimer, this.commitWindowMs) : setImmediate(this.onTimer);
    }
    return this.waiting.promise;
  }

  private readonly onTimer = (): void => {
    this.timer = null;
    this.settle(this.flush());
    this.notifyParticipants();
  };

  /**
   * Tells the participants of the transaction that just succeeded. After settle(), so that work
   * they add from their callbacks gets a commit of its own.
   */
  private notifyParticipants(): void {
    const list = this.committedParticipants;
    this.committedParticipants = [];
    for (const p of list) {
      try {
        p.committed();
      } catch (err) {
        this.log.error({ err: err instanceof Error ? err.message : String(err) }, 'store participant failed after commit');
      }
    }
  }

  /** Settles the waiting commits with the outcome of a flush. */
  private settle(error: StoreError | null): void {
    const waiting = this.waiting;
    this.waiting = null;
    if (waiting === null) return;
    if (error === null) waiting.resolve();
    else waiting.reject(error);
  }

  /** Applies the batch in one transaction. Returns null on success, the error otherwise (batch kept). */
  private flush(): StoreError | null {
    const applying = this.participants.filter((p) => p.hasPending);
    if (this.batch.length === 0 && applying.length === 0) return null;
    const rows = this.batch.length;
    let participantBytes = 0;
    for (const p of applying) participantBytes += p.pendingBytes ?? 0;
    this.applying = applying;
    try {
      this.tx();
      // The GC candidates this (now committed) transaction handled; the highest id waits.
      for (const id of this.gcCandidates) if (id < this.maxMessageId) this.gcCandidates.delete(id);
    } catch (err) {
      const fault = classifyStoreError(err);
      const message = err instanceof Error ? err.message : String(err);
      if (this.currentFault !== fault) {
        this.log.error({ fault, err: message, pendingChanges: rows }, 'store commit failed: changes kept for retry');
      }
      this.currentFault = fault;
      return new StoreError(fault, `store commit failed (${fault}): ${message}`);
    } finally {
      this.applying = [];
    }
    if (this.currentFault !== null) {
      this.log.info({ fault: this.currentFault, changes: rows }, 'store commits succeed again');
      this.currentFault = null;
    }
    this.walBytes += this.batchBytes + participantBytes + rows * ROW_OVERHEAD_BYTES + COMMIT_OVERHEAD_BYTES;
    this.batch = [];
    this.batchBytes = 0;
    this.pendingDeliveries = new Map();
    this.committedParticipants = applying;
    if (this.walBytes >= CHECKPOINT_AFTER_BYTES && this.checkpointTimer === null) {
      this.checkpointTimer = setImmediate(this.checkpoint);
    }
    return null;
  }

  private applyEntries(): void {
    const s = this.stmt;
    for (const e of this.batch) {
      if (e === null) continue;
      switch (e.op) {
        case Op.PutSession:
          s.putSession.run(e.clientId, e.expiryInterval, e.disconnectedAt);
          break;
        case Op.DeleteSession:
          for (const id of s.sessionMessages.all(e.clientId) as number[]) this.gcCandidates.add(id);
          s.deleteSessionDeliveries.run(e.clientId);
          s.deleteSessionSubscriptions.run(e.clientId);
          s.deleteSessionQos2.run(e.clientId);
          s.deleteWill.run(e.clientId);
          s.deleteSession.run(e.clientId);
          break;
        case Op.PutSubscription: {
          const sub = e.sub;
          s.putSubscription.run(
            e.clientId,
            sub.filter,
            sub.qos,
            sub.noLocal ? 1 : 0,
            sub.retainAsPublished ? 1 : 0,
            sub.retainHandling,
            sub.subscriptionId ?? null,
          );
          break;
        }
        case Op.DeleteSubscription:
          s.deleteSubscription.run(e.clientId, e.filter);
          break;
        case Op.PutMessage: {
          const m = e.msg;
          s.putMessage.run(
            e.id,
            m.topic,
            m.payload,
            m.qos,
            m.retain ? 1 : 0,
            encodeProperties(m.properties),
            m.senderId,
            m.receivedAt,
            m.expiresAt,
          );
          break;
        }
        case Op.PutDelivery:
          s.putDelivery.run(
            e.clientId,
            e.seq,
            e.messageId,
            e.qos,
            e.retain ? 1 : 0,
            e.subIds === undefined ? null : e.subIds.join(','),
            e.shareKey ?? null,
            STATE_CODE[e.state],
            e.packetId,
          );
          break;
        case Op.DeleteDelivery: {
          const messageId = s.deleteDelivery.get(e.clientId, e.seq) as number | undefined;
          if (messageId !== undefined) this.gcCandidates.add(messageId);
          break;
        }
        case Op.PutIncomingQos2:
          s.putQos2.run(e.clientId, e.packetId);
          break;
        case Op.DeleteIncomingQos2:
          s.deleteQos2.run(e.clientId, e.packetId);
          break;
        case Op.PutDelayedWill: {
          const w = e.will;
          s.putWill.run(
            e.clientId,
            w.topic,
            w.payload,
            w.qos,
            w.retain ? 1 : 0,
            encodeProperties(w.properties),
            e.dueAt,
          );
          break;
        }
        case Op.DeleteDelayedWill:
          s.deleteWill.run(e.clientId);
          break;
        case Op.PutRetained: {
          const m = e.msg;
          s.putRetained.run(
            m.topic,
            m.payload,
            m.qos,
            m.retain ? 1 : 0,
            encodeProperties(m.properties),
            m.senderId,
            m.receivedAt,
            m.expiresAt,
          );
          break;
        }
        case Op.DeleteRetained:
          s.deleteRetained.run(e.topic);
          break;
      }
    }
    // Garbage-collect messages without deliveries. The highest id stays (it carries lastMessageId)
    // and is reconsidered once a higher one has been put.
    for (const id of this.gcCandidates) {
      if (id < this.maxMessageId) s.gcMessage.run(id, id);
    }
  }

  private readonly checkpoint = (): void => {
    this.checkpointTimer = null;
    if (this.closed) return;
    try {
      this.db.pragma('wal_checkpoint(PASSIVE)');
      this.walBytes = 0;
    } catch (err) {
      this.log.warn({ err: err instanceof Error ? err.message : String(err) }, 'store checkpoint failed');
    }
  };

  /** Commits what is pending (synchronously), then closes the database. */
  close(): void {
    if (this.closed) return;
    if (this.timer !== null) {
      clearTimeout(this.timer as NodeJS.Timeout);
      clearImmediate(this.timer as NodeJS.Immediate);
      this.timer = null;
    }
    if (this.checkpointTimer !== null) clearImmediate(this.checkpointTimer);
    this.checkpointTimer = null;
    const error = this.flush();
    if (error !== null) this.log.error({ err: error.message }, 'store closed with uncommitted changes');
    this.settle(error);
    this.notifyParticipants();
    this.closed = true;
    this.db.close();
  }
}

// ---- encodings ----

/** Properties as JSON; Buffers (correlation data, authentication data) as {"$b": base64}. */
export function encodeProperties(p: Properties | undefined): string | null {
  if (p === undefined) return null;
  return JSON.stringify(p, function (this: Record<string, unknown>, key: string, value: unknown) {
    const raw = this[key];
    return Buffer.isBuffer(raw) ? { $b: raw.toString('base64') } : value;
  });
}

export function decodeProperties(json: string): Properties {
  return JSON.parse(json, (_key: string, value: unknown) => {
    if (value !== null && typeof value === 'object' && !Array.isArray(value)) {
      const b = (value as { $b?: unknown }).$b;
      if (typeof b === 'string' && Object.keys(value).length === 1) return Buffer.from(b, 'base64');
    }
    return value;
  }) as Properties;
}

function messageFromRow(row: MessageRow): StoredMessage {
  const msg: StoredMessage = {
    topic: row.topic,
    payload: row.payload,
    qos: row.qos as QoS,
    retain: row.retain !== 0,
    senderId: row.sender,
    receivedAt: row.received_at,
    expiresAt: row.expires_at,
  };
  if (row.properties !== null) msg.properties = decodeProperties(row.properties);
  return msg;
}
