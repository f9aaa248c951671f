// One client's session: subscriptions, the outgoing in-flight window, the queue of messages
// waiting for the window or for the client to come back, and received QoS 2 ids awaiting PUBREL.
// It outlives connections when the session is persistent.
import type { Metrics } from '../diagnostics/metrics.js';
import type { QoS, Will } from '../mqtt/packets.js';
import type { Subscription } from './subscriptions.js';
import { payloadLength, type Message } from './message.js';
import type { Journal } from './journal.js';

/** Where a session sends packets: implemented by Connection. */
export interface SessionLink {
  /** True when QoS 0 may be written now (the outbound buffer is under its limit). */
  readonly writable: boolean;
  /** Writes a PUBLISH (QoS and retain flag as delivered). Returns false if it was not sent (too large). */
  sendPublish(msg: Message, qos: QoS, retain: boolean, dup: boolean, packetId: number, subIds: number[] | undefined): boolean;
  /** Writes PUBREL for an outgoing QoS 2 message (on resume). */
  sendPubrel(packetId: number): void;
  /** Maximum unacknowledged QoS 1/2 messages towards this client. */
  readonly sendWindow: number;
}

/** A message on its way to this session's client. */
export interface Delivery {
  msg: Message;
  qos: QoS;
  retain: boolean;
  subIds: number[] | undefined;
  /** Set when delivered through a shared subscription: the group key, for re-sending elsewhere. */
  shareKey: string | undefined;
  /** Order within the session in the durable store; 0 while not stored. */
  seq: number;
  /**
   * Restored after a crash as not sent yet, but the crashed process may have sent it: its first
   * send carries DUP (see StoredState.unclean).
   */
  maybeSent?: boolean;
}

export interface Inflight extends Delivery {
  /** 'publish' until PUBACK/PUBREC; 'pubrel' after PUBREC, until PUBCOMP. */
  state: 'publish' | 'pubrel';
}

export interface SessionLimits {
  maxQueuedMessages: number; // 0 = unlimited
  maxQueuedBytes: number; // 0 = unlimited
}

export class Session {
  readonly clientId: string;
  link: SessionLink | null = null;
  /** Filter → subscription, in subscribe order. */
  readonly subscriptions = new Map<string, Subscription>();
  /** Outgoing QoS 1/2 messages not yet fully acknowledged, in send order. */
  readonly inflight = new Map<number, Inflight>();
  /** Messages waiting for the window or for the client; a FIFO with a moving head. */
  private queue: Delivery[] = [];
  private queueHead = 0;
  queuedBytes = 0;
  /** QoS 2 packet ids received and PUBREC'd, awaiting PUBREL [MQTT-4.3.3-2]. */
  readonly incomingQos2 = new Set<number>();
  private nextId = 1;
  /** Session expiry in seconds after disconnect; 0 ends it with the connection (3.1.1 clean session). */
  expiryInterval = 0;
  /** Date.now() of the last disconnect, or 0 while connected. */
  disconnectedAt = 0;
  will: Will | undefined;
  /** User name of the client's last login, for ACL checks while it is away too. */
  username: string | undefined;
  /** Set while the session is persistent and the broker has a durable store. */
  journal: Journal | null = null;
  /** Last delivery sequence number given out (durable order). */
  nextSeq = 0;

  constructor(clientId: string, private readonly limits: SessionLimits, private readonly metrics: Metrics) {
    this.clientId = clientId;
  }

  get queuedCount(): number {
    return this.queue.length - this.queueHead;
  }

  /** Persistent: kept after its connection closes. */
  get persistent(): boolean {
    return this.expiryInterval > 0;
  }

  private allocatePacketId(): number {
    // Skips ids still in flight; the window is far below 65535, so this ends quickly.
    for (;;) {
      const id = this.nextId;
      this.nextId = id === 65535 ? 1 : id + 1;
      if (!this.inflight.has(id)) return id;
    }
  }

  /** Hands a message to this session: sent now, queued, or dropped and counted. */
  deliver(msg: Message, qos: QoS, retain: boolean, subIds: number[] | undefined, shareKey?: string): void {
    const link = this.link;
    if (qos === 0) {
      if (!link) return this.metrics.drop('offline_qos0');
      if (!link.writable) return this.metrics.drop('slow_subscriber');
      link.sendPublish(msg, 0, retain, false, 0, subIds);
      return;
    }
    if (link && this.queueHead === this.queue.length && this.inflight.size < link.sendWindow && link.writable) {
      this.sendNew({ msg, qos, retain, subIds, shareKey, seq: 0 }, link);
      return;
    }
    this.enqueue({ msg, qos, retain, subIds, shareKey, seq: 0 });
  }

  private enqueue(d: Delivery): void {
    const size = payloadLength(d.msg) + d.msg.topicLength;
    const { maxQueuedMessages, maxQueuedBytes } = this.limits;
    if ((maxQueuedMessages > 0 && this.queuedCount >= maxQueuedMessages) ||
        (maxQueuedBytes > 0 && this.queuedBytes + size > maxQueuedBytes)) {
      this.metrics.drop('queue_full');
      return;
    }
    this.queue.push(d);
    this.queuedBytes += size;
    if (this.journal) {
      d.seq = ++this.nextSeq;
      this.journal.putDelivery(this.clientId, d, 'queued', 0);
    }
  }

  private sendNew(d: Delivery, link: SessionLink): void {
    const id = this.allocatePacketId();
    if (link.sendPublish(d.msg, d.qos, d.retain, d.maybeSent === true, id, d.subIds)) {
      const f: Inflight = { msg: d.msg, qos: d.qos, retain: d.retain, subIds: d.subIds, shareKey: d.shareKey, seq: d.seq, state: 'publish' };
      this.inflight.set(id, f);
      if (this.journal) {
        if (f.seq === 0) f.seq = ++this.nextSeq;
        this.journal.putDelivery(this.clientId, f, 'publish', id);
      }
    } else if (d.seq !== 0) {
      this.journal?.deleteDelivery(this.clientId, d.seq);
    }
  }

  /** Removes queued (not yet sent) deliveries matching `drop`; returns how many. */
  dropQueued(drop: (d: Delivery) => boolean): number {
    let n = 0;
    const kept: Delivery[] = [];
    for (let i = this.queueHead; i < this.queue.length; i++) {
      const d = this.queue[i]!;
      if (!drop(d)) {
        kept.push(d);
        continue;
      }
      n++;
      this.queuedBytes -= payloadLength(d.msg) + d.msg.topicLength;
      if (d.seq !== 0) this.journal?.deleteDelivery(this.clientId, d.seq);
    }
    if (n > 0) {
      this.queue = kept;
      this.queueHead = 0;
    }
    return n;
  }

  /** Moves queued messages into the window while the link has room. */
  pump(): void {
    const link = this.link;
    if (!link) return;
    const now = Date.now();
    while (this.queueHead < this.queue.length && this.inflight.size < link.sendWindow && link.writable) {
      const d = this.queue[this.queueHead]!;
      this.queue[this.queueHead++] = undefined as unknown as Delivery; // let it be collected
      this.queuedBytes -= payloadLength(d.msg) + d.msg.topicLength;
      if (d.msg.expiresAt !== 0 && d.msg.expiresAt <= now) {
        this.metrics.drop('expired');
        if (d.seq !== 0) this.journal?.deleteDelivery(this.clientId, d.seq);
        continue;
      }
      this.sendNew(d, link);
    }
    if (this.queueHead === this.queue.length) {
      this.queue = [];
      this.queueHead = 0;
    } else if (this.queueHead > 1024 && this.queueHead * 2 > this.queue.length) {
      this.queue = this.queue.slice(this.queueHead);
      this.queueHead = 0;
    }
  }

  addSubscription(sub: Subscription): void {
    this.subscriptions.set(sub.filter, sub);
    this.journal?.putSubscription(this.clientId, sub);
  }

  removeSubscription(filter: string): boolean {
    if (!this.subscriptions.delete(filter)) return false;
    this.journal?.deleteSubscription(this.clientId, filter);
    return true;
  }

  /** A QoS 2 message was received and will be PUBREC'd; its id is now in use [MQTT-4.3.3-2]. */
  addIncomingQos2(packetId: number): void {
    this.incomingQos2.add(packetId);
    this.journal?.putIncomingQos2(this.clientId, packetId);
  }

  removeIncomingQos2(packetId: number): boolean {
    if (!this.incomingQos2.delete(packetId)) return false;
    this.journal?.deleteIncomingQos2(this.clientId, packetId);
    return true;
  }

  /** Rebuilds state from the durable store at start (deliveries in seq order). */
  restoreDelivery(d: Delivery, state: 'queued' | 'publish' | 'pubrel', packetId: number): void {
    if (d.seq > this.nextSeq) this.nextSeq = d.seq;
    if (state === 'queued') {
      this.queue.push(d);
      this.queuedBytes += payloadLength(d.msg) + d.msg.topicLength;
    } else {
      this.inflight.set(packetId, { ...d, state });
    }
  }

  /** PUBACK (QoS 1) or PUBCOMP (QoS 2) for an outgoing message. False if it was not in flight. */
  complete(packetId: number, expect: 'publish' | 'pubrel', qos: QoS): boolean {
    const f = this.inflight.get(packetId);
    if (!f || f.state !== expect || f.qos !== qos) return false;
    this.inflight.delete(packetId);
    if (f.seq !== 0) this.journal?.deleteDelivery(this.clientId, f.seq);
    return true;
  }

  /** PUBREC for an outgoing QoS 2 message: the message is now owned by the client. */
  received(packetId: number): boolean {
    const f = this.inflight.get(packetId);
    if (!f || f.qos !== 2 || f.state !== 'publish') return false;
    f.state = 'pubrel';
    if (f.seq !== 0) this.journal?.putDelivery(this.clientId, f, 'pubrel', packetId);
    return true;
  }

  /**
   * On reconnect: resend in-flight messages in their original order, PUBLISH with DUP or PUBREL
   * ([MQTT-4.4.0-1]), then continue with the queue.
   */
  resume(): void {
    const link = this.link;
    if (!link) return;
    for (const [id, f] of this.inflight) {
      if (f.state === 'pubrel') link.sendPubrel(id);
      else link.sendPublish(f.msg, f.qos, f.retain, true, id, f.subIds);
    }
    this.pump();
  }

  /**
   * Session end: empties the queue and the window. Messages that came through a shared
   * subscription and were not yet received by the client are returned, to be sent to another
   * member of their group [MQTT-4.8.2-?]; everything else is counted as lost.
   */
  takeUndelivered(): Delivery[] {
    const shared: Delivery[] = [];
    let lost = 0;
    for (let i = this.queueHead; i < this.queue.length; i++) {
      const d = this.queue[i]!;
      if (d.shareKey !== undefined) shared.push(d);
      else lost++;
    }
    for (const f of this.inflight.values()) {
      if (f.shareKey !== undefined && f.state === 'publish') shared.push(f);
      else lost++;
    }
    if (lost > 0) this.metrics.drop('session_expired', lost);
    this.queue = [];
    this.queueHead = 0;
    this.queuedBytes = 0;
    this.inflight.clear();
    this.incomingQos2.clear();
    return shared;
  }
}
