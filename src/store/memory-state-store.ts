// The state store without durability: the default for tests and for a gateway without a data
// directory. It applies every change at once, so load() on the same instance returns what was put;
// commit() resolves immediately. It copies what it is given (the broker may reuse or mutate its own
// objects after a put), so load() reflects the state at the time of each put, as the SQLite store does.
import type { Will } from '../mqtt/packets.js';
import type { CommitParticipant } from './sqlite-state-store.js';
import { WriteBatch } from './writer.js';
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

interface MemorySession {
  /** putSession was called: as in SQLite, changes for a client without a session row are kept but not loaded. */
  stored: boolean;
  expiryInterval: number;
  disconnectedAt: number;
  subscriptions: Map<string, StoredSubscription>;
  deliveries: Map<number, StoredDelivery>;
  incomingQos2: Set<number>;
  delayedWill?: { will: Will; dueAt: number };
}

export class MemoryStateStore implements StateStore {
  private readonly sessions = new Map<string, MemorySession>();
  private readonly messages = new Map<number, StoredMessage>();
  /** How many deliveries reference each message. */
  private readonly refs = new Map<number, number>();
  /** Messages whose last delivery went away: deleted at the next commit, as the SQLite store does. */
  private readonly unreferenced = new Set<number>();
  private readonly retained = new Map<string, StoredMessage>();
  private lastMessageId = 0;
  private dirty = false;
  private readonly participants: CommitParticipant[] = [];

  get pending(): boolean {
    if (this.dirty) return true;
    for (const p of this.participants) if (p.hasPending) return true;
    return false;
  }

  /** As SqliteStateStore.attachParticipant: pending work is applied and committed at commit(). */
  attachParticipant(p: CommitParticipant): () => void {
    if (!this.participants.includes(p)) this.participants.push(p);
    return () => {
      const i = this.participants.indexOf(p);
      if (i >= 0) this.participants.splice(i, 1);
    };
  }

  get fault(): StoreFault | null {
    return null;
  }

  load(): StoredState {
    const sessions: StoredSession[] = [];
    const messages = new Map<number, StoredMessage>();
    for (const [clientId, s] of this.sessions) {
      if (!s.stored) continue;
      const deliveries = [...s.deliveries.values()].sort((a, b) => a.seq - b.seq).map(copyDelivery);
      for (const d of deliveries) {
        const msg = this.messages.get(d.messageId);
        if (msg !== undefined) messages.set(d.messageId, copyMessage(msg));
      }
      const session: StoredSession = {
        clientId,
        expiryInterval: s.expiryInterval,
        disconnectedAt: s.disconnectedAt,
        subscriptions: [...s.subscriptions.values()].map((sub) => ({ ...sub })),
        deliveries,
        incomingQos2: [...s.incomingQos2].sort((a, b) => a - b),
      };
      if (s.delayedWill !== undefined) session.delayedWill = { will: copyWill(s.delayedWill.will), dueAt: s.delayedWill.dueAt };
      sessions.push(session);
    }
    return {
      sessions,
      messages,
      retained: [...this.retained.values()].map(copyMessage),
      lastMessageId: this.lastMessageId,
      unclean: false,
    };
  }

  private session(clientId: string): MemorySession {
    let s = this.sessions.get(clientId);
    if (s === undefined) {
      s = {
        stored: false,
        expiryInterval: 0,
        disconnectedAt: 0,
        subscriptions: new Map(),
        deliveries: new Map(),
        incomingQos2: new Set(),
      };
      this.sessions.set(clientId, s);
    }
    return s;
  }

  putSession(clientId: string, expiryInterval: number, disconnectedAt: number): void {
    const s = this.session(clientId);
    s.stored = true;
    s.expiryInterval = expiryInterval;
    s.disconnectedAt = disconnectedAt;
    this.dirty = true;
  }

  deleteSession(clientId: string): void {
    const s = this.sessions.get(clientId);
    if (s !== undefined) {
      for (const d of s.deliveries.values()) this.unref(d.messageId);
      this.sessions.delete(clientId);
    }
    this.dirty = true;
  }

  putSubscription(clientId: string, sub: StoredSubscription): void {
    this.session(clientId).subscriptions.set(sub.filter, { ...sub });
    this.dirty = true;
  }

  deleteSubscription(clientId: string, filter: string): void {
    this.sessions.get(clientId)?.subscriptions.delete(filter);
    this.dirty = true;
  }

  putMessage(id: number, msg: StoredMessage): void {
    this.messages.set(id, copyMessage(msg));
    if (id > this.lastMessageId) this.lastMessageId = id;
    this.dirty = true;
  }

  putDelivery(clientId: string, d: StoredDelivery): void {
    const deliveries = this.session(clientId).deliveries;
    const old = deliveries.get(d.seq);
    deliveries.set(d.seq, copyDelivery(d));
    this.refs.set(d.messageId, (this.refs.get(d.messageId) ?? 0) + 1);
    this.unreferenced.delete(d.messageId);
    if (old !== undefined) this.unref(old.messageId);
    this.dirty = true;
  }

  deleteDelivery(clientId: string, seq: number): void {
    const deliveries = this.sessions.get(clientId)?.deliveries;
    const old = deliveries?.get(seq);
    if (old !== undefined) {
      deliveries?.delete(seq);
      this.unref(old.messageId);
    }
    this.dirty = true;
  }

  private unref(messageId: number): void {
    const n = (this.refs.get(messageId) ?? 0) - 1;
    if (n > 0) {
      this.refs.set(messageId, n);
    } else {
      this.refs.delete(messageId);
      this.unreferenced.add(messageId);
    }
  }

  putIncomingQos2(clientId: string, packetId: number): void {
    this.session(clientId).incomingQos2.add(packetId);
    this.dirty = true;
  }

  deleteIncomingQos2(clientId: string, packetId: number): void {
    this.sessions.get(clientId)?.incomingQos2.delete(packetId);
    this.dirty = true;
  }

  putDelayedWill(clientId: string, will: Will, dueAt: number): void {
    this.session(clientId).delayedWill = { will: copyWill(will), dueAt };
    this.dirty = true;
  }

  deleteDelayedWill(clientId: string): void {
    const s = this.sessions.get(clientId);
    if (s !== undefined) delete s.delayedWill;
    this.dirty = true;
  }

  putRetained(msg: StoredMessage): void {
    this.retained.set(msg.topic, copyMessage(msg));
    this.dirty = true;
  }

  deleteRetained(topic: string): void {
    this.retained.delete(topic);
    this.dirty = true;
  }

  commit(): Promise<void> {
    for (const id of this.unreferenced) {
      if (!this.refs.has(id)) this.messages.delete(id);
    }
    this.unreferenced.clear();
    this.dirty = false;
    for (const p of this.participants.filter((q) => q.hasPending)) {
      try {
        // Nothing reads the batch: in memory, sealing and committing are one step.
        p.seal(new WriteBatch());
      } catch (err) {
        // Its work stays pending for the next commit(), as with the SQLite store.
        return Promise.reject(new StoreError('io_error', `store commit failed: ${err instanceof Error ? err.message : String(err)}`));
      }
      p.committed();
    }
    return Promise.resolve();
  }

  close(): void {
    // Nothing to release.
  }
}

function copyMessage(m: StoredMessage): StoredMessage {
  const copy: StoredMessage = { ...m };
  if (m.properties !== undefined) copy.properties = copyProperties(m.properties);
  return copy;
}

function copyWill(w: Will): Will {
  const copy: Will = { ...w };
  if (w.properties !== undefined) copy.properties = copyProperties(w.properties);
  return copy;
}

function copyProperties<T extends object>(p: T): T {
  const copy = { ...p } as Record<string, unknown>;
  for (const [key, value] of Object.entries(copy)) {
    if (Array.isArray(value)) copy[key] = value.map((v: unknown) => (Array.isArray(v) ? [...(v as unknown[])] : v));
  }
  return copy as T;
}

function copyDelivery(d: StoredDelivery): StoredDelivery {
  const copy: StoredDelivery = { ...d };
  if (d.subIds !== undefined) copy.subIds = [...d.subIds];
  return copy;
}
