// Composition root of the broker: sessions, router, retained messages, connections, the one
// publish path, and the periodic sweep (keepalive, CONNECT deadline, session expiry).
import type { Duplex } from 'node:stream';
import type { Logger } from '../diagnostics/log.js';
import { Metrics } from '../diagnostics/metrics.js';
import type { ConnectPacket, QoS, Will } from '../mqtt/packets.js';
import { Reason } from '../mqtt/reason-codes.js';
import { Connection } from './connection.js';
import type { Authorizer, ClientIdentity, ListenerPolicy, LoginChecker } from '../security/types.js';
import { ProtocolError } from '../mqtt/errors.js';
import { Journal } from './journal.js';
import type { StateStore, StoredState } from '../store/state-store.js';
import { parseSharedFilter } from '../mqtt/topic.js';
import type { EnhancedAuthMethod } from './enhanced-auth.js';
import { SESSION_NEVER_EXPIRES } from './handlers/connect.js';
import { createMessage, type InternalPublish, type Message } from './message.js';
import { RetainedIndex } from './retained-index.js';
import { Router } from './router.js';
import type { Delivery, Session } from './session.js';
import { MemorySessionStore, type SessionStore } from './session-store.js';
import type { SharedGroup, Subscription } from './subscriptions.js';

/** "10.0.0.7:51234" → "10.0.0.7"; "[::1]:5" or "::1:5" → the address part. */
export function addressOf(remote: string): string {
  const i = remote.lastIndexOf(':');
  return i > 0 ? remote.slice(0, i) : remote;
}

/** An MQTT 5 will waiting for its delay, with the user it must be judged as. */
interface DelayedWill {
  will: Will;
  dueAt: number;
  username: string | undefined;
  /** False for wills restored from the store, which does not keep the user name. */
  userKnown: boolean;
}

export interface BrokerLimits {
  maxPacketSize: number;
  /** Largest packet accepted before CONNECT completes. */
  maxConnectSize: number;
  maxConnections: number;
  maxInflight: number;
  maxQueuedMessages: number;
  maxQueuedBytes: number;
  maxOutboundBytes: number;
  maxTopicLength: number;
  maxTopicLevels: number;
  keepaliveMax: number;
  keepaliveMin: number;
  connectTimeoutMs: number;
  allowZeroLengthClientId: boolean;
  /** MQTT 5: QoS 2 messages a client may have awaiting PUBREL (announced in CONNACK). */
  receiveMaximum: number;
  topicAliasMaximum: number;
  maximumQoS: QoS;
  /** Upper bound on a session's expiry interval, seconds. */
  maxSessionExpiry: number;
  /** Connections from one IP address; 0 = no limit. */
  maxConnectionsPerAddress: number;
  /** Per-client PUBLISH messages and bytes per second; 0 = no limit. */
  publishRateMsgs: number;
  publishRateBytes: number;
}

export const defaultLimits: BrokerLimits = {
  maxPacketSize: 1024 * 1024,
  maxConnectSize: 1024 * 1024,
  maxConnections: 1024,
  maxInflight: 32,
  maxQueuedMessages: 1000,
  maxQueuedBytes: 16 * 1024 * 1024,
  maxOutboundBytes: 4 * 1024 * 1024,
  maxTopicLength: 65535,
  maxTopicLevels: 128,
  keepaliveMax: 65535,
  keepaliveMin: 0,
  connectTimeoutMs: 10_000,
  allowZeroLengthClientId: true,
  receiveMaximum: 1024,
  topicAliasMaximum: 64,
  maximumQoS: 2,
  maxSessionExpiry: SESSION_NEVER_EXPIRES,
  maxConnectionsPerAddress: 0,
  publishRateMsgs: 0,
  publishRateBytes: 0,
};

export interface BrokerOptions {
  limits?: Partial<BrokerLimits>;
  log: Logger;
  version: string;
  sessions?: SessionStore;
  /** Durable state; without it the broker keeps everything in memory only. */
  store?: StateStore;
}


const SWEEP_MS = 250;

export class Broker {
  readonly limits: BrokerLimits;
  readonly log: Logger;
  readonly version: string;
  readonly metrics = new Metrics();
  readonly sessions: SessionStore;
  readonly router: Router;
  readonly retained = new RetainedIndex<Message>();
  readonly connections = new Set<Connection>();
  /** Connected (CONNACK sent) connections by client id. */
  readonly clients = new Map<string, Connection>();
  /** Decides logins (password file, bans); null: anonymous where the listener allows it, or a certificate identity. */
  loginChecker: LoginChecker | null = null;
  /** Topic permissions; null: every authenticated client may use every topic. */
  authorizer: Authorizer | null = null;
  /** Open connections per IP address, for security.max_connections_per_address. */
  private readonly perAddress = new Map<string, number>();
  /** Durable journal of sessions and retained messages, when a store is configured. */
  readonly journal: Journal | null;
  /** Connections holding acknowledgements for the commit batch being formed. */
  private heldAckConns: Connection[] = [];
  private ackBatch = 1;
  /**
   * Sees every message on the publish path before local routing (the uplink bridge's entry).
   * Anything it writes to the store in this call holds the publisher's acknowledgement too;
   * returning false refuses the message as a whole (the outbox is full).
   */
  publishTap: ((msg: Message) => boolean) | null = null;
  /** MQTT 5 enhanced authentication methods by name. */
  readonly authMethods = new Map<string, EnhancedAuthMethod>();
  /** MQTT 5 wills waiting for their delay interval [MQTT-3.1.3-9], by client id. */
  private readonly delayedWills = new Map<string, DelayedWill>();
  /** Persistent sessions whose client is away, for expiry. */
  private readonly offline = new Set<Session>();
  private readonly dirty: Connection[] = [];
  private depth = 0;
  private flushScheduled = false;
  private readonly sweeper: NodeJS.Timeout;
  private closing = false;
  private lastStoreRetry = 0;

  constructor(opts: BrokerOptions) {
    this.limits = { ...defaultLimits, ...opts.limits };
    this.log = opts.log;
    this.version = opts.version;
    this.sessions = opts.sessions ?? new MemorySessionStore(
      { maxQueuedMessages: this.limits.maxQueuedMessages, maxQueuedBytes: this.limits.maxQueuedBytes }, this.metrics);
    this.router = new Router((id) => this.sessions.get(id));
    this.journal = null;
    if (opts.store) {
      const state = opts.store.load();
      this.journal = new Journal(opts.store, state.lastMessageId);
      this.restore(state);
    }
    this.sweeper = setInterval(() => this.sweep(), SWEEP_MS);
    this.sweeper.unref();
  }

  // --- connections ---------------------------------------------------------------------------

  /** Takes a new transport from a listener. Returns null when refused (connection limit). */
  accept(transport: Duplex, remoteAddress: string, listener: ListenerPolicy, certificateIdentity?: string): Connection | null {
    if (this.closing || this.connections.size >= this.limits.maxConnections) {
      this.metrics.connectionsRefused++;
      this.log.warn({ remote: remoteAddress, limit: this.limits.maxConnections }, 'connection refused: max_connections reached');
      transport.destroy();
      return null;
    }
    const address = addressOf(remoteAddress);
    const fromAddress = this.perAddress.get(address) ?? 0;
    if (this.limits.maxConnectionsPerAddress > 0 && fromAddress >= this.limits.maxConnectionsPerAddress) {
      this.metrics.connectionsRefused++;
      this.metrics.refusedPerAddress++;
      this.log.warn({ remote: remoteAddress, limit: this.limits.maxConnectionsPerAddress }, 'connection refused: max_connections_per_address reached');
      transport.destroy();
      return null;
    }
    this.perAddress.set(address, fromAddress + 1);
    this.metrics.connectionsAccepted++;
    const conn = new Connection(transport, remoteAddress, listener, this, certificateIdentity);
    this.connections.add(conn);
    return conn;
  }

  /** Login: sets conn.username or throws ProtocolError (0x86 / 0x87 / 0x8A). */
  async authenticate(conn: Connection, p: ConnectPacket): Promise<void> {
    if (this.loginChecker) {
      conn.username = await this.loginChecker.check({
        clientId: p.clientId, username: p.username, password: p.password, address: addressOf(conn.remoteAddress),
        listener: conn.listener, certificateIdentity: conn.certificateIdentity,
      });
      return;
    }
    if (conn.listener.useIdentityAsUsername && conn.certificateIdentity !== undefined) {
      conn.username = conn.certificateIdentity;
      return;
    }
    if (conn.listener.allowAnonymous) {
      conn.username = p.username;
      return;
    }
    this.metrics.authFailures++;
    throw new ProtocolError(Reason.NotAuthorized, `${conn.listener.name} allows no anonymous clients and no password_file is configured`);
  }

  /** The identity ACLs see for a session's client. */
  identityOf(session: Session): ClientIdentity {
    return { clientId: session.clientId, username: session.username };
  }

  /**
   * Removes subscriptions the ACL no longer allows (after a reload, or when a session resumes
   * under another user name): revoked access takes effect for existing sessions too.
   */
  enforceAcl(session: Session): void {
    const acl = this.authorizer;
    if (!acl) return;
    const who = this.identityOf(session);
    // Messages waiting for the client are delivered only if it may still read them.
    const purged = session.dropQueued((d) => !acl.canReceive(who, d.msg.topic));
    if (purged > 0) {
      this.metrics.aclDenied += purged;
      this.log.warn({ client: session.clientId, user: session.username, messages: purged }, 'queued messages dropped: the ACL no longer allows reading them');
    }
    for (const filter of [...session.subscriptions.keys()]) {
      const plain = parseSharedFilter(filter)?.filter ?? filter;
      if (!acl.canSubscribe(who, plain)) {
        session.removeSubscription(filter);
        this.router.unsubscribe(session.clientId, filter);
        this.metrics.aclDenied++;
        this.log.warn({ client: session.clientId, user: session.username, filter }, 'subscription removed: the ACL no longer allows it');
      }
    }
  }

  /** Applies reloaded security settings to every session (SIGHUP). */
  reapplyAcl(): void {
    for (const s of this.sessions.values()) this.enforceAcl(s);
    this.router.invalidate();
  }

  /**
   * Binds a connection to its session: takes over a connection with the same client id
   * [MQTT-3.1.4-2], discards the old session on clean start [MQTT-3.1.2-6], or resumes it.
   */
  attachSession(conn: Connection, p: ConnectPacket): { sessionPresent: boolean; expiryChanged: boolean } {
    const clientId = conn.clientId;
    const previous = this.clients.get(clientId);
    if (previous && previous !== conn) {
      this.log.info({ client: clientId, remote: previous.remoteAddress, by: conn.remoteAddress }, 'session taken over');
      previous.close(Reason.SessionTakenOver, 'another connection with the same client id connected');
    }
    let expiry = p.protocolVersion === 5 ? (p.properties?.sessionExpiryInterval ?? 0) : p.clean ? 0 : SESSION_NEVER_EXPIRES;
    let expiryChanged = false;
    if (expiry > this.limits.maxSessionExpiry) {
      expiry = this.limits.maxSessionExpiry;
      expiryChanged = true;
    }
    // A delayed will is cancelled by a reconnect in time [MQTT-3.1.3-9]; with clean start the old
    // session ends now, and a will delayed past its end is sent at its end.
    const delayed = this.delayedWills.get(clientId);
    if (delayed) {
      this.delayedWills.delete(clientId);
      this.journal?.deleteDelayedWill(clientId);
      if (p.clean) this.publishDelayedWill(clientId, delayed);
    }
    let session = this.sessions.get(clientId);
    if (session && p.clean) {
      this.destroySession(session, true);
      session = undefined;
    }
    const sessionPresent = session !== undefined;
    session ??= this.sessions.create(clientId);
    this.offline.delete(session);
    this.journalSession(session, expiry, 0);
    session.expiryInterval = expiry;
    session.disconnectedAt = 0;
    session.link = conn;
    session.username = conn.username;
    conn.session = session;
    // A resumed session keeps only what this user may still read [issue: revoked access].
    if (sessionPresent) this.enforceAcl(session);
    this.clients.set(clientId, conn);
    this.router.invalidate();
    return { sessionPresent, expiryChanged };
  }

  /** After a connection closed (by either side). Publishes the will unless DISCONNECT came. */
  connectionClosed(conn: Connection, wasConnected: boolean): void {
    if (!wasConnected) return;
    const clientId = conn.clientId;
    if (this.clients.get(clientId) === conn) this.clients.delete(clientId);
    const session = conn.session;
    this.releaseWill(conn);
    if (session && session.link === conn) {
      session.link = null;
      if (session.persistent) {
        session.disconnectedAt = Date.now();
        this.offline.add(session);
        this.journalSession(session, session.expiryInterval, session.disconnectedAt);
      } else {
        this.destroySession(session, true);
      }
    }
    this.log.info({ client: clientId, remote: conn.remoteAddress, graceful: conn.disconnectReceived }, 'client disconnected');
    this.flushSoon();
  }

  connectionGone(conn: Connection): void {
    if (!this.connections.delete(conn)) return;
    const address = addressOf(conn.remoteAddress);
    const n = (this.perAddress.get(address) ?? 1) - 1;
    if (n <= 0) this.perAddress.delete(address);
    else this.perAddress.set(address, n);
  }

  /**
   * [MQTT-3.1.2-8]: the will is published when the connection closes without DISCONNECT; an
   * MQTT 5 will delay holds it until the delay passes or the session ends, whichever is first.
   */
  private releaseWill(conn: Connection): void {
    const will = conn.will;
    conn.will = undefined;
    if (!will || conn.disconnectReceived) return;
    const delay = will.properties?.willDelayInterval ?? 0;
    if (delay > 0 && conn.session?.persistent) {
      const dueAt = Date.now() + delay * 1000;
      this.delayedWills.set(conn.clientId, { will, dueAt, username: conn.username, userKnown: true });
      this.journal?.putDelayedWill(conn.clientId, will, dueAt);
    } else {
      this.publishWill(will, conn.clientId, conn.username);
    }
  }

  /** A delayed will is judged by the ACL as its own user, never as an anonymous client. */
  private publishDelayedWill(clientId: string, w: DelayedWill): void {
    if (!w.userKnown && this.authorizer) {
      this.metrics.aclDenied++;
      this.log.warn({ client: clientId, topic: w.will.topic }, 'delayed will restored from the store not published: its user is unknown, so the ACL cannot allow it');
      return;
    }
    this.publishWill(w.will, clientId, w.username);
  }

  private publishWill(will: Will, clientId: string, username?: string): void {
    if (this.authorizer && !this.authorizer.canPublish({ clientId, username }, will.topic)) {
      this.metrics.aclDenied++;
      this.log.warn({ client: clientId, user: username, topic: will.topic }, 'will not published: the ACL does not allow it');
      return;
    }
    // Will properties travel with the message, except the delay which only concerns the broker.
    let properties = will.properties;
    if (properties?.willDelayInterval !== undefined) {
      const { willDelayInterval: _d, ...rest } = properties;
      properties = rest;
    }
    this.publish(createMessage({ topic: will.topic, payload: will.payload, qos: will.qos, retain: will.retain, properties }, clientId));
  }

  /**
   * Ends a session: its subscriptions leave the trie, a delayed will is sent now, messages it
   * got through shared subscriptions go to another member of the group, the rest is counted
   * as dropped.
   */
  destroySession(session: Session, sendDelayedWill: boolean): void {
    const clientId = session.clientId;
    for (const filter of session.subscriptions.keys()) this.router.unsubscribe(clientId, filter);
    session.subscriptions.clear();
    this.offline.delete(session);
    if (this.sessions.get(clientId) === session) this.sessions.delete(clientId);
    this.router.invalidate();
    const delayed = this.delayedWills.get(clientId);
    if (delayed && sendDelayedWill) {
      this.delayedWills.delete(clientId);
      this.publishDelayedWill(clientId, delayed);
    }
    if (session.journal) {
      this.journal?.deleteSession(clientId); // cascades to its deliveries, QoS 2 ids and delayed will
      session.journal = null;
    }
    for (const d of session.takeUndelivered()) this.redeliverShared(d);
  }

  /** Re-sends a message of a departed shared-subscription member to another member. */
  private redeliverShared(d: Delivery): void {
    const group = this.router.route(d.msg.topic).shared.find((g) => g.key === d.shareKey);
    if (!group || !this.deliverToGroup(group, d.msg)) this.metrics.drop('session_expired');
  }

  // --- the publish path ----------------------------------------------------------------------

  /** Resolves when every change made so far is durable (at once without a store). */
  committed(): Promise<void> {
    return this.journal ? this.journal.store.commit() : Promise.resolve();
  }

  /** Publishes from inside the process (drivers, $SYS, the bridge): same path as clients. */
  publishInternal(p: InternalPublish, senderId = ''): void {
    this.publish(createMessage(p, senderId));
    this.flushSoon();
  }

  /**
   * The one publish path: the uplink outbox, the retained store, then one delivery per matching
   * session. Returns false when the message was refused (the uplink outbox is full).
   */
  publish(msg: Message): boolean {
    if (this.publishTap && !this.publishTap(msg)) {
      this.metrics.drop('uplink_full');
      return false;
    }
    if (msg.retain) this.storeRetained(msg);
    const route = this.router.route(msg.topic);
    const targets = route.targets;
    for (let i = 0; i < targets.length; i++) {
      const t = targets[i]!;
      // No Local: not back to the publisher's own connection [MQTT-3.8.3-3].
      if (t.noLocal && t.session.clientId === msg.senderId) continue;
      // Delivered at the lower of published and granted QoS [MQTT-3.8.4-8]; retain is cleared
      // for established subscriptions unless Retain As Published [MQTT-3.3.1-9], [MQTT-3.3.1-12].
      t.session.deliver(msg, msg.qos < t.qos ? msg.qos : t.qos, t.retainAsPublished && msg.retain, t.subIds);
    }
    const shared = route.shared;
    for (let i = 0; i < shared.length; i++) this.deliverToGroup(shared[i]!, msg);
    return true;
  }

  /** One delivery per shared group [MQTT-4.8.2-?], round robin, preferring connected members. */
  private deliverToGroup(group: SharedGroup, msg: Message): boolean {
    const members = group.members;
    const n = members.length;
    if (n === 0) return false;
    let chosen: Subscription | undefined;
    for (let k = 0; k < n; k++) {
      const m = members[(group.cursor + k) % n]!;
      if (this.clients.has(m.clientId)) {
        chosen = m;
        group.cursor = (group.cursor + k + 1) % n;
        break;
      }
    }
    if (!chosen) {
      chosen = members[group.cursor % n]!;
      group.cursor = (group.cursor + 1) % n;
    }
    const session = this.sessions.get(chosen.clientId);
    if (!session) return false;
    session.deliver(msg, msg.qos < chosen.qos ? msg.qos : chosen.qos, chosen.retainAsPublished && msg.retain,
      chosen.subscriptionId !== undefined ? [chosen.subscriptionId] : undefined, group.key);
    return true;
  }

  private storeRetained(msg: Message): void {
    // An empty payload clears the retained message [MQTT-3.3.1-10], [MQTT-3.3.1-11].
    if (msg.payloadEnd === msg.payloadStart) {
      if (this.retained.delete(msg.topic)) this.journal?.deleteRetained(msg.topic);
      return;
    }
    // Kept long: copy out of the (possibly large, shared) read buffer.
    const payload = Buffer.from(msg.payloadBuf.subarray(msg.payloadStart, msg.payloadEnd));
    const kept: Message = { ...msg, topicBuf: null, topicOffset: 0, payloadBuf: payload, payloadStart: 0, payloadEnd: payload.length, storeId: 0 };
    this.retained.set(msg.topic, kept);
    this.journal?.putRetained(kept);
  }

  /** Retained messages matching a new subscription, with the retain flag set [MQTT-3.3.1-8]. */
  sendRetained(session: Session, sub: Subscription): void {
    const now = Date.now();
    const acl = this.authorizer;
    const who = acl ? this.identityOf(session) : undefined;
    const subIds = sub.subscriptionId !== undefined ? [sub.subscriptionId] : undefined;
    this.retained.match(sub.filter, (topic, msg) => {
      if (msg.expiresAt !== 0 && msg.expiresAt <= now) {
        this.retained.delete(topic);
        this.journal?.deleteRetained(topic);
        return;
      }
      if (acl && !acl.canReceive(who!, topic)) return;
      // A retained message outlives any one delivery: each durable delivery gets a copy with its
      // own store id, written with it (the store writes a message only in the batch it was put).
      const copy = session.journal && msg.qos > 0 && sub.qos > 0 ? { ...msg, storeId: 0 } : msg;
      session.deliver(copy, msg.qos < sub.qos ? msg.qos : sub.qos, true, subIds);
    });
  }

  // --- batching writes -----------------------------------------------------------------------

  /** Called around packet handling; the outermost leave flushes every connection written to. */
  enter(): void {
    this.depth++;
  }

  leave(): void {
    if (--this.depth === 0) this.flush();
  }

  markDirty(conn: Connection): void {
    this.dirty.push(conn);
    if (this.depth === 0) this.flushSoon();
  }

  /** Flushes at the end of this event-loop turn (for writes made outside packet handling). */
  flushSoon(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    setImmediate(() => {
      this.flushScheduled = false;
      this.flush();
    });
  }

  flush(): void {
    // A commit the writer finished meanwhile is settled first, so this turn's changes start the
    // next one at once.
    this.journal?.store.poll?.();
    // Every change is committed at the end of the turn that made it, whether or not an
    // acknowledgement waits for it (a SUBSCRIBE, a client's PUBACK, a session ending).
    if (this.heldAckConns.length > 0 || this.journal?.wrote) this.commitHeldAcks();
    const list = this.dirty;
    for (let i = 0; i < list.length; i++) list[i]!.flush();
    list.length = 0;
  }

  // --- durability ----------------------------------------------------------------------------

  /** Registers a held ack for the batch being formed; returns that batch's number. */
  holdAck(conn: Connection): number {
    const list = this.heldAckConns;
    if (list.length === 0 || list[list.length - 1] !== conn) list.push(conn);
    return this.ackBatch;
  }

  /** One commit for everything written this turn; its acks are sent when it is durable. */
  private commitHeldAcks(): void {
    const journal = this.journal!;
    const conns = this.heldAckConns;
    const batch = this.ackBatch++;
    this.heldAckConns = [];
    journal.wrote = false;
    journal.store.commit().then(
      () => {
        this.enter();
        try {
          for (const c of conns) c.releaseAcks(batch);
        } finally {
          this.leave();
        }
      },
      (err: unknown) => {
        // The store logs the fault itself (once); here only what it means for waiting clients.
        if (conns.length > 0) this.log.error({ err: String(err), fault: journal.store.fault, clients: conns.length }, 'store commit failed: refusing the messages of this batch');
        this.enter();
        try {
          for (const c of conns) c.refuseAcks(batch);
        } finally {
          this.leave();
        }
      },
    );
  }

  /** Whether a QoS>0 message on this topic would have to be stored (retained or for a persistent session). */
  needsStorage(topic: string, retain: boolean): boolean {
    if (retain) return true;
    const route = this.router.route(topic);
    for (const t of route.targets) if (t.qos > 0 && t.session.journal) return true;
    for (const g of route.shared) for (const m of g.members) if (m.qos > 0 && this.sessions.get(m.clientId)?.journal) return true;
    return false;
  }

  /** Keeps the store's copy of a session in step with whether it is persistent. */
  private journalSession(session: Session, expiry: number, disconnectedAt: number): void {
    const journal = this.journal;
    if (!journal) return;
    if (expiry > 0) {
      session.journal = journal;
      journal.putSession(session.clientId, expiry, disconnectedAt);
      return;
    }
    if (session.journal) {
      // It stops being persistent: the stored copy goes; memory keeps it until the connection ends.
      journal.deleteSession(session.clientId);
      session.journal = null;
    }
  }

  /** Rebuilds sessions, subscriptions, queues and retained messages from the store at start. */
  private restore(state: StoredState): void {
    const now = Date.now();
    const messages = new Map<number, Message>();
    const messageOf = (id: number): Message | undefined => {
      let m = messages.get(id);
      if (!m) {
        const s = state.messages.get(id);
        if (!s) return undefined;
        m = createMessage({ topic: s.topic, payload: s.payload, qos: s.qos, retain: s.retain, properties: s.properties }, s.senderId, s.receivedAt);
        m.expiresAt = s.expiresAt;
        m.storeId = id;
        messages.set(id, m);
      }
      return m;
    };
    for (const r of state.retained) {
      const m = createMessage({ topic: r.topic, payload: r.payload, qos: r.qos, retain: true, properties: r.properties }, r.senderId, r.receivedAt);
      m.expiresAt = r.expiresAt;
      this.retained.set(r.topic, m);
    }
    for (const s of state.sessions) {
      const session = this.sessions.create(s.clientId);
      session.expiryInterval = s.expiryInterval;
      // A session whose client was connected at the crash counts as disconnected from now.
      session.disconnectedAt = s.disconnectedAt || now;
      session.journal = this.journal;
      for (const sub of s.subscriptions) {
        const full: Subscription = { clientId: s.clientId, ...sub };
        const shared = parseSharedFilter(sub.filter);
        if (shared) full.shareGroup = shared.group;
        session.subscriptions.set(sub.filter, full);
        this.router.subscribe(full);
      }
      for (const d of s.deliveries) {
        const msg = messageOf(d.messageId);
        if (!msg) continue;
        const delivery: Delivery = { msg, qos: d.qos, retain: d.retain, subIds: d.subIds, shareKey: d.shareKey, seq: d.seq };
        if (state.unclean && d.state === 'queued') delivery.maybeSent = true;
        session.restoreDelivery(delivery, d.state, d.packetId);
      }
      for (const id of s.incomingQos2) session.incomingQos2.add(id);
      // The store keeps no user name: an ACL cannot judge these wills (see publishDelayedWill).
      if (s.delayedWill) this.delayedWills.set(s.clientId, { ...s.delayedWill, username: undefined, userKnown: false });
      this.offline.add(session);
    }
    if (state.sessions.length > 0 || state.retained.length > 0) {
      this.log.info({ sessions: state.sessions.length, retained: state.retained.length, messages: state.messages.size }, 'state restored from the store');
    }
  }

  // --- time ----------------------------------------------------------------------------------

  private sweep(): void {
    const now = Date.now();
    this.enter();
    try {
      for (const conn of this.connections) {
        if (conn.state === 'awaiting-connect' || conn.state === 'connecting') {
          if (now - conn.acceptedAt > this.limits.connectTimeoutMs) {
            this.log.info({ remote: conn.remoteAddress }, `no CONNECT within ${this.limits.connectTimeoutMs} ms: closing`);
            conn.shutdown();
          }
        } else if (conn.state === 'connected' && conn.keepaliveMs > 0 && now - conn.lastSeen > conn.keepaliveMs * 1.5) {
          // [MQTT-3.1.2-24]: nothing received for 1.5 × keepalive.
          this.log.info({ client: conn.clientId, remote: conn.remoteAddress }, 'keepalive timeout: closing');
          conn.close(Reason.KeepAliveTimeout, 'keep alive timeout');
        }
      }
      for (const [clientId, w] of this.delayedWills) {
        if (now >= w.dueAt) {
          this.delayedWills.delete(clientId);
          this.journal?.deleteDelayedWill(clientId);
          this.publishDelayedWill(clientId, w);
        }
      }
      // A store that failed (disk full) retries its kept batch until space returns.
      if (this.journal?.store.fault && now - this.lastStoreRetry >= 1000) {
        this.lastStoreRetry = now;
        this.journal.store.commit().then(
          () => this.log.info('store writable again'),
          () => undefined,
        );
      }
      for (const s of this.offline) {
        if (s.expiryInterval !== SESSION_NEVER_EXPIRES && now - s.disconnectedAt >= s.expiryInterval * 1000) {
          this.log.info({ client: s.clientId }, 'session expired');
          this.destroySession(s, true);
        }
      }
    } finally {
      this.leave();
    }
  }

  /** Stops: wills are published (the server closed the connections [MQTT-3.1.2-8]), MQTT 5 clients get 0x8B. */
  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    clearInterval(this.sweeper);
    const closed: Array<Promise<void>> = [];
    this.enter();
    try {
      // Every will first, while all subscribers are still connected to receive them.
      for (const conn of this.connections) if (conn.state === 'connected') this.releaseWill(conn);
      // Without a store, sessions end with the process, so delayed wills are due now; with one
      // they are kept and resume their delay after the restart.
      if (!this.journal) {
        for (const [clientId, w] of this.delayedWills) this.publishDelayedWill(clientId, w);
        this.delayedWills.clear();
      }
      this.flush();
      for (const conn of this.connections) {
        closed.push(new Promise((resolve) => {
          if (conn.transport.destroyed) resolve();
          else conn.transport.once('close', () => resolve());
        }));
        conn.close(Reason.ServerShuttingDown, 'server shutting down');
      }
    } finally {
      this.leave();
    }
    await Promise.race([Promise.all(closed), new Promise((r) => setTimeout(r, 3000).unref())]);
    for (const conn of this.connections) conn.transport.destroy();
    if (this.journal) {
      await this.journal.store.commit().catch((err: unknown) => this.log.error({ err: String(err) }, 'final store commit failed'));
      this.journal.store.close();
    }
  }
}
