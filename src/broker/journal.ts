// The broker's side of durability: turns broker objects into StateStore records, assigns message
// ids, and remembers whether anything was written since the broker last asked (so a PUBLISH
// knows that its acknowledgement must wait for the commit).
import type { Subscription } from './subscriptions.js';
import type { Delivery } from './session.js';
import type { Message } from './message.js';
import type { StateStore, StoredMessage, StoredSubscription } from '../store/state-store.js';
import type { Will } from '../mqtt/packets.js';

export function toStoredMessage(m: Message): StoredMessage {
  const s: StoredMessage = {
    topic: m.topic,
    payload: m.payloadBuf.subarray(m.payloadStart, m.payloadEnd),
    qos: m.qos,
    retain: m.retain,
    senderId: m.senderId,
    receivedAt: m.receivedAt,
    expiresAt: m.expiresAt,
  };
  if (m.properties) s.properties = m.properties;
  return s;
}

export function toStoredSubscription(sub: Subscription): StoredSubscription {
  const s: StoredSubscription = {
    filter: sub.filter, qos: sub.qos, noLocal: sub.noLocal, retainAsPublished: sub.retainAsPublished, retainHandling: sub.retainHandling,
  };
  if (sub.subscriptionId !== undefined) s.subscriptionId = sub.subscriptionId;
  return s;
}

export class Journal {
  /** Set by every write; the publish path resets and reads it. */
  wrote = false;

  constructor(readonly store: StateStore, private lastMessageId: number) {}

  private messageId(m: Message): number {
    if (m.storeId === 0) {
      m.storeId = ++this.lastMessageId;
      this.store.putMessage(m.storeId, toStoredMessage(m));
    }
    return m.storeId;
  }

  putSession(clientId: string, expiryInterval: number, disconnectedAt: number): void {
    this.wrote = true;
    this.store.putSession(clientId, expiryInterval, disconnectedAt);
  }

  deleteSession(clientId: string): void {
    this.wrote = true;
    this.store.deleteSession(clientId);
  }

  putSubscription(clientId: string, sub: Subscription): void {
    this.wrote = true;
    this.store.putSubscription(clientId, toStoredSubscription(sub));
  }

  deleteSubscription(clientId: string, filter: string): void {
    this.wrote = true;
    this.store.deleteSubscription(clientId, filter);
  }

  putDelivery(clientId: string, d: Delivery, state: 'queued' | 'publish' | 'pubrel', packetId: number): void {
    this.wrote = true;
    const rec = { seq: d.seq, messageId: this.messageId(d.msg), qos: d.qos, retain: d.retain, state, packetId } as Parameters<StateStore['putDelivery']>[1];
    if (d.subIds) rec.subIds = d.subIds;
    if (d.shareKey !== undefined) rec.shareKey = d.shareKey;
    this.store.putDelivery(clientId, rec);
  }

  deleteDelivery(clientId: string, seq: number): void {
    this.wrote = true;
    this.store.deleteDelivery(clientId, seq);
  }

  putIncomingQos2(clientId: string, packetId: number): void {
    this.wrote = true;
    this.store.putIncomingQos2(clientId, packetId);
  }

  deleteIncomingQos2(clientId: string, packetId: number): void {
    this.wrote = true;
    this.store.deleteIncomingQos2(clientId, packetId);
  }

  putDelayedWill(clientId: string, will: Will, dueAt: number): void {
    this.wrote = true;
    this.store.putDelayedWill(clientId, will, dueAt);
  }

  deleteDelayedWill(clientId: string): void {
    this.wrote = true;
    this.store.deleteDelayedWill(clientId);
  }

  putRetained(m: Message): void {
    this.wrote = true;
    this.store.putRetained(toStoredMessage(m));
  }

  deleteRetained(topic: string): void {
    this.wrote = true;
    this.store.deleteRetained(topic);
  }
}
