// The uplink bridge: publish tap → outbox → forwarder → link → HQ, and HQ → link → downlink →
// local broker. Built from the [uplink] and [outbox] sections by the gateway.
import type { Broker } from '../broker/broker.js';
import type { Message } from '../broker/message.js';
import { payloadOf } from '../broker/message.js';
import type { OutboxConfig, UplinkConfig } from '../config/schema.js';
import type { Logger } from '../diagnostics/log.js';
import { Downlink, type DownlinkStats } from './downlink.js';
import { Forwarder, type ForwarderStats } from './forwarder.js';
import { Link, UPLINK_SENDER_ID, type LinkStatus } from './link.js';
import { compileDownlinkRoute, compileUplinkRoute, findRoute, mapTopic, type UplinkRoute } from './routes.js';
import type { Outbox, OutboxRecord, OutboxStats } from './types.js';
import type { IncomingQos2Store } from './incoming-qos2.js';
import { loadGatewayKey } from '../security/keys.js';
import { createOrderVerifier, type OrderVerifier, type OrderVerifierStats } from '../security/order-verifier.js';

export interface TapStats {
  /** Local messages appended to the outbox. */
  stored: number;
  /** Refused by the outbox (full of alarms): the local publisher was acknowledged, HQ never sees it. */
  refused: number;
  /** QoS 0 messages on routes with store_qos0 = false, sent directly / dropped (link down or congested). */
  direct: number;
  directDropped: number;
  /** The outbox threw (disk error): logged, the message is lost for HQ. */
  errors: number;
}

export interface BridgeStats {
  link: LinkStatus & {
    connects: number; drops: number; downlink: number; downlinkUnexpected: number; floods: number;
    /** Topic aliases given on the current connection to HQ (MQTT 5; see topic-aliases.ts). */
    topicAliases: number;
  };
  forwarder: ForwarderStats;
  downlink: DownlinkStats;
  /** Signed orders (routes with verify): accepted, refused by reason; null without such routes. */
  orders: OrderVerifierStats | null;
  tap: TapStats;
  outbox: OutboxStats;
}

export interface Bridge {
  readonly link: Link;
  readonly forwarder: Forwarder;
  /** The signed-order verifier (routes with verify), or null; `verifier.reload()` re-reads the trusted keys. */
  readonly verifier: OrderVerifier | null;
  /** Stops: retained "offline" at HQ, DISCONNECT, tap removed. The outbox is left to its owner. */
  stop(): Promise<void>;
  stats(): BridgeStats;
}

export interface BridgeOptions {
  uplink: UplinkConfig;
  outbox: OutboxConfig;
  broker: Broker;
  store: Outbox;
  log: Logger;
  /** Injectable for tests. */
  random?: () => number;
  /** Verifier for downlink routes with verify; default: built from [uplink.signing] when a route needs one. */
  verifier?: OrderVerifier;
  /** Where QoS 2 downlink orders wait for HQ's PUBREL (durable with a data directory); default in memory. */
  incomingQos2?: IncomingQos2Store;
}

/** Topic → route cache entries kept at most (the cache is dropped when it grows past this). */
const ROUTE_CACHE_MAX = 10_000;

interface RoutedTopic {
  route: UplinkRoute;
  /** The local topic as published at HQ. */
  remote: string;
}

/** expiresAt of an outbox record: the earlier of the route's TTL and the message's own expiry (0 = none). */
export function recordExpiry(createdAt: number, ttlMs: number, messageExpiresAt: number): number {
  const ttlAt = ttlMs > 0 ? createdAt + ttlMs : 0;
  if (ttlAt === 0) return messageExpiresAt;
  if (messageExpiresAt === 0) return ttlAt;
  return Math.min(ttlAt, messageExpiresAt);
}

export function startBridge(opts: BridgeOptions): Bridge {
  const { uplink, outbox: outboxCfg, broker, store, log } = opts;
  const gw = uplink.gateway_id;
  const routes = uplink.routes.map((r) => compileUplinkRoute(r, gw));
  const downRoutes = uplink.downlink.map((r) => ({ ...compileDownlinkRoute(r, gw), verify: r.verify }));
  const verifier = opts.verifier ?? (downRoutes.some((r) => r.verify) ? createOrderVerifier({ uplink, broker, log }) : null);

  const link = new Link({
    config: uplink,
    log,
    downlink: downRoutes.map((d) => ({ filter: d.filter, qos: d.qos })),
    broker,
    ...(opts.random ? { random: opts.random } : {}),
    ...(opts.incomingQos2 ? { incomingQos2: opts.incomingQos2 } : {}),
  });
  // Per local topic: its route and the topic at HQ (a truck publishes on few topics; the remote
  // topic was a new string per message).
  const cache = new Map<string, RoutedTopic | null>();
  const routedTopic = (topic: string): RoutedTopic | null => {
    let r = cache.get(topic);
    if (r === undefined) {
      const route = findRoute(routes, topic);
      r = route === undefined ? null : { route, remote: mapTopic(route, topic) };
      if (cache.size >= ROUTE_CACHE_MAX) cache.clear();
      cache.set(topic, r);
    }
    return r;
  };

  // Routes with sign = true are signed with the gateway key; a missing key is a start-up error
  // (unsigned messages would look forged at HQ).
  const signRoutes = routes.filter((r) => r.sign);
  const signer = signRoutes.length === 0 ? undefined : {
    key: loadGatewayKey(uplink.signing.gateway_key),
    shouldSign: (localTopic: string): boolean => routedTopic(localTopic)?.route.sign ?? false,
  };
  const forwarder = new Forwarder({
    outbox: store,
    link,
    gatewayId: gw,
    protocolVersion: link.protocolVersion,
    sequence311: uplink.sequence_311,
    inflightWindow: outboxCfg.inflight_window,
    drainRateMsgs: outboxCfg.drain_rate_msgs,
    drainRateBytes: outboxCfg.drain_rate_bytes,
    ...(signer ? { signer } : {}),
    log,
  });
  const downlink = new Downlink({ routes: downRoutes, broker, log, verifier });
  link.on('up', (info) => forwarder.linkUp(info));
  link.on('down', () => forwarder.linkDown());
  link.on('message', (m) => {
    if (!downlink.handle(m)) link.noteUnexpected();
  });

  const tap: TapStats = { stored: 0, refused: 0, direct: 0, directDropped: 0, errors: 0 };

  const publishTap = (msg: Message): boolean => {
    if (msg.senderId === UPLINK_SENDER_ID) return true; // from HQ or our own state: never back up
    if (routes.length === 0) return true;
    try {
      const routed = routedTopic(msg.topic);
      if (!routed) return true;
      const { route, remote } = routed;
      if (msg.qos === 0 && !route.storeQos0) {
        if (forwarder.sendDirect(remote, Buffer.from(payloadOf(msg)), msg.properties)) tap.direct++;
        else tap.directDropped++;
        return true;
      }
      const createdAt = Date.now();
      const incoming: Omit<OutboxRecord, 'seq'> = {
        cls: route.cls,
        localTopic: msg.topic,
        topic: remote,
        payload: Buffer.from(payloadOf(msg)), // the frame is reused; the record outlives it
        qos: route.qos,
        createdAt,
        expiresAt: recordExpiry(createdAt, route.ttlMs, msg.expiresAt),
      };
      if (msg.properties) incoming.properties = msg.properties;
      const rec = store.append(incoming);
      if (!rec) {
        // The outbox is full of alarms: the message is refused as a whole (0x97 to its publisher).
        tap.refused++;
        return false;
      }
      tap.stored++;
      forwarder.nudge(route.cls);
      return true;
    } catch (err) {
      // Never out of the broker's publish path.
      tap.errors++;
      log.error({ err, topic: msg.topic }, 'uplink: cannot store a message for HQ');
      return true;
    }
  };
  broker.publishTap = publishTap;
  link.start();

  let stopping: Promise<void> | null = null;
  return {
    link,
    forwarder,
    verifier,
    stop: () => (stopping ??= (async () => {
      if (broker.publishTap === publishTap) broker.publishTap = null;
      forwarder.quiesce(); // acks of what is in flight still count while "offline" goes out
      await link.stop();
      forwarder.stop();
      if (verifier && !opts.verifier) verifier.close();
    })()),
    stats: () => ({
      link: link.status(),
      forwarder: forwarder.stats(),
      downlink: downlink.stats(),
      orders: verifier ? verifier.stats() : null,
      tap: { ...tap },
      outbox: store.stats(),
    }),
  };
}

/**
 * The uplink's counters as $SYS topics ($SYS/broker/uplink/...), so a technician or HQ sees the
 * outbox and every drop by reason without access to the process.
 */
export function uplinkSysTopics(stats: BridgeStats): Map<string, string> {
  const t = new Map<string, string>();
  const p = '$SYS/broker/uplink/';
  t.set(p + 'link/state', stats.link.state);
  t.set(p + 'link/endpoint', stats.link.endpoint);
  t.set(p + 'link/connects', String(stats.link.connects));
  t.set(p + 'link/drops', String(stats.link.drops));
  t.set(p + 'link/topic_aliases', String(stats.link.topicAliases));
  t.set(p + 'outbox/messages', String(stats.outbox.count));
  t.set(p + 'outbox/bytes', String(stats.outbox.bytes));
  t.set(p + 'outbox/last_seq', String(stats.outbox.lastSeq));
  for (const [cls, c] of Object.entries(stats.outbox.byClass)) {
    t.set(`${p}outbox/${cls}/messages`, String(c.count));
    t.set(`${p}outbox/${cls}/bytes`, String(c.bytes));
  }
  for (const [reason, n] of Object.entries(stats.outbox.dropped)) t.set(`${p}outbox/dropped/${reason}`, String(n));
  t.set(p + 'sent', String(stats.forwarder.sent));
  t.set(p + 'acked', String(stats.forwarder.acked));
  t.set(p + 'inflight', String(stats.forwarder.inFlight));
  t.set(p + 'rejected_by_hq', String(stats.forwarder.rejected));
  t.set(p + 'expired_before_send', String(stats.forwarder.expired));
  t.set(p + 'refused_full', String(stats.tap.refused));
  t.set(p + 'downlink/delivered', String(stats.downlink.delivered));
  if (stats.orders) {
    t.set(p + 'orders/accepted', String(stats.orders.accepted));
    for (const [reason, n] of Object.entries(stats.orders.rejected)) t.set(`${p}orders/rejected/${reason}`, String(n));
  }
  return t;
}
