// The gateway as one object: broker, listeners and $SYS built from a validated Config. Used by
// `convoy run` and by integration tests (which start it in-process on port 0).
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { raiseAlarm, type Alarm } from './diagnostics/alarms.js';
import { applySecurity } from './security/setup.js';
import { certExpiryAlarm, checkCertificateFiles, type WatchedFile } from './security/cert-expiry.js';
import type { StateStore } from './store/state-store.js';
import type { Bridge } from './bridge/bridge.js';
import type { IncomingQos2Store } from './bridge/incoming-qos2.js';
import type { Config } from './config/schema.js';
import type { Logger } from './diagnostics/log.js';
import { Broker, type BrokerLimits } from './broker/broker.js';
import type { Listener } from './broker/listeners/listener.js';
import { listenTcp } from './broker/listeners/tcp.js';
import type { ReloadableListener } from './broker/listeners/tls-material.js';
import { SysTopics } from './broker/sys-topics.js';
import { convoyVersion } from './version.js';

export interface Gateway {
  readonly broker: Broker;
  /** The uplink to HQ, when enabled. */
  readonly bridge: Bridge | undefined;
  readonly listeners: readonly Listener[];
  readonly sys: SysTopics;
  /**
   * Reloads what SIGHUP reloads: the certificate material of tls/wss listeners (new handshakes use
   * it, existing connections stay up; a broken file is logged and the previous material kept).
   */
  reload(): Promise<void>;
  /** Stops accepting, closes clients (wills as the spec requires), releases everything. */
  stop(): Promise<void>;
}

/** Broker limits from the [limits] section. */
export function limitsFromConfig(c: Config): Partial<BrokerLimits> {
  const l = c.limits;
  return {
    maxPacketSize: l.max_packet_size,
    maxConnections: l.max_connections,
    maxInflight: l.max_inflight,
    maxQueuedMessages: l.max_queued_messages,
    maxQueuedBytes: l.max_queued_bytes,
    maxOutboundBytes: l.max_outbound_bytes,
    maxTopicLength: l.max_topic_length,
    maxTopicLevels: l.max_topic_levels,
    keepaliveMax: l.keepalive_max,
    keepaliveMin: l.keepalive_min,
    connectTimeoutMs: l.connect_timeout_ms,
    allowZeroLengthClientId: l.allow_zero_length_client_id,
    maxConnectSize: Math.min(l.max_packet_size, c.security.connect_max_bytes),
    maxConnectionsPerAddress: c.security.max_connections_per_address,
    publishRateMsgs: c.security.publish_rate_msgs,
    publishRateBytes: c.security.publish_rate_bytes,
  };
}

/**
 * Opens the durable store. A store that cannot be opened (newer schema after a downgrade, a
 * permission problem) never stops the gateway: it runs on memory state and raises an alarm.
 */
async function openStore(config: Config, log: Logger): Promise<{ store?: StateStore; alarm?: Alarm }> {
  if (!config.store.enabled) return {};
  const path = join(config.data_dir, 'convoy.db');
  try {
    // Loaded only when enabled: the native SQLite addon.
    const { SqliteStateStore } = await import('./store/sqlite-state-store.js');
    const store = new SqliteStateStore({
      path, log, commitWindowMs: config.store.commit_window_ms, integrityCheckMs: config.store.integrity_check_ms,
    });
    if (!store.recovered) return { store };
    return {
      store,
      alarm: {
        name: 'store',
        message: `the database was corrupt (${store.recovered.reason}): moved aside to ${store.recovered.movedTo}, started with an empty store; keep the old file for analysis`,
        detail: { file: path, movedTo: store.recovered.movedTo },
      },
    };
  } catch (err) {
    return {
      alarm: {
        name: 'store',
        message: `cannot open ${path}: ${(err as Error).message}; running WITHOUT durable state until this is fixed`,
        detail: { file: path },
      },
    };
  }
}

function watchedCertificates(config: Config): WatchedFile[] {
  const files: WatchedFile[] = [];
  for (const l of config.listeners) {
    if (l.cert) files.push({ name: `${l.type} listener certificate`, path: l.cert });
    if (l.ca) files.push({ name: `${l.type} listener client CA`, path: l.ca });
    if (l.crl) files.push({ name: `${l.type} listener CRL`, path: l.crl, kind: 'crl' });
  }
  const tls = config.uplink.tls;
  if (config.uplink.enabled && tls.enabled) {
    if (tls.cert) files.push({ name: 'uplink client certificate', path: tls.cert });
    if (tls.ca) files.push({ name: 'uplink CA', path: tls.ca });
  }
  return files;
}

/**
 * The outbox shares the broker's store (one database, one grouped commit: a message routed
 * uplink is acknowledged to its LAN publisher only once it is in the outbox) and the bridge
 * drains it to HQ. QoS 2 orders from HQ wait for their PUBREL in the same database. Without a
 * store both are in memory.
 */
async function startUplink(config: Config, broker: Broker, store: StateStore | undefined, log: Logger): Promise<Bridge> {
  // Loaded only when enabled: MQTT.js and the outbox are a large part of the memory of a gateway.
  const [{ MemoryOutboxStore, SqliteOutboxStore }, { createOutbox }, { startBridge }, { expandGateway }] = await Promise.all([
    import('./store/outbox-store.js'), import('./bridge/outbox.js'), import('./bridge/bridge.js'), import('./bridge/routes.js'),
  ]);
  const { SqliteStateStore } = await import('./store/sqlite-state-store.js');
  const durable = store instanceof SqliteStateStore ? store : null;
  const outboxStore = durable ? new SqliteOutboxStore(durable) : new MemoryOutboxStore({});
  let incomingQos2: IncomingQos2Store | undefined;
  if (durable) {
    const { SqliteIncomingQos2Store } = await import('./store/incoming-qos2-store.js');
    const clientId = expandGateway(config.uplink.client_id, config.uplink.gateway_id);
    incomingQos2 = new SqliteIncomingQos2Store({ state: durable, clientId, log });
  }
  const outbox = createOutbox({
    store: outboxStore,
    budgetBytes: config.outbox.budget_bytes,
    minFreeBytes: config.outbox.min_free_bytes,
    dataDir: config.data_dir,
    onWrite: () => {
      if (broker.journal) broker.journal.wrote = true;
    },
    log,
  });
  const bridge = startBridge({
    uplink: config.uplink, outbox: config.outbox, broker, store: outbox, log, ...(incomingQos2 ? { incomingQos2 } : {}),
  });
  // Records become readable once committed: that is when the forwarder looks again.
  outbox.onCommitted(() => bridge.forwarder.nudge());
  return bridge;
}

export async function startGateway(config: Config, log: Logger): Promise<Gateway> {
  mkdirSync(config.data_dir, { recursive: true });
  const { store, alarm } = await openStore(config, log);
  const broker = new Broker({ limits: limitsFromConfig(config), log, version: convoyVersion(), store });
  if (alarm) raiseAlarm(broker, alarm);
  let security;
  try {
    security = applySecurity(config.security, broker, log);
  } catch (err) {
    await broker.close();
    throw err;
  }
  const listeners: Listener[] = [];
  const reloadable: ReloadableListener[] = [];
  try {
    for (const [i, l] of config.listeners.entries()) {
      switch (l.type) {
        case 'tcp':
          listeners.push(await listenTcp(l, broker));
          break;
        case 'tls':
        case 'ws':
        case 'wss': {
          // Certificate errors name the file; say which listener it belongs to.
          // Loaded only when configured (the ws library and TLS material code).
          const secured = await (l.type === 'tls'
            ? import('./broker/listeners/tls.js').then((m) => m.listenTls(l, broker))
            : import('./broker/listeners/websocket.js').then((m) => m.listenWebSocket(l, broker, l.type === 'wss')))
            .catch((err: Error) => { throw new Error(`listeners[${i}] (${l.type} ${l.host}:${l.port}): ${err.message}`, { cause: err }); });
          listeners.push(secured);
          reloadable.push(secured);
          break;
        }
      }
    }
  } catch (err) {
    await Promise.all(listeners.map((l) => l.close()));
    await broker.close();
    throw err;
  }
  let bridge: Bridge | undefined;
  if (config.uplink.enabled) bridge = await startUplink(config, broker, store, log);
  const sys = new SysTopics(broker, config.sys.interval_s);
  if (bridge) {
    const { uplinkSysTopics } = await import('./bridge/bridge.js');
    const b = bridge;
    sys.addSource(() => uplinkSysTopics(b.stats()));
  }
  sys.start();
  // Certificates nearing expiry (listeners, their CAs and CRLs, the uplink client certificate):
  // checked at start and daily, alarm 30 days ahead.
  const certFiles = watchedCertificates(config);
  const checkCerts = (): void => {
    const alarm = certExpiryAlarm(checkCertificateFiles(certFiles));
    if (alarm) raiseAlarm(broker, alarm);
  };
  if (certFiles.length > 0) checkCerts();
  const certTimer = certFiles.length > 0 ? setInterval(checkCerts, 24 * 3600 * 1000).unref() : undefined;
  for (const l of listeners) log.info({ listener: l.name }, 'listening');
  let stopping: Promise<void> | null = null;
  return {
    broker,
    listeners,
    sys,
    reload: () => {
      for (const l of reloadable) l.reload();
      security.reload();
      bridge?.verifier?.reload();
      return Promise.resolve();
    },
    bridge,
    stop: () => (stopping ??= (async () => {
      sys.stop();
      if (certTimer) clearInterval(certTimer);
      const closing = listeners.map((l) => l.close());
      // The uplink goes first: it says "offline" at HQ and stops reading the outbox before the store closes.
      await bridge?.stop();
      await broker.close();
      await Promise.all(closing);
    })()),
  };
}
