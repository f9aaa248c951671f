// The uplink's durable incoming QoS 2 store (bridge/incoming-qos2.ts): QoS 2 orders from HQ held
// in table uplink_incoming_qos2 of convoy.db between PUBREC and local delivery, so that a crash or
// power cut in that window cannot lose them (HQ, having had PUBREC, only sends PUBREL).
//
// - put: the row is written in the state store's next grouped commit (a CommitParticipant, like
//   the outbox), and put calls back only after that commit: PUBREC goes to HQ once the order is
//   durable. get serves from memory (loaded from the table at open).
// - release (the order was published locally in this event-loop turn): the row's DELETE is sealed
//   into the same batch as the broker's changes for that delivery, so both are durable or neither
//   is. A crash before that commit leaves the row, and HQ's PUBREL after the restart delivers it.
// - del (MQTT.js, after the message was handled without being delivered, e.g. no route): the row
//   goes with the next commit.
// - clear (HQ has no session for us): every row of the session goes.
// Rows belong to one HQ session, keyed by the uplink's client id; rows of another client id (the
// configuration changed) can never be completed and are deleted at open.
import type { IPublishPacket } from 'mqtt';
import { MemoryIncomingQos2Store, type StoreDone, type StorePacket } from '../bridge/incoming-qos2.js';
import type { StoreLog } from './db.js';
import { decodePropertiesJson, encodePropertiesJson, type CommitParticipant, type SqliteStateStore, type WriteBatch } from './sqlite-state-store.js';

type PublishProperties = NonNullable<IPublishPacket['properties']>;

interface PutOp {
  kind: 'put';
  packet: IPublishPacket;
  /** put callbacks answered when this op's commit settles (a later put of the id takes them over). */
  waiters: StoreDone[];
  committed: boolean;
}

type PendingOp = PutOp | { kind: 'delete' };

interface Row {
  packet_id: number;
  topic: string;
  payload: Buffer;
  qos: number;
  retain: number;
  properties: string | null;
}

export interface SqliteIncomingQos2StoreOptions {
  state: SqliteStateStore;
  /** The uplink's client id at HQ: the session the rows belong to. */
  clientId: string;
  log: StoreLog;
}

export class SqliteIncomingQos2Store extends MemoryIncomingQos2Store implements CommitParticipant {
  override readonly durable = true;
  private readonly state: SqliteStateStore;
  private readonly clientId: string;
  /** Changes not sealed yet, by packet id (the latest change of an id is the one that counts). */
  private pending = new Map<number, PendingOp>();
  /** Delete every row of the session first (sealed before `pending`, which came after it). */
  private clearPending = false;
  /** Puts sealed into a commit not confirmed yet (kept across a failed commit, which is retried). */
  private sealed: PutOp[] = [];
  /** A one-off delete of other client ids' rows (its statement), sealed with the next batch. */
  private deleteForeign: number | null = null;
  private readonly s: { upsert: number; delete: number; deleteAll: number };

  constructor(opts: SqliteIncomingQos2StoreOptions) {
    super();
    this.state = opts.state;
    this.clientId = opts.clientId;
    const db = opts.state.db;
    const rows = db
      .prepare('SELECT packet_id, topic, payload, qos, retain, properties FROM uplink_incoming_qos2 WHERE client_id = ? ORDER BY packet_id')
      .all(this.clientId) as Row[];
    for (const r of rows) {
      const packet: IPublishPacket = {
        cmd: 'publish', messageId: r.packet_id, topic: r.topic, payload: r.payload, qos: 2, dup: false, retain: r.retain !== 0,
      };
      if (r.properties !== null) packet.properties = decodePropertiesJson<PublishProperties>(r.properties);
      this.held.set(r.packet_id, packet);
    }
    const foreign = db.prepare('SELECT count(*) FROM uplink_incoming_qos2 WHERE client_id <> ?').pluck().get(this.clientId) as number;
    this.s = {
      upsert: opts.state.statement(
        'INSERT OR REPLACE INTO uplink_incoming_qos2 (client_id, packet_id, topic, payload, qos, retain, properties, received_at) ' +
          'VALUES (?, ?, ?, ?, ?, ?, ?, ?)',
      ),
      delete: opts.state.statement('DELETE FROM uplink_incoming_qos2 WHERE client_id = ? AND packet_id = ?'),
      deleteAll: opts.state.statement('DELETE FROM uplink_incoming_qos2 WHERE client_id = ?'),
    };
    // Attached for the store's lifetime: the gateway closes the state store, which commits what is pending.
    opts.state.attachParticipant(this);
    if (rows.length > 0) opts.log.info({ orders: rows.length, clientId: this.clientId }, 'uplink: QoS 2 orders from HQ wait for their PUBREL');
    if (foreign > 0) {
      // Held for an HQ session we no longer use (the uplink client id changed): never completed.
      opts.log.warn({ orders: foreign, clientId: this.clientId }, 'uplink: dropping QoS 2 orders held for another HQ client id');
      this.deleteForeign = opts.state.statement('DELETE FROM uplink_incoming_qos2 WHERE client_id <> ?');
      this.kick();
    }
  }

  override put(packet: StorePacket, cb: StoreDone): this {
    if (packet.cmd !== 'publish' || packet.messageId === undefined) return super.put(packet, cb);
    const id = packet.messageId;
    this.held.set(id, packet);
    const op: PutOp = { kind: 'put', packet, waiters: [cb], committed: false };
    const before = this.pending.get(id);
    if (before?.kind === 'put') op.waiters.unshift(...before.waiters.splice(0));
    this.pending.set(id, op);
    this.state.commit().then(
      () => this.settle(op, op.committed ? undefined : new Error(`incoming QoS 2 store: packet id ${id} was not committed (store closing?)`)),
      (err: unknown) => this.settle(op, err instanceof Error ? err : new Error(String(err))),
    );
    return this;
  }

  private settle(op: PutOp, err: Error | undefined): void {
    for (const cb of op.waiters.splice(0)) cb(err);
  }

  override release(messageId: number): void {
    if (!this.held.delete(messageId)) return;
    this.changed(messageId, { kind: 'delete' });
  }

  override clear(): void {
    this.held.clear();
    const dropped = new Error('incoming QoS 2 store: cleared (HQ has no session for us) before the order was committed');
    for (const op of this.pending.values()) if (op.kind === 'put') this.settle(op, dropped);
    this.pending = new Map();
    this.clearPending = true;
    this.kick();
  }

  private changed(messageId: number, op: PendingOp): void {
    const before = this.pending.get(messageId);
    if (before?.kind === 'put') this.settle(before, new Error(`incoming QoS 2 store: packet id ${messageId} was released before its commit`));
    this.pending.set(messageId, op);
    this.kick();
  }

  /** Commits soon; what waits for it is told by put's callbacks or the broker's own commit. */
  private kick(): void {
    this.state.commit().catch(() => undefined); // the state store logs a failed commit itself
  }

  // ---- the participant ----

  get hasPending(): boolean {
    return this.pending.size > 0 || this.clearPending || this.deleteForeign !== null;
  }

  seal(batch: WriteBatch): void {
    if (this.deleteForeign !== null) batch.run(this.deleteForeign, this.clientId);
    this.deleteForeign = null;
    if (this.clearPending) batch.run(this.s.deleteAll, this.clientId);
    this.clearPending = false;
    const now = Date.now();
    for (const [id, op] of this.pending) {
      if (op.kind === 'delete') {
        batch.run(this.s.delete, this.clientId, id);
        continue;
      }
      const p = op.packet;
      batch.run(
        this.s.upsert, this.clientId, id, p.topic, typeof p.payload === 'string' ? Buffer.from(p.payload) : p.payload, p.qos, p.retain ? 1 : 0,
        encodePropertiesJson(p.properties), now,
      );
      this.sealed.push(op);
    }
    this.pending = new Map();
  }

  committed(): void {
    for (const op of this.sealed) op.committed = true;
    this.sealed = [];
  }
}
