// The link: the one MQTT connection to HQ (MQTT.js), with our own reconnect loop.
//
// - Endpoints are tried in order; a failed attempt moves on to the next at once, and after a
//   whole round failed the loop waits a full-jitter backoff delay. After a link that was up
//   drops, the loop starts again at the first endpoint after a backoff delay (reset once a link
//   stayed up for backoff_reset_ms).
// - Persistent session at HQ: clean session / clean start false, MQTT 5 session expiry. Downlink
//   filters are subscribed after every connect (the session may have been lost).
// - Downlink acknowledgements wait for the local commit. QoS 1: PUBACK once the message is durably
//   in the local broker. QoS 2: MQTT.js holds the PUBLISH in our incoming store (incoming-qos2.ts)
//   and sends PUBREC once put calls back, then delivers on PUBREL and sends PUBCOMP once the
//   delivery is committed. With a data directory the store is durable (store/incoming-qos2-store.ts):
//   PUBREC goes only after the order is committed, and the order's row is deleted in the same
//   commit as its local delivery, so an order survives a crash between PUBREC and PUBREL and is
//   delivered exactly once. The store is kept across connections (a PUBREL on the next connection
//   of the session finds its order) and cleared when HQ reports no session.
// - Every step of a connect is bounded: MQTT.js's connectTimeout covers TCP, TLS and CONNACK;
//   our own attempt timer also covers the status publish that completes "up".
// - Half-open detection: only traffic received from HQ counts as proof of life (any bytes).
//   After one keepalive of silence we send a PINGREQ; after 2× keepalive the connection is
//   destroyed and the next attempt starts. TCP keepalive is set on the socket as well.
// - Status: retained "online" at the status topic once connected, "offline" as the will (QoS 1,
//   retained), and "offline" published explicitly on a clean stop. Link state is published
//   locally, retained, on convoy/uplink/state.
// - A broken or hostile HQ (protocol errors, refused CONNACK, wrong SUBACK, a downlink flood) is
//   logged and the connection restarted with backoff. No handler ever throws.
// - Uplink PUBLISH bypasses MQTT.js: the forwarder's records are encoded with our own codec
//   straight into one buffer per event-loop turn and written to the connection in one call, and
//   their acknowledgements (PUBACK; PUBREC and PUBCOMP, answered with PUBREL, for QoS 2) are taken
//   out of the inbound bytes before MQTT.js sees them (the connection is our HqStream,
//   hq-stream.ts, given to MQTT.js as its stream). MQTT.js still owns the protocol (CONNECT,
//   SUBSCRIBE, keepalive, the downlink) and hands out packet ids from the same PacketIds
//   allocator, below the QoS 2 records' own range (qos2-ids.ts), so ids never collide. Why:
//   MQTT.js spends about 10 µs of CPU per publish (option cloning, its outgoing store, a write per
//   packet part), more than the rest of the uplink; and a QoS 2 record must keep its packet id
//   across connections, which a new MQTT.js client per connection cannot do.
import { readFileSync } from 'node:fs';
import mqtt, { type IClientOptions, type IConnackPacket, type IPublishPacket, type IStore, type MqttClient } from 'mqtt';
import type { Logger } from '../diagnostics/log.js';
import type { InternalPublish } from '../broker/message.js';
import { PacketType, type Properties, type QoS, type UserProperties } from '../mqtt/packets.js';
import type { UplinkConfig } from '../config/schema.js';
import { Backoff } from './backoff.js';
import { expandGateway } from './routes.js';
import type { ForwarderLink, NumberedDone } from './forwarder.js';
import { writeAck, writePublish, writePublishNumbered, type NumberedSource, type NumberedUserProperties, type PublishSource } from '../mqtt/codec/encode.js';
import { OutBuffer } from '../mqtt/codec/out-buffer.js';
import { AckTap, HqStream, PUBACK, PUBCOMP, PUBREC, type HqSocketOptions } from './hq-stream.js';
import { QOS2_ID_BASE } from './qos2-ids.js';
import { ConnectionIncomingStore, MemoryIncomingQos2Store, type IncomingQos2Store } from './incoming-qos2.js';
import { OutgoingTopicAliases } from './topic-aliases.js';

/**
 * Packet ids of one connection below QOS2_ID_BASE (the ids above are the QoS 2 records', see
 * qos2-ids.ts), shared by MQTT.js (as its messageIdProvider) and our own uplink
 * publishes: an id in use by either is never handed out again until released.
 */
export class PacketIds {
  /** 1 where the packet id is in use (a flag per id: cheaper than a Set on every publish). */
  private readonly inUse = new Uint8Array(65536);
  private count = 0;
  private next = 1;
  private last: number | null = null;

  allocate(): number | null {
    // Ids from QOS2_ID_BASE up belong to uplink QoS 2 records (qos2PacketId), never handed out here.
    const top = QOS2_ID_BASE - 1;
    if (this.count >= top) return null;
    let id = this.next;
    while (this.inUse[id] === 1) id = id === top ? 1 : id + 1;
    this.inUse[id] = 1;
    this.count++;
    this.next = id === top ? 1 : id + 1;
    this.last = id;
    return id;
  }

  getLastAllocated(): number | null {
    return this.last;
  }

  register(id: number): boolean {
    // Ids are 1..QOS2_ID_BASE - 1 here; anything else is refused (and would index outside the flags).
    if (!Number.isInteger(id) || id < 1 || id >= QOS2_ID_BASE || this.inUse[id] === 1) return false;
    this.inUse[id] = 1;
    this.count++;
    return true;
  }

  deallocate(id: number): void {
    if (this.inUse[id] !== 1) return;
    this.inUse[id] = 0;
    this.count--;
  }

  clear(): void {
    this.inUse.fill(0);
    this.count = 0;
  }
}

/** An uplink PUBLISH refused by HQ (PUBACK reason code >= 0x80). */
class PublishRefused extends Error {
  constructor(readonly code: number) {
    super(`HQ refused the PUBLISH (reason code 0x${code.toString(16)})`);
    this.name = 'PublishRefused';
  }
}

type ClientOptions = IClientOptions;
type MqttPacket = IPublishPacket;

export const LINK_STATE_TOPIC = 'convoy/uplink/state';
const ACK_CMDS = new Set<string>(['puback', 'pubrec', 'pubcomp', 'suback', 'unsuback']);
/** Sender id of everything the uplink publishes locally; the publish tap ignores it (no loops). */
export const UPLINK_SENDER_ID = '$uplink';

export type LinkState = 'down' | 'connecting' | 'up';

export interface LinkStatus {
  state: LinkState;
  /** "host:port" of the current or last endpoint. */
  endpoint: string;
  /** Date.now() when this state began. */
  since: number;
  /** Failed attempts since the last stable link (the backoff attempt count). */
  attempts: number;
  lastError: string;
}

export interface LinkUpInfo {
  endpoint: string;
  /** HQ's receive maximum (CONNACK property), or 65535 when HQ gives none or speaks 3.1.1. */
  receiveMaximum: number;
  sessionPresent: boolean;
  protocolVersion: 4 | 5;
}

export interface DownlinkMessage {
  topic: string;
  payload: Buffer;
  qos: QoS;
  retain: boolean;
  /** Application properties (MQTT 5), user properties as pairs. */
  properties?: Properties;
  /**
   * Set by the handler: resolves once the message is durably in the local broker. HQ gets its
   * PUBACK (PUBCOMP for QoS 2) only then, so a power cut right after cannot lose an order HQ
   * thinks delivered.
   */
  durable?: Promise<void>;
  /**
   * Set by the link for QoS 2: the handler calls it in the same event-loop turn as it publishes
   * the message locally, so the held copy is deleted in the same commit as the delivery.
   */
  delivered?: () => void;
}

export interface LinkOptions {
  config: UplinkConfig;
  log: Logger;
  /** HQ filters subscribed after every connect ({gateway} already expanded). */
  downlink: ReadonlyArray<{ filter: string; qos: QoS }>;
  /** Where convoy/uplink/state is published (retained); none = not published. */
  broker?: { publishInternal(p: InternalPublish, senderId?: string): void } | null;
  random?: () => number;
  /** More downlink PUBLISHes than this within one second is a flood: the connection restarts. */
  maxDownlinkPerSecond?: number;
  /** How long `stop()` waits for the "offline" status and DISCONNECT to go out. */
  stopTimeoutMs?: number;
  /**
   * Where QoS 2 downlink PUBLISHes wait for their PUBREL (see the header comment); default in
   * memory (lost with the process).
   */
  incomingQos2?: IncomingQos2Store;
}

interface Listeners {
  up: Array<(info: LinkUpInfo) => void>;
  down: Array<(reason: string) => void>;
  message: Array<(m: DownlinkMessage) => void>;
}

/** "host:port" → parts (the schema checked the shape). */
export function parseEndpoint(ep: string): { host: string; port: number } {
  const i = ep.lastIndexOf(':');
  return { host: ep.slice(0, i), port: Number(ep.slice(i + 1)) };
}

/** MQTT.js's received properties → ours (application properties only). */
export function fromMqttJsProperties(p: MqttPacket['properties'] | undefined): Properties | undefined {
  if (!p) return undefined;
  const out: Properties = {};
  if (p.payloadFormatIndicator !== undefined) out.payloadFormatIndicator = p.payloadFormatIndicator ? 1 : 0;
  if (p.messageExpiryInterval !== undefined) out.messageExpiryInterval = p.messageExpiryInterval;
  if (p.contentType !== undefined) out.contentType = p.contentType;
  if (p.responseTopic !== undefined) out.responseTopic = p.responseTopic;
  if (p.correlationData !== undefined) out.correlationData = Buffer.from(p.correlationData);
  if (p.userProperties) {
    const pairs: UserProperties = [];
    for (const [k, v] of Object.entries(p.userProperties)) {
      if (Array.isArray(v)) for (const x of v) pairs.push([k, String(x)]);
      else pairs.push([k, String(v)]);
    }
    if (pairs.length > 0) out.userProperties = pairs;
  }
  return Object.keys(out).length > 0 ? out : undefined;
}

function errorText(err: unknown): string {
  if (err instanceof Error) {
    const code = (err as Error & { code?: unknown }).code;
    return typeof code === 'number' || typeof code === 'string' ? `${err.message} (${code})` : err.message;
  }
  return String(err);
}

/** A whole topic string and payload as the encoder's source. */
function publishSource(topic: string, payload: Buffer): PublishSource {
  return {
    topic, topicLength: Buffer.byteLength(topic), topicBuf: null, topicOffset: 0,
    payloadBuf: payload, payloadStart: 0, payloadEnd: payload.length,
  };
}

/** One of our QoS 2 uplink publishes on the current connection. */
interface ExactlyOnceFlow {
  released: () => void;
  done: (err: Error | null) => void;
  pubrelSent: boolean;
}

export class Link implements ForwarderLink {
  private readonly cfg: UplinkConfig;
  private readonly log: Logger;
  private readonly backoff: Backoff;
  private readonly endpoints: readonly string[];
  private readonly clientId: string;
  private readonly statusTopic: string;
  private readonly version: 4 | 5;
  private readonly floodLimit: number;
  private readonly listeners: Listeners = { up: [], down: [], message: [] };

  private client: MqttClient | null = null;
  /** Packet ids of the current client (see PacketIds). */
  private ids = new PacketIds();
  /** Callbacks of our QoS 1 uplink publishes awaiting PUBACK, indexed by packet id. */
  private readonly pendingAcks = new Array<NumberedDone | undefined>(65536).fill(undefined);
  /** The number a publishNumbered's `done` gets back, by packet id (0 for publish). */
  private readonly pendingNums = new Float64Array(65536);
  /** Our QoS 2 uplink publishes of this connection awaiting PUBREC or PUBCOMP, by packet id. */
  private readonly exactlyOnce = new Map<number, ExactlyOnceFlow>();
  /** Topic aliases of the current connection (publishNumbered; reset on every CONNACK). */
  private readonly aliases = new OutgoingTopicAliases();
  /** Encoded uplink publishes not yet written (one write per event-loop turn). */
  private readonly outgoing = new OutBuffer();
  private flushQueued = false;
  /** Shared by every connection: QoS 2 downlink de-duplication across reconnects within a session. */
  private readonly incomingStore: IncomingQos2Store;
  private st: LinkStatus;
  private started = false;
  private stopped = false;
  private epIndex = 0;
  /** Attempts made in the current round over the endpoint list. */
  private roundTried = 0;
  private retryTimer: NodeJS.Timeout | null = null;
  private attemptTimer: NodeJS.Timeout | null = null;
  private watchdog: NodeJS.Timeout | null = null;
  private lastRx = 0;
  private lastPing = 0;
  private keepaliveMs: number;
  private floodWindowStart = 0;
  private floodCount = 0;
  private readonly counters = { connects: 0, drops: 0, downlink: 0, downlinkUnexpected: 0, floods: 0 };

  constructor(private readonly opts: LinkOptions) {
    this.cfg = opts.config;
    this.log = opts.log;
    this.version = opts.config.protocol_version === 4 ? 4 : 5;
    this.endpoints = opts.config.endpoints;
    this.clientId = expandGateway(opts.config.client_id, opts.config.gateway_id);
    this.statusTopic = expandGateway(opts.config.status_topic, opts.config.gateway_id);
    this.keepaliveMs = opts.config.keepalive_s * 1000;
    this.floodLimit = opts.maxDownlinkPerSecond ?? 1000;
    this.incomingStore = opts.incomingQos2 ?? new MemoryIncomingQos2Store();
    this.backoff = new Backoff({
      initialMs: opts.config.backoff_initial_ms,
      maxMs: opts.config.backoff_max_ms,
      resetAfterMs: opts.config.backoff_reset_ms,
      ...(opts.random ? { random: opts.random } : {}),
    });
    this.st = { state: 'down', endpoint: this.endpoints[0] ?? '', since: Date.now(), attempts: 0, lastError: '' };
  }

  on(event: 'up', fn: (info: LinkUpInfo) => void): this;
  on(event: 'down', fn: (reason: string) => void): this;
  on(event: 'message', fn: (m: DownlinkMessage) => void): this;
  on(event: keyof Listeners, fn: ((info: LinkUpInfo) => void) | ((reason: string) => void) | ((m: DownlinkMessage) => void)): this {
    (this.listeners[event] as Array<typeof fn>).push(fn);
    return this;
  }

  get isUp(): boolean {
    return this.st.state === 'up';
  }

  get protocolVersion(): 4 | 5 {
    return this.version;
  }

  status(): LinkStatus & typeof this.counters & { topicAliases: number } {
    this.backoff.checkStable();
    return { ...this.st, attempts: this.backoff.attempts, ...this.counters, topicAliases: this.st.state === 'up' ? this.aliases.size : 0 };
  }

  start(): void {
    if (this.started) return;
    this.started = true;
    this.publishState();
    this.attempt();
  }

  /**
   * A clean stop: the truck goes offline. Publishes retained "offline" (QoS 1, waited for up to
   * stopTimeoutMs), then DISCONNECT (so HQ discards the will), then closes.
   */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.clearTimers();
    const client = this.client;
    this.client = null;
    const wasUp = this.st.state === 'up';
    if (client) {
      const limit = this.opts.stopTimeoutMs ?? 2000;
      if (wasUp && client.connected) {
        await this.withTimeout(limit, (done) => {
          client.publish(this.statusTopic, 'offline', { qos: 1, retain: true }, () => done());
        });
        await this.withTimeout(limit, (done) => {
          client.end(false, this.version === 5 ? { reasonCode: 0 } : {}, () => done());
        });
      }
      this.destroyClient(client);
    }
    this.setState('down', 'stopped');
    if (wasUp) this.emit('down', 'stopped');
  }

  /**
   * ForwarderLink: one QoS 0/1 PUBLISH to HQ (QoS 2 goes through publishExactlyOnce, which the
   * forwarder uses whenever the link has it). Ignored (callback never runs) when the link is not up.
   */
  publish(topic: string, payload: Buffer, qos: QoS, properties: Properties | undefined, done: (err: Error | null) => void): void {
    const client = this.client;
    if (!client || this.st.state !== 'up') return;
    if (qos === 2) {
      done(new Error('uplink QoS 2 is sent with publishExactlyOnce'));
      return;
    }
    this.publishDirect(client, topic, payload, qos, properties, done);
  }

  /**
   * ForwarderLink: one MQTT 5 QoS 0/1 PUBLISH whose properties are pre-encoded (see
   * NumberedUserProperties), sent like `publish` does. Ignored when the link is not up.
   */
  publishNumbered(src: NumberedSource, qos: 0 | 1, props: NumberedUserProperties, num: number, done: NumberedDone): void {
    const client = this.client;
    if (!client || this.st.state !== 'up') return;
    const id = this.directPacketId(qos, done, num);
    if (id === null) return;
    writePublishNumbered(this.outgoing, src, qos, id, props, num, this.aliases.aliasFor(src.topicBuf, src.topicStart, src.topicEnd));
    this.directWritten(client, qos, done, num);
  }

  /**
   * ForwarderLink: a QoS 2 PUBLISH with the given packet id (qos2PacketId), DUP when it goes again
   * on a resumed session. On PUBREC the link sends PUBREL and calls `released`; `done` runs on
   * PUBCOMP (or on PUBREC with a failure reason code, with the error). False when the link is not
   * up or the id is in use on this connection.
   */
  publishExactlyOnce(
    topic: string, payload: Buffer, properties: Properties | undefined, id: number, dup: boolean,
    released: () => void, done: (err: Error | null) => void,
  ): boolean {
    const client = this.client;
    if (!client || this.st.state !== 'up' || this.exactlyOnce.has(id)) return false;
    this.exactlyOnce.set(id, { released, done, pubrelSent: false });
    writePublish(this.outgoing, this.version, publishSource(topic, payload), 2, false, dup, id, this.version === 5 ? properties : undefined);
    this.queueFlush(client);
    return true;
  }

  /**
   * ForwarderLink: PUBREL for a QoS 2 publish HQ had acknowledged with PUBREC on an earlier
   * connection of the same session; `done` runs on PUBCOMP. False when the link is not up or the
   * id is in use.
   */
  release(id: number, done: (err: Error | null) => void): boolean {
    const client = this.client;
    if (!client || this.st.state !== 'up' || this.exactlyOnce.has(id)) return false;
    this.exactlyOnce.set(id, { released: () => {}, done, pubrelSent: true });
    this.writePubrel(client, id);
    return true;
  }

  private writePubrel(client: MqttClient, id: number): void {
    writeAck(this.outgoing, PacketType.PUBREL, id, this.version);
    this.queueFlush(client);
  }

  /** An acknowledgement the tap offers: ours when it answers one of our publishes. */
  private tappedAck(client: MqttClient, id: number, reasonCode: number, type: number): boolean {
    if (type === PUBACK) return this.directAck(id, reasonCode);
    const flow = this.exactlyOnce.get(id);
    if (flow === undefined) return false;
    if (type === PUBREC) {
      if (flow.pubrelSent) return true; // a repeated PUBREC: our PUBREL is on its way
      if (reasonCode >= 0x80) {
        this.exactlyOnce.delete(id);
        flow.done(new PublishRefused(reasonCode));
        return true;
      }
      flow.pubrelSent = true;
      this.writePubrel(client, id);
      flow.released();
      return true;
    }
    // PUBCOMP. After a PUBREL for a flow begun on an earlier connection, "packet identifier not
    // found" (0x92) means HQ had completed it already: done either way.
    this.exactlyOnce.delete(id);
    flow.done(null);
    return true;
  }

  /** QoS 0/1 with our own encoder (see the header comment). */
  private publishDirect(
    client: MqttClient, topic: string, payload: Buffer, qos: 0 | 1, properties: Properties | undefined, done: (err: Error | null) => void,
  ): void {
    const id = this.directPacketId(qos, done);
    if (id === null) return;
    writePublish(this.outgoing, this.version, publishSource(topic, payload), qos, false, false, id, this.version === 5 ? properties : undefined);
    this.directWritten(client, qos, done);
  }

  /**
   * The packet id of a direct publish: 0 for QoS 0; for QoS 1 a free one, `done` waiting for its
   * PUBACK. Null (`done` called with the error) when every id is in use.
   */
  private directPacketId(qos: 0 | 1, done: NumberedDone, num = 0): number | null {
    if (qos === 0) return 0;
    const id = this.ids.allocate();
    if (id === null) {
      done(new Error('no free packet id'), num);
      return null;
    }
    this.pendingAcks[id] = done;
    this.pendingNums[id] = num;
    return id;
  }

  /** After a direct publish was encoded: one flush per event-loop turn; QoS 0 is done once written. */
  private directWritten(client: MqttClient, qos: 0 | 1, done: NumberedDone, num = 0): void {
    this.queueFlush(client);
    if (qos === 0) done(null, num);
  }

  /** One flush of the encoded publishes per event-loop turn. */
  private queueFlush(client: MqttClient): void {
    if (!this.flushQueued) {
      this.flushQueued = true;
      queueMicrotask(() => this.flushOutgoing(client));
    }
  }

  private flushOutgoing(client: MqttClient): void {
    this.flushQueued = false;
    const chunks = this.outgoing.take();
    if (chunks.length === 0 || this.client !== client) return;
    const stream = client.stream;
    if (!(stream instanceof HqStream) || stream.destroyed) return;
    stream.write(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks));
  }

  /** A PUBACK for one of our direct publishes (from PubackTap). False when the id is not ours. */
  private directAck(id: number, reasonCode: number): boolean {
    const done = this.pendingAcks[id];
    if (done === undefined) return false;
    this.pendingAcks[id] = undefined;
    this.ids.deallocate(id);
    done(reasonCode >= 0x80 ? new PublishRefused(reasonCode) : null, this.pendingNums[id]!);
    return true;
  }

  bufferedBytes(): number {
    const s = this.client?.stream;
    const queued = s instanceof HqStream ? s.bufferedBytes : 0;
    return queued + this.outgoing.length;
  }

  // --- the connection loop --------------------------------------------------------------------

  private emit(event: 'up', arg: LinkUpInfo): void;
  private emit(event: 'down', arg: string): void;
  private emit(event: 'message', arg: DownlinkMessage): void;
  private emit(event: keyof Listeners, arg: LinkUpInfo | string | DownlinkMessage): void {
    for (const fn of this.listeners[event] as Array<(a: unknown) => void>) {
      try {
        fn(arg);
      } catch (err) {
        this.log.error({ err, event }, 'uplink: link listener failed');
      }
    }
  }

  private withTimeout(ms: number, start: (done: () => void) => void): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(resolve, ms);
      try {
        start(() => {
          clearTimeout(t);
          resolve();
        });
      } catch {
        clearTimeout(t);
        resolve();
      }
    });
  }

  private setState(state: LinkState, lastError?: string): void {
    const changed = state !== this.st.state;
    if (changed) this.st.since = Date.now();
    this.st.state = state;
    if (lastError !== undefined) this.st.lastError = lastError;
    this.publishState();
  }

  private publishState(): void {
    const b = this.opts.broker;
    if (!b) return;
    try {
      b.publishInternal({
        topic: LINK_STATE_TOPIC,
        payload: JSON.stringify({
          state: this.st.state,
          endpoint: this.st.endpoint,
          since: new Date(this.st.since).toISOString(),
          attempts: this.backoff.attempts,
          lastError: this.st.lastError,
        }),
        qos: 0,
        retain: true,
      }, UPLINK_SENDER_ID);
    } catch (err) {
      this.log.warn({ err }, 'uplink: cannot publish the link state locally');
    }
  }

  private loadTls(): { ca?: Buffer; cert?: Buffer; key?: Buffer } {
    // Read at every attempt until it works: a certificate renewed on disk is picked up.
    const t = this.cfg.tls;
    const out: { ca?: Buffer; cert?: Buffer; key?: Buffer } = {};
    if (t.ca) out.ca = readFileSync(t.ca);
    if (t.cert) out.cert = readFileSync(t.cert);
    if (t.key) out.key = readFileSync(t.key);
    return out;
  }

  /** MQTT.js's options (the connection itself is HqStream's, see socketOptions). */
  private clientOptions(endpoint: string): ClientOptions {
    const { host, port } = parseEndpoint(endpoint);
    const c = this.cfg;
    const o: ClientOptions = {
      host,
      port,
      protocol: c.tls.enabled ? 'mqtts' : 'mqtt',
      protocolVersion: this.version,
      clientId: this.clientId,
      clean: false,
      keepalive: c.keepalive_s,
      connectTimeout: c.connect_timeout_ms,
      reconnectPeriod: 0,
      resubscribe: false,
      queueQoSZero: false,
      will: { topic: this.statusTopic, payload: Buffer.from('offline'), qos: 1, retain: true },
    };
    if (c.username) o.username = c.username;
    if (c.password) o.password = c.password;
    if (this.version === 5) o.properties = { sessionExpiryInterval: c.session_expiry_s };
    return o;
  }

  /** Where and how HqStream connects: TCP, or TLS with the configured CA, client certificate and name. */
  private socketOptions(endpoint: string): HqSocketOptions {
    const { host, port } = parseEndpoint(endpoint);
    const t = this.cfg.tls;
    if (!t.enabled) return { host, port };
    return { host, port, tls: { ...this.loadTls(), ...(t.servername ? { servername: t.servername } : {}) } };
  }

  private attempt(): void {
    this.retryTimer = null;
    if (this.stopped) return;
    const endpoint = this.endpoints[this.epIndex] ?? this.endpoints[0] ?? '';
    this.st.endpoint = endpoint;
    this.setState('connecting');
    this.roundTried++;
    let client: MqttClient;
    try {
      // A fresh connection: ids and acks of the last one mean nothing any more (the forwarder
      // sends its in-flight records again).
      this.ids = new PacketIds();
      this.pendingAcks.fill(undefined);
      this.exactlyOnce.clear();
      this.outgoing.take();
      const socket = this.socketOptions(endpoint);
      // PUBACKs of our direct publishes are matched in the stream, before MQTT.js (hq-stream.ts).
      const tap = new AckTap(
        (id, reasonCode, type) => this.client === client && this.tappedAck(client, id, reasonCode, type),
        [PUBACK, PUBREC, PUBCOMP],
      );
      const onData = (): void => {
        if (this.client === client) this.lastRx = Date.now();
      };
      client = new mqtt.MqttClient(() => new HqStream(socket, tap, onData), {
        ...this.clientOptions(endpoint),
        messageIdProvider: this.ids,
        incomingStore: this.incomingStoreFor(() => client),
      });
      // (mqtt.connect() adds one too: an 'error' before ours is attached must not throw.)
      client.on('error', () => {});
    } catch (err) {
      // Bad TLS files, an invalid option: counts as a failed attempt.
      this.failed(null, errorText(err));
      return;
    }
    this.client = client;
    // MQTT.js calls handleMessage after emitting 'message' and sends PUBACK when it calls back:
    // hold the acknowledgement until the local copy is committed.
    client.handleMessage = (_packet, callback): void => {
      const durable = this.lastDurable;
      this.lastDurable = undefined;
      if (!durable) return callback();
      durable.then(() => callback(), (err: unknown) => callback(err instanceof Error ? err : new Error(String(err))));
    };
    this.lastRx = Date.now();
    this.floodCount = 0;
    this.floodWindowStart = this.lastRx;
    const current = (): boolean => this.client === client;

    client.on('packetreceive', (packet) => {
      if (!current()) return;
      this.lastRx = Date.now();
      if (packet.cmd === 'publish') this.countDownlink(client);
      else if (ACK_CMDS.has(packet.cmd)) {
        // MQTT.js ignores an ack for a packet id it never sent: for us that is a broken HQ.
        const id = (packet as { messageId?: number }).messageId;
        if (id === undefined || client.outgoing[id] === undefined) this.failed(client, `HQ sent ${packet.cmd} for unknown packet id ${id}`);
      }
    });
    client.on('connect', (connack) => {
      if (!current()) return;
      try {
        this.connected(client, connack);
      } catch (err) {
        this.failed(client, `after CONNACK: ${errorText(err)}`);
      }
    });
    client.on('message', (topic, payload, packet) => {
      if (!current()) return;
      this.received(topic, payload, packet);
    });
    client.on('disconnect', (packet) => {
      if (!current()) return;
      this.failed(client, `HQ sent DISCONNECT${packet.reasonCode !== undefined ? ` (reason 0x${packet.reasonCode.toString(16)})` : ''}`);
    });
    client.on('error', (err) => {
      // Also after the client was abandoned: an 'error' without a listener would throw.
      if (!current()) return;
      this.failed(client, errorText(err));
    });
    client.on('close', () => {
      if (!current()) return;
      this.failed(client, this.st.state === 'up' ? 'connection lost' : 'connection closed before it was up');
    });
    const stream = client.stream;
    if (stream instanceof HqStream) {
      stream.socket.setKeepAlive(true, Math.max(1000, Math.floor(this.keepaliveMs / 2)));
      stream.socket.setNoDelay(true);
    }
    // Covers TCP, TLS, CONNACK and the "online" status ack that completes "up".
    this.attemptTimer = setTimeout(() => {
      this.attemptTimer = null;
      if (current() && this.st.state !== 'up') this.failed(client, `connect timeout (${this.cfg.connect_timeout_ms} ms)`);
    }, this.cfg.connect_timeout_ms + 100);
  }

  /**
   * The incoming store as one client sees it: a put that failed restarts the connection instead
   * of letting MQTT.js send PUBREC (HQ sends the PUBLISH again on the next connection).
   */
  private incomingStoreFor(client: () => MqttClient): IStore {
    return new ConnectionIncomingStore(this.incomingStore, (packetId, err) => {
      const c = client();
      if (this.client !== c) return;
      this.log.error({ err: err.message, packetId }, 'uplink: a QoS 2 order from HQ could not be stored; PUBREC withheld');
      this.failed(c, `QoS 2 order (packet id ${packetId}) could not be stored: ${err.message}`);
    });
  }

  private connected(client: MqttClient, connack: IConnackPacket): void {
    const props = this.version === 5 ? connack.properties : undefined;
    const receiveMaximum = props?.receiveMaximum && props.receiveMaximum > 0 ? props.receiveMaximum : 65535;
    // A new connection: HQ knows none of our aliases [MQTT-3.3.2-7]; it takes at most its maximum.
    this.aliases.reset(Math.min(this.cfg.topic_alias_max, props?.topicAliasMaximum ?? 0));
    this.keepaliveMs = (props?.serverKeepAlive !== undefined && props.serverKeepAlive > 0 ? props.serverKeepAlive : this.cfg.keepalive_s) * 1000;
    if (!connack.sessionPresent && this.incomingStore.size > 0) {
      // A new session at HQ: QoS 2 orders of the old one will never see their PUBREL.
      this.log.warn({ orders: this.incomingStore.size }, 'uplink: HQ has no session for us: dropping QoS 2 orders that waited for PUBREL');
      this.incomingStore.clear();
    }
    this.startWatchdog(client);
    // Downlink filters after every connect: the session may have been lost.
    if (this.opts.downlink.length > 0) {
      const subs: Record<string, { qos: QoS; nl?: boolean }> = {};
      for (const d of this.opts.downlink) subs[d.filter] = this.version === 5 ? { qos: d.qos, nl: true } : { qos: d.qos };
      client.subscribe(subs, (err, granted) => {
        if (this.client !== client) return;
        if (err) {
          // A SUBACK with the wrong number of codes is an error here (MQTT.js closes the stream).
          this.failed(client, `subscribe: ${errorText(err)}`);
          return;
        }
        for (const g of granted ?? []) {
          if (g.qos >= 0x80) this.log.error({ filter: g.topic, code: g.qos }, 'uplink: HQ refused a downlink subscription');
        }
      });
    }
    // "online" (retained) completes the connect: the forwarder starts after its PUBACK, so the
    // status message never takes a slot of HQ's receive maximum from the forwarder.
    const endpoint = this.st.endpoint;
    client.publish(this.statusTopic, 'online', { qos: 1, retain: true }, (err) => {
      if (this.client !== client || this.stopped) return;
      if (err) this.log.warn({ err: errorText(err) }, 'uplink: HQ refused the online status');
      if (this.attemptTimer) clearTimeout(this.attemptTimer);
      this.attemptTimer = null;
      this.roundTried = 0;
      this.counters.connects++;
      this.backoff.connected();
      this.setState('up', '');
      this.log.info({ endpoint, sessionPresent: connack.sessionPresent, receiveMaximum }, 'uplink: connected to HQ');
      this.emit('up', { endpoint, receiveMaximum, sessionPresent: connack.sessionPresent, protocolVersion: this.version });
    });
  }

  /**
   * Proof of life counts only what HQ sends. One keepalive of silence: a PINGREQ (MQTT.js pings
   * only when its own timer says so). Two keepalives of silence: the link is dead. The timer is
   * armed for the exact deadline, so detection never takes longer than 2× keepalive.
   */
  private startWatchdog(client: MqttClient): void {
    if (this.watchdog) clearTimeout(this.watchdog);
    this.lastRx = Date.now();
    this.lastPing = 0;
    const check = (): void => {
      this.watchdog = null;
      if (this.client !== client) return;
      const now = Date.now();
      const deadAt = this.lastRx + 2 * this.keepaliveMs;
      const pingAt = this.lastRx + this.keepaliveMs;
      if (now >= deadAt) {
        this.failed(client, `no traffic from HQ for ${now - this.lastRx} ms (2× keepalive): link declared dead`);
        return;
      }
      if (now >= pingAt && this.lastPing < this.lastRx) {
        this.lastPing = now;
        try {
          client.sendPing();
        } catch {
          // the deadline decides
        }
      }
      const wake = now < pingAt ? pingAt : deadAt;
      this.watchdog = setTimeout(check, Math.max(1, wake - now));
    };
    this.watchdog = setTimeout(check, this.keepaliveMs);
  }

  private countDownlink(client: MqttClient): void {
    const now = Date.now();
    if (now - this.floodWindowStart >= 1000) {
      this.floodWindowStart = now;
      this.floodCount = 0;
    }
    if (++this.floodCount > this.floodLimit) {
      this.counters.floods++;
      this.failed(client, `downlink flood: more than ${this.floodLimit} messages in one second`);
    }
  }

  private received(topic: string, payload: Buffer, packet: MqttPacket): void {
    this.counters.downlink++;
    const msg: DownlinkMessage = {
      topic,
      // MQTT.js may hand out a slice of its read buffer: the message outlives it.
      payload: Buffer.from(payload),
      qos: packet.qos,
      retain: packet.retain,
    };
    const props = this.version === 5 ? fromMqttJsProperties(packet.properties) : undefined;
    if (props) msg.properties = props;
    const id = packet.messageId;
    if (packet.qos === 2 && id !== undefined) msg.delivered = () => this.incomingStore.release(id);
    this.emit('message', msg);
    this.lastDurable = msg.durable;
  }

  /** The durability promise of the message just emitted, for the next handleMessage call. */
  private lastDurable: Promise<void> | undefined;

  /** Counted by the downlink when a message matched no filter. */
  noteUnexpected(): void {
    this.counters.downlinkUnexpected++;
  }

  /**
   * The current attempt or connection failed: destroy it, report, schedule the next attempt.
   * `client` null = the attempt failed before a client existed.
   */
  private failed(client: MqttClient | null, reason: string): void {
    if (client && this.client !== client) return;
    const wasUp = this.st.state === 'up';
    this.client = null;
    this.clearTimers();
    if (client) this.destroyClient(client);
    if (this.stopped) return;
    this.counters.drops++;
    if (wasUp) {
      this.backoff.disconnected();
      this.log.warn({ endpoint: this.st.endpoint, reason }, 'uplink: link to HQ down');
    } else {
      this.log.warn({ endpoint: this.st.endpoint, reason }, 'uplink: connect to HQ failed');
    }
    this.st.lastError = reason;
    let delay = 0;
    if (wasUp) {
      this.epIndex = 0;
      this.roundTried = 0;
      delay = this.backoff.next();
    } else if (this.roundTried < this.endpoints.length) {
      this.epIndex = (this.epIndex + 1) % this.endpoints.length; // failover: next endpoint now
    } else {
      this.epIndex = 0;
      this.roundTried = 0;
      delay = this.backoff.next();
    }
    this.setState('down', reason);
    if (wasUp) this.emit('down', reason);
    if (this.stopped) return;
    this.retryTimer = setTimeout(() => this.attempt(), delay);
  }

  private destroyClient(client: MqttClient): void {
    try {
      client.end(true);
    } catch {
      // the stream is destroyed below either way
    }
    try {
      // end() does nothing when a graceful end is already under way: make sure the socket goes.
      (client.stream as { destroy?: () => void } | undefined)?.destroy?.();
    } catch {
      // nothing left to do
    }
  }

  private clearTimers(): void {
    if (this.retryTimer) clearTimeout(this.retryTimer);
    if (this.attemptTimer) clearTimeout(this.attemptTimer);
    if (this.watchdog) clearTimeout(this.watchdog);
    this.retryTimer = null;
    this.attemptTimer = null;
    this.watchdog = null;
  }
}
