// The durable state store: convoy.db in the data directory (see db.ts for pragmas and recovery).
//
// Grouped commits in a writer thread: put*/delete* only append an entry to an in-memory batch.
// The first commit() after a change schedules a seal (setImmediate, or a timer of commitWindowMs);
// sealing turns the batch into SQL statements and hands them to the store writer (writer.ts), whose
// thread commits them as one transaction (one WAL fsync) while the event loop goes on. One batch
// is in flight at a time: what arrives meanwhile forms the next batch, sealed as soon as the
// writer answers. So a batch holds everything from one commit's duration, and the cost per message
// falls as load rises, most of all on a slow medium.
//
// Coalescing, decided when the batch is sealed:
// - a delivery put and then replaced in the same batch is written once, in its last state;
// - a delivery put and deleted in the same batch (a message delivered and acknowledged before its
//   batch was sealed) is not written at all, nor deleted, when it is not on disk yet (not among
//   the deliveries already handed to the writer, see diskDeliveries);
// - a message is written only if a delivery written in the same batch references it. A message
//   whose deliveries were all acknowledged before the seal never touches the disk: it no longer
//   needs to outlive anything;
// - a message with exactly one delivery to write (the usual case: one persistent consumer) is
//   written inline, in that delivery's row (the m_* columns): one row to insert and one to delete
//   instead of two each. Should another delivery reference it later, its messages row is copied
//   from the owner's row first;
// - a delivery already on disk whose state changes (sent, PUBREL sent) gets an UPDATE of its
//   state and packet id, which keeps its inline message.
//
// Message garbage collection is decided here, from reference counts: the store mirrors which
// deliveries it has handed to the writer (client, seq → message id), so deleting the last one
// that references a message emits the message's delete in the same batch, with no index on
// deliveries.message_id and no query. The message with the highest id stays until a higher one
// is written: it records the last id given out, without a counter row that would cost a page per
// commit.
//
// Participants: another component writing to the same database (the uplink outbox, the signed-order
// replay state, the uplink's held QoS 2 downlink orders) attaches a CommitParticipant. At each seal
// its pending work is added to the batch (after the broker's entries), so both become durable with
// one fsync or not at all: what a participant records in the same event-loop turn as the broker's
// changes (e.g. deleting a held QoS 2 order as it is published locally) commits with them. commit()
// schedules a seal when only participants have work. Sealed work stays in flight until committed()
// says it is durable.
//
// Errors: a failed commit keeps its statements (sent again, first, with the next batch), sets
// `fault` (SQLITE_FULL/ENOSPC → disk_full, SQLITE_READONLY → read_only, else io_error) and rejects
// the waiting commits with a StoreError; the next successful commit clears `fault`.
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
import { SeqIndex } from './seq-index.js';
import { seqRuns } from './seq-runs.js';
import { StoreWriter, WriteBatch, type WriteFailure } from './writer.js';

export { WriteBatch } from './writer.js';

export interface SqliteStateStoreOptions {
  /** The database file (created with its directory if missing). */
  path: string;
  log: StoreLog;
  /**
   * 0 (default): a batch is sealed on the next event-loop turn (setImmediate) after the first
   * commit() call when the writer is idle. 1..MAX_COMMIT_WINDOW_MS: it waits that long to gather
   * more changes into one transaction.
   */
  commitWindowMs?: number;
  /** Time budget for the integrity check at open (see openDatabase). */
  integrityCheckMs?: number;
}

/**
 * Another writer whose changes commit in the store's grouped transactions (see the header comment).
 * Statements come from SqliteStateStore.statement(); a MemoryStateStore hands a batch nobody reads.
 */
export interface CommitParticipant {
  readonly hasPending: boolean;
  /** Moves the pending work into `batch`. It is in flight until committed() (a failed commit is retried). */
  seal(batch: WriteBatch): void;
  /** Everything sealed so far is durable. */
  committed(): void;
}

export const MAX_COMMIT_WINDOW_MS = 50;

/** A client's delivery deletes waiting to be written as ranges (see sealEntries). */
interface WaitingDeletes {
  seqs: number[];
  max: number;
}

/** Seqs not on disk that one delivery-delete range may span (see flushDeletes). */
const MAX_DELETE_GAP = 64;

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

interface DeliveryEntry {
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

type BatchEntry =
  | { op: Op.PutSession; clientId: string; expiryInterval: number; disconnectedAt: number }
  | { op: Op.DeleteSession; clientId: string }
  | { op: Op.PutSubscription; clientId: string; sub: StoredSubscription }
  | { op: Op.DeleteSubscription; clientId: string; filter: string }
  | { op: Op.PutMessage; id: number; msg: StoredMessage }
  | DeliveryEntry
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

interface Deferred {
  promise: Promise<void>;
  resolve: () => void;
  reject: (e: Error) => void;
}

function deferred(): Deferred {
  let resolve!: () => void;
  let reject!: (e: Error) => void;
  const promise = new Promise<void>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
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
  /** The read connection (load, the outbox's reads, diagnostics and tests); writes go through the writer. */
  readonly db: SqliteDatabase;
  /** Set when the database file was corrupt at open and was replaced by a fresh one. */
  readonly recovered?: { movedTo: string; reason: string };
  /** The previous process did not close the database (see StoredState.unclean). */
  readonly unclean: boolean;

  private readonly log: StoreLog;
  private readonly commitWindowMs: number;
  private readonly writer: StoreWriter;
  private batch: (BatchEntry | null)[] = [];
  /** Index in `batch` of the latest pending putDelivery per client and seq (for coalescing). */
  private pendingDeliveries = new Map<string, Map<number, number>>();
  /** Deliveries handed to the writer (or found on disk at open): client → seq → message id. */
  private readonly diskDeliveries = new Map<string, SeqIndex>();
  /** How many of those reference each message. */
  private readonly diskRefs = new Map<number, number>();
  /** Highest message id handed to the writer (or on disk at open). */
  private maxDiskMessageId = 0;
  /** Unreferenced messages kept because no higher id is on disk yet. */
  private readonly gcWaiting = new Set<number>();
  /** Messages stored only inline, in the row of this delivery (client id, seq). */
  private readonly inlineOwner = new Map<number, { clientId: string; seq: number }>();
  /** diskDeliveries, diskRefs and inlineOwner hold what is on disk (see ensureMirror). */
  private mirrorReady = false;

  /** commit() calls waiting for the batch being formed. */
  private waiting: Deferred | null = null;
  /** The batch the writer is committing, with its waiters. */
  private inFlight: { id: number; batch: WriteBatch; waiting: Deferred | null } | null = null;
  /** Statements of a failed commit, sent again first. */
  private retry: WriteBatch | null = null;
  /** Participants whose sealed work is not confirmed yet. */
  private unconfirmed: CommitParticipant[] = [];
  private timer: NodeJS.Immediate | NodeJS.Timeout | null = null;
  private currentFault: StoreFault | null = null;
  private closed = false;

  private readonly participants: CommitParticipant[] = [];
  private readonly s;
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
    this.unclean = opened.unclean;
    // Routine in a truck (ignition off, a battery disconnected), but worth a line for a technician
    // counting power cuts; nothing acknowledged is lost by it.
    if (opened.unclean) this.log.info({ file: opts.path }, 'store: the previous run ended without closing the database (a crash or a power cut)');

    const db = this.db;
    try {
      // Messages left unreferenced by a crash between a delete and its garbage collection.
      const maxMessageId = (db.prepare('SELECT coalesce(max(id), 0) FROM messages').pluck().get() as number) ?? 0;
      const swept = db
        .prepare('DELETE FROM messages WHERE id < ? AND id NOT IN (SELECT message_id FROM deliveries)')
        .run(maxMessageId).changes;
      if (swept > 0) this.log.info({ messages: swept }, 'store removed unreferenced messages');
      this.maxDiskMessageId = maxMessageId;
      // The mirror of the deliveries on disk is built by load(), which reads them anyway (one scan
      // of a large store at start instead of two), or by ensureMirror() if a change comes first.
    } catch (err) {
      db.close();
      throw err;
    }

    this.writer = new StoreWriter({
      path: opts.path,
      onDone: (id, failure) => this.onDone(id, failure),
      onFatal: (message) => this.onFatal(message),
    });
    const st = (sql: string): number => this.writer.statement(sql);
    this.s = {
      putSession: st('INSERT OR REPLACE INTO sessions (client_id, expiry_interval, disconnected_at) VALUES (?, ?, ?)'),
      deleteSessionDeliveries: st('DELETE FROM deliveries WHERE client_id = ?'),
      deleteSessionSubscriptions: st('DELETE FROM subscriptions WHERE client_id = ?'),
      deleteSessionQos2: st('DELETE FROM incoming_qos2 WHERE client_id = ?'),
      deleteSession: st('DELETE FROM sessions WHERE client_id = ?'),
      putSubscription: st(
        'INSERT OR REPLACE INTO subscriptions (client_id, filter, qos, no_local, retain_as_published, ' +
          'retain_handling, subscription_id) VALUES (?, ?, ?, ?, ?, ?, ?)',
      ),
      deleteSubscription: st('DELETE FROM subscriptions WHERE client_id = ? AND filter = ?'),
      putMessage: st(
        'INSERT OR REPLACE INTO messages (id, topic, payload, qos, retain, properties, sender, received_at, ' +
          'expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)',
      ),
      deleteMessage: st('DELETE FROM messages WHERE id = ?'),
      putDelivery: st(
        'INSERT OR REPLACE INTO deliveries (client_id, seq, message_id, qos, retain, sub_ids, share_key, ' +
          'state, packet_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)',
      ),
      putDeliveryInline: st(
        'INSERT OR REPLACE INTO deliveries (client_id, seq, message_id, qos, retain, sub_ids, share_key, ' +
          'state, packet_id, m_topic, m_payload, m_qos, m_retain, m_properties, m_sender, m_received_at, m_expires_at) ' +
          'VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
      ),
      updateDelivery: st('UPDATE deliveries SET state = ?, packet_id = ? WHERE client_id = ? AND seq = ?'),
      copyInlineMessage: st(
        'INSERT OR IGNORE INTO messages (id, topic, payload, qos, retain, properties, sender, received_at, expires_at) ' +
          'SELECT message_id, m_topic, m_payload, m_qos, m_retain, m_properties, m_sender, m_received_at, m_expires_at ' +
          'FROM deliveries WHERE client_id = ? AND seq = ? AND m_payload IS NOT NULL',
      ),
      deleteDeliveries: st('DELETE FROM deliveries WHERE client_id = ? AND seq BETWEEN ? AND ?'),
      putQos2: st('INSERT OR IGNORE INTO incoming_qos2 (client_id, packet_id) VALUES (?, ?)'),
      deleteQos2: st('DELETE FROM incoming_qos2 WHERE client_id = ? AND packet_id = ?'),
      putWill: st(
        'INSERT OR REPLACE INTO delayed_wills (client_id, topic, payload, qos, retain, properties, due_at) ' +
          'VALUES (?, ?, ?, ?, ?, ?, ?)',
      ),
      deleteWill: st('DELETE FROM delayed_wills WHERE client_id = ?'),
      putRetained: st(
        'INSERT OR REPLACE INTO retained (topic, payload, qos, retain, properties, sender, received_at, ' +
          'expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)',
      ),
      deleteRetained: st('DELETE FROM retained WHERE topic = ?'),
    };
  }

  /** Registers a statement for participants' batches (see CommitParticipant). */
  statement(sql: string): number {
    return this.writer.statement(sql);
  }

  /** Runs SQL on the writer's connection, in order with the commits (settings such as `PRAGMA query_only`). */
  execOnWriter(sql: string): void {
    this.writer.exec(sql);
  }

  get pending(): boolean {
    return this.batch.length > 0 || this.retry !== null || this.participantsPending();
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

  /** Builds the mirror of the deliveries on disk, unless load() already has. */
  private ensureMirror(): void {
    if (this.mirrorReady) return;
    this.mirrorReady = true;
    for (const r of this.db
      .prepare(
        'SELECT client_id, seq, message_id, m_payload IS NOT NULL AND NOT EXISTS (SELECT 1 FROM messages WHERE id = message_id) ' +
          'FROM deliveries',
      )
      .raw()
      .iterate() as IterableIterator<[string, number, number, number]>) {
      this.diskPut(r[0], r[1], r[2]);
      if (r[3] === 1) this.inlineOwner.set(r[2], { clientId: r[0], seq: r[1] });
    }
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

    // Deliveries and messages are most of a large store: read as raw rows (arrays), about twice
    // as fast as objects in better-sqlite3, so a gateway with a big queue is back sooner.
    const referenced = new Set<number>();
    const inline = new Map<number, StoredMessage>();
    let perClient: StoredSession | undefined;
    // The mirror comes along (ensureMirror's job otherwise): a delivery row carrying its message
    // owns it when the messages table has no row of that id.
    const mirror = !this.mirrorReady;
    this.mirrorReady = true;
    const inlineCandidates = new Map<number, { clientId: string; seq: number }>();
    for (const r of this.db
      .prepare(
        'SELECT client_id, seq, message_id, qos, retain, sub_ids, share_key, state, packet_id, ' +
          'm_topic, m_payload, m_qos, m_retain, m_properties, m_sender, m_received_at, m_expires_at ' +
          'FROM deliveries ORDER BY client_id, seq',
      )
      .raw()
      .iterate() as IterableIterator<DeliveryRow>) {
      const clientId = r[0];
      const messageId = r[2];
      const mPayload = r[10];
      if (mirror) {
        this.diskPut(clientId, r[1], messageId);
        if (mPayload !== null) inlineCandidates.set(messageId, { clientId, seq: r[1] });
      }
      if (perClient?.clientId !== clientId) perClient = sessions.get(clientId);
      if (perClient === undefined) continue;
      if (mPayload !== null && r[9] !== null) {
        inline.set(messageId, storedMessage(r[9], mPayload, r[11], r[12], r[13], r[14], r[15], r[16]));
      }
      const d: StoredDelivery = {
        seq: r[1],
        messageId,
        qos: r[3] as QoS,
        retain: r[4] !== 0,
        state: DELIVERY_STATES[r[7]] ?? 'queued',
        packetId: r[8],
      };
      const subIds = r[5];
      if (subIds !== null) d.subIds = subIds === '' ? [] : subIds.split(',').map(Number);
      if (r[6] !== null) d.shareKey = r[6];
      perClient.deliveries.push(d);
      referenced.add(messageId);
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
    for (const r of this.db
      .prepare('SELECT id, topic, payload, qos, retain, properties, sender, received_at, expires_at FROM messages ORDER BY id')
      .raw()
      .iterate() as IterableIterator<[number, string, Buffer, number, number, string | null, string, number, number]>) {
      inlineCandidates.delete(r[0]);
      if (referenced.has(r[0])) messages.set(r[0], storedMessage(r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8]));
    }
    for (const [id, owner] of inlineCandidates) this.inlineOwner.set(id, owner);
    for (const [id, m] of inline) if (!messages.has(id)) messages.set(id, m);

    const retained: StoredMessage[] = [];
    for (const row of this.db.prepare('SELECT * FROM retained ORDER BY topic').iterate() as IterableIterator<MessageRow>) {
      retained.push(messageFromRow(row));
    }

    let lastMessageId = this.db.prepare('SELECT coalesce(max(id), 0) FROM messages').pluck().get() as number;
    for (const id of messages.keys()) if (id > lastMessageId) lastMessageId = id;
    return { sessions: [...sessions.values()], messages, retained, lastMessageId, unclean: this.unclean };
  }

  // ---- changes: each appends one batch entry ----

  putSession(clientId: string, expiryInterval: number, disconnectedAt: number): void {
    this.add({ op: Op.PutSession, clientId, expiryInterval, disconnectedAt });
  }

  deleteSession(clientId: string): void {
    // Earlier puts for this client stay in the batch (the delete wipes them); later ones must not
    // cancel puts from before the delete, so forget them. Rows of a new session with this id come
    // after the delete in the same transaction: none of its seqs can be on disk.
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
    this.add({ op: Op.PutMessage, id, msg });
  }

  putDelivery(clientId: string, d: StoredDelivery): void {
    let perClient = this.pendingDeliveries.get(clientId);
    if (perClient === undefined) {
      perClient = new Map();
      this.pendingDeliveries.set(clientId, perClient);
    }
    const earlier = perClient.get(d.seq);
    if (earlier !== undefined) this.batch[earlier] = null; // replaced by this put (same message)
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
    this.ensureMirror();
    const perClient = this.pendingDeliveries.get(clientId);
    const earlier = perClient?.get(seq);
    if (earlier !== undefined) {
      this.batch[earlier] = null;
      perClient!.delete(seq);
      // Never handed to the writer: nothing to delete, and no stored reference to count down.
      // (diskDeliveries changes only when a batch is sealed, so this is what the put saw.)
      if (this.diskDeliveries.get(clientId)?.has(seq) !== true) return;
    }
    this.add({ op: Op.DeleteDelivery, clientId, seq });
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
    const dead = this.writer.failure;
    if (dead !== null) return Promise.reject(new StoreError('io_error', `store writer failed: ${dead}`));
    if (!this.pending) {
      // Nothing new, but changes made before this call may be in the batch being committed.
      const f = this.inFlight;
      if (f === null) return Promise.resolve();
      f.waiting ??= deferred();
      return f.waiting.promise;
    }
    this.waiting ??= deferred();
    if (this.inFlight === null && this.timer === null) {
      this.timer = this.commitWindowMs > 0 ? setTimeout(this.onTimer, this.commitWindowMs) : setImmediate(this.onTimer);
    }
    return this.waiting.promise;
  }

  private readonly onTimer = (): void => {
    this.timer = null;
    if (this.inFlight === null) this.send();
  };

  /** Seals the batch (with a failed one's statements first) and hands it to the writer. */
  private send(): void {
    const batch = this.seal();
    const waiting = this.waiting;
    this.waiting = null;
    if (batch.empty) {
      // Only coalesced-away work: durable by definition.
      this.confirm();
      waiting?.resolve();
      return;
    }
    const id = this.writer.commit(batch);
    this.inFlight = { id, batch, waiting };
  }

  private seal(): WriteBatch {
    const batch = this.retry ?? new WriteBatch();
    this.retry = null;
    this.sealEntries(batch);
    for (const p of this.participants) {
      if (!p.hasPending) continue;
      p.seal(batch);
      if (!this.unconfirmed.includes(p)) this.unconfirmed.push(p);
    }
    return batch;
  }

  /** Tells the participants that their sealed work is durable. */
  private confirm(): void {
    const list = this.unconfirmed;
    this.unconfirmed = [];
    for (const p of list) {
      try {
        p.committed();
      } catch (err) {
        this.log.error({ err: err instanceof Error ? err.message : String(err) }, 'store participant failed after commit');
      }
    }
  }

  /** Takes note of a commit the writer has finished without waiting for its message (see StateStore.poll). */
  poll(): void {
    const f = this.inFlight;
    if (f !== null && !this.closed && this.writer.committed(f.id)) this.onDone(f.id, null);
  }

  private onDone(id: number, failure: WriteFailure | null): void {
    const f = this.inFlight;
    if (this.closed || f === null || f.id !== id) return;
    this.inFlight = null;
    if (failure === null) {
      if (this.currentFault !== null) {
        this.log.info({ fault: this.currentFault }, 'store commits succeed again');
        this.currentFault = null;
      }
      f.waiting?.resolve();
      // After resolve(): the participants' callbacks run before the promise's.
      this.confirm();
    } else {
      const fault = classifyStoreError(failure);
      if (this.currentFault !== fault) {
        this.log.error({ fault, err: failure.message }, 'store commit failed: changes kept for retry');
      }
      this.currentFault = fault;
      this.retry = f.batch;
      f.waiting?.reject(new StoreError(fault, `store commit failed (${fault}): ${failure.message}`));
    }
    // What gathered meanwhile goes now: it has waited one commit already.
    if (this.waiting !== null && this.timer === null) this.send();
  }

  private onFatal(message: string): void {
    this.log.error({ err: message }, 'store writer failed: nothing more can be stored');
    this.currentFault = 'io_error';
    const error = new StoreError('io_error', `store writer failed: ${message}`);
    this.inFlight?.waiting?.reject(error);
    this.inFlight = null;
    this.waiting?.reject(error);
    this.waiting = null;
  }

  /** Turns the batch's entries into statements (see the header comment for what is left out). */
  private sealEntries(out: WriteBatch): void {
    this.ensureMirror();
    const entries = this.batch;
    const s = this.s;
    /** Messages that may have lost their last delivery on disk. */
    const gc = new Set<number>();
    // How many deliveries written in this batch reference each message, and the messages put in it.
    const needed = new Map<number, number>();
    const put = new Map<number, StoredMessage>();
    // Delivery deletes wait, per client, to go out as seq ranges (seq-runs.ts), until a put for
    // that client (which must see them done) or the end of the batch; its session's delete makes
    // them unnecessary.
    const deletes = new Map<string, WaitingDeletes>();
    for (let i = 0; i < entries.length; i++) {
      const e = entries[i];
      if (e?.op === Op.PutDelivery) needed.set(e.messageId, (needed.get(e.messageId) ?? 0) + 1);
      else if (e?.op === Op.PutMessage) put.set(e.id, e.msg);
    }
    // Written inline: put in this batch, one delivery to write, none on disk; except the batch's
    // highest id, which gets a row (the highest row is kept: it records the last id given out).
    let top = 0;
    for (const id of needed.keys()) if (put.has(id) && id > top) top = id;
    const inline = new Set<number>();
    for (const [id, n] of needed) if (n === 1 && id !== top && put.has(id) && !this.diskRefs.has(id)) inline.add(id);
    for (let i = 0; i < entries.length; i++) {
      const e = entries[i];
      if (e === null || e === undefined) continue;
      switch (e.op) {
        case Op.PutSession:
          out.run(s.putSession, e.clientId, e.expiryInterval, e.disconnectedAt);
          break;
        case Op.DeleteSession:
          // Its waiting delivery deletes are covered by the session's delete below.
          deletes.delete(e.clientId);
          for (const seq of this.diskDeliveries.get(e.clientId)?.keys() ?? []) this.diskDelete(e.clientId, seq, gc);
          out.run(s.deleteSessionDeliveries, e.clientId);
          out.run(s.deleteSessionSubscriptions, e.clientId);
          out.run(s.deleteSessionQos2, e.clientId);
          out.run(s.deleteWill, e.clientId);
          out.run(s.deleteSession, e.clientId);
          break;
        case Op.PutSubscription: {
          const sub = e.sub;
          out.run(
            s.putSubscription,
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
          out.run(s.deleteSubscription, e.clientId, e.filter);
          break;
        case Op.PutMessage: {
          if (!needed.has(e.id) || inline.has(e.id)) break;
          if (e.id > this.maxDiskMessageId) this.maxDiskMessageId = e.id;
          const m = e.msg;
          out.run(
            s.putMessage,
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
        case Op.PutDelivery: {
          // Only a put inside the waiting deletes' seq span could be caught by a range (new
          // deliveries have higher seqs): the deletes go first then.
          const waiting = deletes.get(e.clientId);
          if (waiting !== undefined && e.seq <= waiting.max) this.flushDeletes(out, deletes, e.clientId);
          this.sealDelivery(out, e, inline.has(e.messageId) ? put.get(e.messageId) : undefined, gc);
          break;
        }
        case Op.DeleteDelivery: {
          const waiting = deletes.get(e.clientId);
          if (waiting === undefined) deletes.set(e.clientId, { seqs: [e.seq], max: e.seq });
          else {
            waiting.seqs.push(e.seq);
            if (e.seq > waiting.max) waiting.max = e.seq;
          }
          this.diskDelete(e.clientId, e.seq, gc);
          break;
        }
        case Op.PutIncomingQos2:
          out.run(s.putQos2, e.clientId, e.packetId);
          break;
        case Op.DeleteIncomingQos2:
          out.run(s.deleteQos2, e.clientId, e.packetId);
          break;
        case Op.PutDelayedWill: {
          const w = e.will;
          out.run(s.putWill, e.clientId, w.topic, w.payload, w.qos, w.retain ? 1 : 0, encodeProperties(w.properties), e.dueAt);
          break;
        }
        case Op.DeleteDelayedWill:
          out.run(s.deleteWill, e.clientId);
          break;
        case Op.PutRetained: {
          const m = e.msg;
          out.run(
            s.putRetained,
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
          out.run(s.deleteRetained, e.topic);
          break;
      }
    }
    for (const clientId of [...deletes.keys()]) this.flushDeletes(out, deletes, clientId);
    // Unreferenced messages go in the same transaction; the highest id on disk waits.
    for (const id of this.gcWaiting) gc.add(id);
    this.gcWaiting.clear();
    for (const id of gc) {
      if ((this.diskRefs.get(id) ?? 0) > 0) continue;
      // Stored only inline: it went with its delivery's row.
      if (this.inlineOwner.delete(id)) continue;
      if (id >= this.maxDiskMessageId) this.gcWaiting.add(id);
      else out.run(s.deleteMessage, id);
    }
    this.batch = [];
    this.pendingDeliveries = new Map();
  }

  /**
   * Writes a client's waiting delivery deletes as seq ranges. A range may span seqs that are not on
   * disk (never written, or deleted before): the mirror says which, since no put for this client
   * came after the deletes. Gaps longer than MAX_DELETE_GAP are not looked through.
   */
  private flushDeletes(out: WriteBatch, deletes: Map<string, WaitingDeletes>, clientId: string): void {
    const seqs = deletes.get(clientId)?.seqs;
    if (seqs === undefined) return;
    deletes.delete(clientId);
    const onDisk = this.diskDeliveries.get(clientId);
    const runs = seqRuns(seqs, (lo, hi) => {
      if (hi - lo > MAX_DELETE_GAP) return false;
      if (onDisk !== undefined) for (let s = lo + 1; s < hi; s++) if (onDisk.has(s)) return false;
      return true;
    });
    for (let i = 0; i < runs.length; i += 2) out.run(this.s.deleteDeliveries, clientId, runs[i], runs[i + 1]);
  }

  /** One delivery put: an UPDATE when its row is on disk, else a row (with the message inline). */
  private sealDelivery(out: WriteBatch, e: DeliveryEntry, inlineMessage: StoredMessage | undefined, gc: Set<number>): void {
    const s = this.s;
    if (this.diskDeliveries.get(e.clientId)?.get(e.seq) === e.messageId) {
      out.run(s.updateDelivery, STATE_CODE[e.state], e.packetId, e.clientId, e.seq);
      return;
    }
    const subIds = e.subIds === undefined ? null : e.subIds.join(',');
    if (inlineMessage !== undefined) {
      const m = inlineMessage;
      out.run(
        s.putDeliveryInline, e.clientId, e.seq, e.messageId, e.qos, e.retain ? 1 : 0, subIds, e.shareKey ?? null,
        STATE_CODE[e.state], e.packetId,
        m.topic, m.payload, m.qos, m.retain ? 1 : 0, encodeProperties(m.properties), m.senderId, m.receivedAt, m.expiresAt,
      );
      this.inlineOwner.set(e.messageId, { clientId: e.clientId, seq: e.seq });
    } else {
      // A message stored only inline in another delivery's row gets its own row first.
      const owner = this.inlineOwner.get(e.messageId);
      if (owner !== undefined) {
        out.run(s.copyInlineMessage, owner.clientId, owner.seq);
        this.inlineOwner.delete(e.messageId);
        if (e.messageId > this.maxDiskMessageId) this.maxDiskMessageId = e.messageId;
      }
      out.run(s.putDelivery, e.clientId, e.seq, e.messageId, e.qos, e.retain ? 1 : 0, subIds, e.shareKey ?? null, STATE_CODE[e.state], e.packetId);
    }
    this.diskPut(e.clientId, e.seq, e.messageId, gc);
  }

  /** Mirrors a delivery row handed to the writer (see the header comment). */
  private diskPut(clientId: string, seq: number, messageId: number, gc?: Set<number>): void {
    let perClient = this.diskDeliveries.get(clientId);
    if (perClient === undefined) {
      perClient = new SeqIndex();
      this.diskDeliveries.set(clientId, perClient);
    }
    const before = perClient.set(seq, messageId);
    if (before === messageId) return;
    if (before !== undefined) this.unref(before, gc);
    this.diskRefs.set(messageId, (this.diskRefs.get(messageId) ?? 0) + 1);
  }

  private diskDelete(clientId: string, seq: number, gc: Set<number>): void {
    const perClient = this.diskDeliveries.get(clientId);
    const messageId = perClient?.delete(seq);
    if (perClient === undefined || messageId === undefined) return;
    if (perClient.size === 0) this.diskDeliveries.delete(clientId);
    this.unref(messageId, gc);
  }

  private unref(messageId: number, gc: Set<number> | undefined): void {
    const n = (this.diskRefs.get(messageId) ?? 0) - 1;
    if (n > 0) {
      this.diskRefs.set(messageId, n);
      return;
    }
    this.diskRefs.delete(messageId);
    gc?.add(messageId);
  }

  /** Commits what is pending (synchronously: waits for the writer), then closes the database. */
  close(): void {
    if (this.closed) return;
    if (this.timer !== null) {
      clearTimeout(this.timer as NodeJS.Timeout);
      clearImmediate(this.timer as NodeJS.Immediate);
      this.timer = null;
    }
    const inFlight = this.inFlight;
    const last = this.seal();
    const waiting = this.waiting;
    this.waiting = null;
    this.inFlight = null;
    this.closed = true;
    const failure = this.writer.close(last);
    if (failure === null) {
      inFlight?.waiting?.resolve();
      waiting?.resolve();
      this.confirm();
    } else {
      this.log.error({ err: failure }, 'store closed with uncommitted changes');
      const error = new StoreError('io_error', `store closed with uncommitted changes: ${failure}`);
      inFlight?.waiting?.reject(error);
      waiting?.reject(error);
    }
    this.db.close();
  }
}

// ---- encodings ----

/**
 * A properties object (ours or MQTT.js's) as JSON; Buffers (correlation data, authentication
 * data) as {"$b": base64}.
 */
export function encodePropertiesJson(p: object | undefined): string | null {
  if (p === undefined) return null;
  return JSON.stringify(p, function (this: Record<string, unknown>, key: string, value: unknown) {
    const raw = this[key];
    return Buffer.isBuffer(raw) ? { $b: raw.toString('base64') } : value;
  });
}

/** The inverse of encodePropertiesJson. */
export function decodePropertiesJson<T extends object>(json: string): T {
  return JSON.parse(json, (_key: string, value: unknown) => {
    if (value !== null && typeof value === 'object' && !Array.isArray(value)) {
      const b = (value as { $b?: unknown }).$b;
      if (typeof b === 'string' && Object.keys(value).length === 1) return Buffer.from(b, 'base64');
    }
    return value;
  }) as T;
}

export function encodeProperties(p: Properties | undefined): string | null {
  return encodePropertiesJson(p);
}

export function decodeProperties(json: string): Properties {
  return decodePropertiesJson<Properties>(json);
}

/** A row of deliveries as load() reads it (raw): the delivery, then its inline message (m_*) or NULLs. */
type DeliveryRow = [
  clientId: string, seq: number, messageId: number, qos: number, retain: number, subIds: string | null,
  shareKey: string | null, state: number, packetId: number,
  mTopic: string | null, mPayload: Buffer | null, mQos: number, mRetain: number, mProperties: string | null,
  mSender: string, mReceivedAt: number, mExpiresAt: number,
];

function storedMessage(
  topic: string, payload: Buffer, qos: number, retain: number, properties: string | null, sender: string, receivedAt: number, expiresAt: number,
): StoredMessage {
  const msg: StoredMessage = { topic, payload, qos: qos as QoS, retain: retain !== 0, senderId: sender, receivedAt, expiresAt };
  if (properties !== null) msg.properties = decodeProperties(properties);
  return msg;
}

function messageFromRow(row: MessageRow): StoredMessage {
  return storedMessage(row.topic, row.payload, row.qos, row.retain, row.properties, row.sender, row.received_at, row.expires_at);
}
