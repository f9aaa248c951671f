// The forwarder drains the outbox to HQ over the link.
//
// Order: after every (re)connect, first the newest telemetry record per local topic (HQ sees where
// the truck is now), then the backlog with strict priority: always the lowest-seq record of the
// highest non-empty class (alarm > event > telemetry > bulk). The in-flight window is
// min(inflight_window, HQ's receive maximum). A record leaves the outbox only when HQ
// acknowledges it (PUBACK / PUBCOMP; QoS 0 once written). When the link drops, everything in
// flight stays in the outbox and is sent again after the reconnect: HQ may see a record twice,
// but only records that were in flight (at most the window) when the link dropped.
//
// Each message carries the gateway id and its seq: MQTT 5 user properties `gw` and `seq`; for a
// 3.1.1 HQ with sequence_311 = "topic-suffix", the topic gets `/{gw}/{seq}` appended. QoS 0
// messages sent directly (routes with store_qos0 = false) are not in the outbox and carry seq 0.
//
// Pacing (drain_rate_msgs, drain_rate_bytes; 0 = off) is a token bucket with one second of burst,
// applied to the backlog. The newest-per-topic records after a reconnect are not paced, and
// alarms are never held back (they still spend tokens, so they count towards the cap).
import type { Logger } from '../diagnostics/log.js';
import type { Properties, QoS, UserProperties } from '../mqtt/packets.js';
import { OUTBOX_CLASSES, type Outbox, type OutboxClass, type OutboxRecord } from './types.js';
import { encodeEnvelope, signOrder } from '../security/signing.js';
import type { GatewayKey } from '../security/keys.js';
import { NumberedScratch, NumberedUserProperties, type NumberedSource } from '../mqtt/codec/encode.js';
import { qos2PacketId } from './qos2-ids.js';
import { SeqMap } from '../store/seq-map.js';
import { SegmentRow } from '../store/outbox-segment.js';

/** What the forwarder needs from the link (the real one is `Link` in link.ts). */
export interface ForwarderLink {
  /**
   * Sends one PUBLISH. `done` runs once: on PUBACK / PUBCOMP for QoS 1 / 2 (err set when HQ
   * answered with a failure reason code: `(err as {code}).code`), once written for QoS 0, or with
   * an error when the message could not be sent. It may never run when the connection is lost.
   */
  publish(topic: string, payload: Buffer, qos: QoS, properties: Properties | undefined, done: (err: Error | null) => void): void;
  /**
   * Optional, MQTT 5 links only: `publish` at QoS 0/1 with user properties given pre-encoded (the
   * fixed pairs of `props`, then its number key = `num` in decimal), so no properties object is
   * built and walked per message. Topic and payload are byte ranges (`src`, encoded before the
   * call returns): a record read from an outbox segment is its own source, with no string or view
   * made per message. `done` gets `num` back, so one function serves every message. Without it,
   * every message goes through `publish`.
   */
  publishNumbered?(src: NumberedSource, qos: 0 | 1, props: NumberedUserProperties, num: number, done: NumberedDone): void;
  /** Bytes written to the connection but not yet flushed (direct QoS 0 is dropped above a limit). */
  bufferedBytes?(): number;
  /**
   * Optional: QoS 2 with a packet id the forwarder chooses (qos2PacketId of the seq), so that a
   * flow cut by a lost connection can go on with the same id when HQ kept the session. `released`
   * runs when HQ answered PUBREC (the link has sent PUBREL); `done` on PUBCOMP, or with an error
   * (PUBREC with a failure code). False when it cannot be sent now. Without it, QoS 2 goes
   * through `publish` and a cut flow starts again as a new PUBLISH.
   */
  publishExactlyOnce?(
    topic: string, payload: Buffer, properties: Properties | undefined, id: number, dup: boolean,
    released: () => void, done: (err: Error | null) => void,
  ): boolean;
  /** Optional, with publishExactlyOnce: PUBREL for a flow HQ had answered with PUBREC; `done` on PUBCOMP. */
  release?(id: number, done: (err: Error | null) => void): boolean;
}

/** Completion of a publishNumbered: as `done` of publish, with the message's number. */
export type NumberedDone = (err: Error | null, num: number) => void;

type ExactlyOnceLink = ForwarderLink & Required<Pick<ForwarderLink, 'publishExactlyOnce' | 'release'>>;

function hasExactlyOnce(link: ForwarderLink): link is ExactlyOnceLink {
  return link.publishExactlyOnce !== undefined && link.release !== undefined;
}

/** A record as HQ gets it (see Forwarder.message). */
interface UplinkMessage {
  topic: string;
  payload: Buffer;
  props: Properties | undefined;
}

/** A QoS 2 record between its first PUBLISH and HQ's PUBCOMP. */
interface ExactlyOnceRecord {
  rec: OutboxRecord;
  /** HQ answered PUBREC: after a reconnect to the kept session, PUBREL goes, not the PUBLISH. */
  released: boolean;
}

type NumberedLink = ForwarderLink & Required<Pick<ForwarderLink, 'publishNumbered'>>;

function hasPublishNumbered(link: ForwarderLink): link is NumberedLink {
  return link.publishNumbered !== undefined;
}

export interface ForwarderOptions {
  outbox: Outbox;
  link: ForwarderLink;
  gatewayId: string;
  protocolVersion: 4 | 5;
  sequence311: 'topic-suffix' | 'none';
  inflightWindow: number;
  /** Backlog messages per second; 0 = no cap. */
  drainRateMsgs: number;
  /** Backlog bytes (payload + topic) per second; 0 = no cap. */
  drainRateBytes: number;
  /** How many "newest per topic" telemetry records to send first after a reconnect. */
  newestTelemetryLimit?: number;
  /** Records fetched per class per outbox query. */
  batchSize?: number;
  /** Delay before a record HQ refused with a transient reason code is sent again. */
  retryDelayMs?: number;
  /** Direct QoS 0 messages are dropped while more than this is waiting in the socket. */
  directBufferLimit?: number;
  /**
   * Signs records whose local topic it accepts with the gateway key (uplink routes with
   * sign = true), so HQ can verify which truck sent them.
   */
  signer?: UplinkSigner;
  now?: () => number;
  log?: Logger;
}

export interface UplinkSigner {
  key: GatewayKey;
  shouldSign(localTopic: string): boolean;
}

/** Far-future expiry for signed messages without one (the signature format requires one). */
const SIGNED_NO_EXPIRY_S = 10 * 365 * 24 * 3600;

/**
 * The signed form of a record: MQTT 5 adds sig/kid/exp user properties next to gw/seq; 3.1.1
 * wraps the payload in the signed envelope (src/security/signing.ts). The signature covers gateway
 * id, the topic as published at HQ, payload, seq and expiry.
 */
export function signUplink(
  key: GatewayKey, gatewayId: string, topic: string, rec: Pick<OutboxRecord, 'seq' | 'payload' | 'expiresAt' | 'createdAt'>,
  props: Properties | undefined, protocolVersion: 4 | 5,
): { payload: Buffer; props: Properties | undefined } {
  const exp = rec.expiresAt > 0 ? Math.ceil(rec.expiresAt / 1000) : Math.ceil(rec.createdAt / 1000) + SIGNED_NO_EXPIRY_S;
  const order = signOrder({ gatewayId, topic, payload: rec.payload, seq: rec.seq, exp, privateKey: key.privateKey });
  if (protocolVersion !== 5) return { payload: encodeEnvelope(order), props };
  const user: UserProperties = [...(props?.userProperties ?? []), ['sig', order.signature.toString('base64')], ['kid', order.kid], ['exp', String(exp)]];
  return { payload: rec.payload, props: { ...props, userProperties: user } };
}

export interface ForwarderStats {
  /** PUBLISHes written from the outbox (re-sends included). */
  sent: number;
  /** Records HQ acknowledged (and that were removed from the outbox). */
  acked: number;
  /** Records sent and not yet acknowledged. */
  inFlight: number;
  /** Seq of the record acknowledged last; 0 before the first. */
  lastAckedSeq: number;
  /** Records that expired between leaving the outbox query and being sent (removed, not sent). */
  expired: number;
  /** Records HQ refused for good (topic invalid, payload format invalid, packet too large): removed. */
  rejected: number;
  /** Records HQ refused for now (quota, not authorized, unspecified): kept and sent again later. */
  retried: number;
  /** Direct (not stored) QoS 0 messages sent, and dropped because the link was down or congested. */
  direct: number;
  directDropped: number;
  /** Current window: min(inflight_window, HQ receive maximum); 0 while the link is down. */
  window: number;
}

/** Topics whose UTF-8 bytes the forwarder keeps for publishNumbered (records not read from a segment). */
const TOPIC_BYTES_MAX = 1024;

/**
 * A refill group is a quarter of the window, at most this many records. 64 rather than 16 with a
 * window of 1,024: drain CPU 0.60-0.74 → 0.52-0.60 s per 100k, lower in 4 of 4 interleaved pairs
 * (fewer socket writes and pump runs); HQ's receive maximum makes most windows 20-32, where the
 * quarter is smaller anyway.
 */
const REFILL_GROUP_MAX = 64;
/** Longest a freed window slot waits for its group to fill. */
const REFILL_WAIT_MS = 1;

/** MQTT 5 reason codes after which sending the same message again cannot succeed. */
const PERMANENT_REFUSALS = new Set([0x90 /* topic name invalid */, 0x95 /* packet too large */, 0x99 /* payload format invalid */]);

/** Token bucket with a one-second burst. `wait` says how long until `cost` may go; `spend` takes it. */
export class TokenBucket {
  private tokens: number;
  private last: number;

  constructor(private readonly ratePerS: number, now: number) {
    this.tokens = ratePerS;
    this.last = now;
  }

  private refill(now: number): void {
    if (now > this.last) {
      this.tokens = Math.min(this.ratePerS, this.tokens + ((now - this.last) * this.ratePerS) / 1000);
    }
    this.last = now;
  }

  /** Milliseconds until `cost` may be spent (0 = now). A cost above the burst waits for a full bucket. */
  wait(cost: number, now: number): number {
    this.refill(now);
    const need = Math.min(cost, this.ratePerS);
    if (this.tokens >= need) return 0;
    return Math.max(1, Math.ceil(((need - this.tokens) * 1000) / this.ratePerS));
  }

  /** Spends `cost` (may go below zero: later messages then wait longer). */
  spend(cost: number, now: number): void {
    this.refill(now);
    this.tokens -= cost;
  }
}

/** The properties HQ gets: the record's own, `gw` and `seq` added, expiry reduced by the wait. */
export function uplinkProperties(rec: Pick<OutboxRecord, 'seq' | 'properties' | 'expiresAt'>, gatewayId: string, now: number): Properties {
  const src = rec.properties;
  const user: UserProperties = [];
  if (src?.userProperties) {
    // gw and seq are ours: a LAN publisher cannot forge them.
    for (const kv of src.userProperties) if (kv[0] !== 'gw' && kv[0] !== 'seq') user.push(kv);
  }
  user.push(['gw', gatewayId], ['seq', String(rec.seq)]);
  const out: Properties = { userProperties: user };
  if (src) {
    if (src.payloadFormatIndicator !== undefined) out.payloadFormatIndicator = src.payloadFormatIndicator;
    if (src.contentType !== undefined) out.contentType = src.contentType;
    if (src.responseTopic !== undefined) out.responseTopic = src.responseTopic;
    if (src.correlationData !== undefined) out.correlationData = src.correlationData;
    if (src.messageExpiryInterval !== undefined) {
      // The message's own expiry, reduced by the time it waited (expiresAt is min(ttl, expiry)).
      const left = rec.expiresAt > 0 ? Math.ceil((rec.expiresAt - now) / 1000) : src.messageExpiryInterval;
      out.messageExpiryInterval = Math.max(1, Math.min(left, src.messageExpiryInterval));
    }
  }
  return out;
}

/** The topic HQ gets: with `/{gw}/{seq}` appended for a 3.1.1 HQ in topic-suffix mode. */
export function uplinkTopic(topic: string, seq: number, gatewayId: string, protocolVersion: 4 | 5, sequence311: 'topic-suffix' | 'none'): string {
  return protocolVersion === 4 && sequence311 === 'topic-suffix' ? `${topic}/${gatewayId}/${seq}` : topic;
}

interface Retry {
  rec: OutboxRecord;
  at: number;
}

/** One class's backlog as the forwarder reads it. */
interface ClassQueue {
  readonly cls: OutboxClass;
  /** Records fetched and not yet sent, in seq order. */
  buf: OutboxRecord[];
  /** Seq of the last record fetched: the next query starts after it. */
  cursor: number;
  /** The last query returned everything there was (until nudge). */
  exhausted: boolean;
}

export class Forwarder {
  private readonly outbox: Outbox;
  private readonly link: ForwarderLink;
  private readonly now: () => number;
  private readonly log: Logger | undefined;
  private readonly batch: number;
  private readonly retryDelayMs: number;
  private readonly newestLimit: number;
  private readonly directLimit: number;
  /**
   * For messages with no properties of their own on an MQTT 5 link (the common case): the link's
   * publishNumbered, and `gw` + `seq` pre-encoded for it. Null when the link has no such method
   * or HQ speaks 3.1.1.
   */
  private readonly numbered: { link: NumberedLink; gwSeq: NumberedUserProperties } | null;
  /**
   * The completion of every publishNumbered of this connection (made at linkUp): the record is
   * found in inFlight by its seq, so no closure is made per message (a sixth of a drain's
   * allocations were those closures).
   */
  private numberedDone: NumberedDone = (): void => {};
  /** The source publishNumbered encodes a record from when the record is not a SegmentRow. */
  private readonly scratch = new NumberedScratch();
  /**
   * UTF-8 bytes of the topics of such records sent lately: a truck sends many messages on few
   * topics, and measuring and encoding the string for each was a tenth of the encoder's time.
   */
  private readonly topicBytes = new Map<string, Buffer>();

  /**
   * Bound on what a crash could make HQ receive twice: records in flight plus records HQ has
   * acknowledged whose removal is not durable yet (see pumpLoop). 4 × inflight_window: at 2 ×,
   * removals waiting for a commit of the steady stream held back sends (-25 % steady uplink, A/B).
   */
  private readonly unconfirmedLimit: number;
  /** Free window slots that make an acknowledgement refill the window at once (see completed). */
  private refillGroup = 1;
  /**
   * Refills a window with fewer free slots than refillGroup after REFILL_WAIT_MS, while
   * refillArmed. One timer for the connection, re-armed with refresh() and left to fire idle when
   * a pump came first: a new Timeout and a clearTimeout per group were a thirtieth of a drain.
   */
  private refillTimer: NodeJS.Timeout | null = null;
  private refillArmed = false;
  private readonly stopWatchingRemovals: () => void;

  private up = false;
  private stopped = false;
  /** Bumped at every link up / down: callbacks of an older connection are ignored. */
  private gen = 0;
  private window = 0;
  /** Sent and not acknowledged, by seq (a SeqMap: an entry in and out per message, no garbage). */
  private readonly inFlight = new SeqMap<OutboxRecord>();
  /**
   * QoS 2 records begun and not completed, by seq (at most a few windows of them). They outlive a
   * lost connection: when HQ kept the session they go on with the same packet id.
   */
  private readonly exactlyOnce = new Map<number, ExactlyOnceRecord>();
  /** Newest-per-topic records still to send after the reconnect, in seq order. */
  private fresh: OutboxRecord[] = [];
  /** Seqs sent in the fresh phase of this connection: the backlog skips them. */
  private readonly freshSent = new Set<number>();
  /**
   * Per class, in priority order: prefetched records and where the outbox query goes on. Fields of
   * one object, not Maps keyed by class: the drain looks them up for every message.
   */
  private readonly queues: readonly ClassQueue[] = OUTBOX_CLASSES.map((cls) => ({ cls, buf: [], cursor: 0, exhausted: false }));
  private retries: Retry[] = [];
  /** Where what peekBacklog returned last came from: a class's queue, or `retries` (null). */
  private peekedQueue: ClassQueue | null = null;
  private msgBucket: TokenBucket | null;
  private byteBucket: TokenBucket | null;
  private pumpScheduled = false;
  private quiesced = false;
  private pumping = false;
  private timer: NodeJS.Timeout | null = null;
  private timerAt = 0;
  private readonly st = { sent: 0, acked: 0, lastAckedSeq: 0, expired: 0, rejected: 0, retried: 0, direct: 0, directDropped: 0 };

  constructor(private readonly opts: ForwarderOptions) {
    this.outbox = opts.outbox;
    this.link = opts.link;
    this.now = opts.now ?? Date.now;
    this.log = opts.log;
    this.batch = Math.max(1, opts.batchSize ?? 64);
    this.retryDelayMs = opts.retryDelayMs ?? 1000;
    this.newestLimit = opts.newestTelemetryLimit ?? 1000;
    this.directLimit = opts.directBufferLimit ?? 256 * 1024;
    const link = opts.link;
    this.numbered = opts.protocolVersion === 5 && hasPublishNumbered(link)
      ? { link, gwSeq: new NumberedUserProperties([['gw', opts.gatewayId]], 'seq') }
      : null;
    const t = this.now();
    this.msgBucket = opts.drainRateMsgs > 0 ? new TokenBucket(opts.drainRateMsgs, t) : null;
    this.byteBucket = opts.drainRateBytes > 0 ? new TokenBucket(opts.drainRateBytes, t) : null;
    this.unconfirmedLimit = 4 * Math.max(1, opts.inflightWindow);
    // Removals became durable: sends held back by the bound may go.
    this.stopWatchingRemovals = opts.outbox.onRemovalsDurable?.(() => {
      if (this.up) this.schedulePump();
    }) ?? ((): void => {});
    this.resetQueues();
  }

  /**
   * The link is up (CONNACK received). `receiveMaximum` is HQ's, or 65535 for 3.1.1;
   * `sessionPresent` whether HQ kept the session (QoS 2 flows then go on where they were).
   */
  linkUp(info: { receiveMaximum: number; sessionPresent?: boolean }): void {
    if (this.stopped) return;
    this.gen++;
    this.up = true;
    this.window = Math.max(1, Math.min(this.opts.inflightWindow, info.receiveMaximum > 0 ? info.receiveMaximum : 65535));
    const gen = this.gen;
    this.numberedDone = (err, seq): void => {
      // Once per record: completed() takes it out of inFlight.
      const rec = this.inFlight.get(seq);
      if (rec !== undefined) this.complete(rec, gen, err);
    };
    this.refillGroup = Math.max(1, Math.min(REFILL_GROUP_MAX, Math.floor(this.window / 4)));
    this.inFlight.clear();
    this.resetQueues();
    this.resumeExactlyOnce(info.sessionPresent === true);
    try {
      this.fresh = this.outbox.newestPerTopic('telemetry', this.newestLimit).slice().sort((a, b) => a.seq - b.seq);
    } catch (err) {
      this.log?.error({ err }, 'uplink: outbox newestPerTopic failed');
      this.fresh = [];
    }
    this.schedulePump();
  }

  /** The link is down: in-flight records stay in the outbox and go again after the reconnect. */
  linkDown(): void {
    this.gen++;
    this.up = false;
    this.window = 0;
    this.inFlight.clear();
    this.resetQueues();
    this.clearTimers();
  }

  /** New records were appended (of `cls`, or of any class). */
  nudge(cls?: OutboxClass): void {
    for (const q of this.queues) if (cls === undefined || q.cls === cls) q.exhausted = false;
    if (this.up) this.schedulePump();
  }

  /**
   * A QoS 0 message that is not stored (route with store_qos0 = false): sent now if the link is
   * up and not congested, else dropped. Carries `gw` and seq 0 (not in the sequence).
   */
  sendDirect(topic: string, payload: Buffer, properties: Properties | undefined): boolean {
    if (!this.up || this.stopped || this.quiesced || (this.link.bufferedBytes?.() ?? 0) > this.directLimit) {
      this.st.directDropped++;
      return false;
    }
    const numbered = this.numbered !== null && properties === undefined;
    const props = !numbered && this.opts.protocolVersion === 5
      ? uplinkProperties({ seq: 0, properties, expiresAt: 0 }, this.opts.gatewayId, this.now())
      : undefined;
    const t = uplinkTopic(topic, 0, this.opts.gatewayId, this.opts.protocolVersion, this.opts.sequence311);
    try {
      if (numbered) this.numbered.link.publishNumbered(this.scratch.set(this.utf8(t), payload), 0, this.numbered.gwSeq, 0, () => undefined);
      else this.link.publish(t, payload, 0, props, () => undefined);
      this.st.direct++;
      return true;
    } catch (err) {
      this.log?.warn({ err, topic }, 'uplink: direct publish failed');
      this.st.directDropped++;
      return false;
    }
  }

  stats(): ForwarderStats {
    return { ...this.st, inFlight: this.inFlight.size, window: this.window };
  }

  /** In-flight seqs (for tests and diagnostics). */
  inFlightSeqs(): number[] {
    return this.inFlight.sortedKeys();
  }

  /** No new sends from now on; acknowledgements still remove records (for a clean stop). */
  quiesce(): void {
    this.quiesced = true;
    this.clearTimers();
  }

  stop(): void {
    this.stopped = true;
    this.stopWatchingRemovals();
    this.linkDown();
  }

  // --- internals ------------------------------------------------------------------------------

  private resetQueues(): void {
    this.fresh = [];
    this.freshSent.clear();
    this.retries = [];
    for (const q of this.queues) {
      q.buf = [];
      q.cursor = 0;
      q.exhausted = false;
    }
  }

  private schedulePump(): void {
    if (this.pumpScheduled || this.stopped) return;
    this.pumpScheduled = true;
    setImmediate(this.scheduledPump);
  }

  /**
   * After HQ's acknowledgements: the next records go out as soon as the chunk of PUBACKs is
   * handled (a microtask), before the event loop runs the deletes' commit and anything else. The
   * window is full while HQ keeps up, so how fast a freed slot is refilled sets the rate.
   */
  private pumpSoon(): void {
    if (this.pumpScheduled || this.stopped) return;
    this.pumpScheduled = true;
    queueMicrotask(this.scheduledPump);
  }

  private readonly scheduledPump = (): void => {
    this.pumpScheduled = false;
    this.pump();
  };

  private clearTimers(): void {
    this.clearRefillTimer();
    this.clearTimer();
  }

  private clearRefillTimer(): void {
    if (this.refillTimer !== null) clearTimeout(this.refillTimer);
    this.refillTimer = null;
    this.refillArmed = false;
  }

  private armRefillTimer(): void {
    if (this.refillArmed) return;
    this.refillArmed = true;
    if (this.refillTimer === null) this.refillTimer = setTimeout(this.onRefillTimer, REFILL_WAIT_MS);
    else this.refillTimer.refresh();
  }

  private clearTimer(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.timerAt = 0;
  }

  /** Wakes the pump at `at` (the earliest of the requested times wins). */
  private wakeAt(at: number): void {
    if (this.timer && this.timerAt <= at) return;
    this.clearTimer();
    this.timerAt = at;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.timerAt = 0;
      this.pump();
    }, Math.max(1, at - this.now()));
    this.timer.unref?.();
  }

  private pump(): void {
    this.refillArmed = false;
    if (!this.up || this.stopped || this.quiesced || this.pumping) return;
    this.pumping = true;
    try {
      this.pumpLoop();
    } catch (err) {
      // The outbox or the link threw: never out of a timer. Try again shortly.
      this.log?.error({ err }, 'uplink: forwarder pump failed');
      if (this.up) this.wakeAt(this.now() + this.retryDelayMs);
    } finally {
      this.pumping = false;
    }
  }

  private pumpLoop(): void {
    const gen = this.gen;
    // The outbox lets removals wait to commit many at once; half-way to the bound they go, so the
    // commit is done before the bound holds sends back.
    if (this.removalsPending() >= this.unconfirmedLimit / 2) this.outbox.flushRemovals?.();
    // In flight at most `window` (HQ's receive maximum). And after a crash, what was in flight is
    // sent again, and so are records HQ acknowledged whose removal had not committed yet: together
    // at most unconfirmedLimit, so a crash duplicates at most that many.
    while (this.up && gen === this.gen && this.inFlight.size < this.window && this.inFlight.size + this.removalsPending() < this.unconfirmedLimit) {
      const now = this.now();
      // 1. After a reconnect: the newest telemetry per topic, unpaced.
      const f = this.fresh.shift();
      if (f) {
        if (this.inFlight.has(f.seq)) continue;
        this.freshSent.add(f.seq);
        this.send(f, now);
        continue;
      }
      // 2. The backlog (and records HQ refused for now, once their delay has passed).
      const rec = this.peekBacklog(now);
      if (!rec) return;
      if (rec.cls !== 'alarm') {
        const wait = this.pacingWait(rec, now);
        if (wait > 0) {
          this.wakeAt(now + wait);
          return;
        }
      }
      const q = this.peekedQueue;
      if (q === null) this.retries.shift();
      else q.buf.shift();
      this.spendPacing(rec, now);
      this.send(rec, now);
    }
  }

  private removalsPending(): number {
    return this.outbox.removalsPending?.() ?? 0;
  }

  /** Bytes a record counts against drain_rate_bytes: payload + topic (UTF-8). */
  private cost(rec: OutboxRecord): number {
    // A record read from a segment knows both lengths: no payload view, no topic string.
    if (rec instanceof SegmentRow) return rec.payloadEnd - rec.payloadStart + (rec.topicEnd - rec.topicStart);
    return rec.payload.length + Buffer.byteLength(rec.topic);
  }

  private pacingWait(rec: OutboxRecord, now: number): number {
    let w = 0;
    if (this.msgBucket) w = Math.max(w, this.msgBucket.wait(1, now));
    if (this.byteBucket) w = Math.max(w, this.byteBucket.wait(this.cost(rec), now));
    return w;
  }

  private spendPacing(rec: OutboxRecord, now: number): void {
    this.msgBucket?.spend(1, now);
    this.byteBucket?.spend(this.cost(rec), now);
  }

  /**
   * The next backlog record without taking it: a due retry, else the head of the highest class
   * (peekedQueue says where from: no object per message for it).
   */
  private peekBacklog(now: number): OutboxRecord | null {
    const r = this.retries[0];
    this.peekedQueue = null;
    if (r) {
      if (r.at <= now) return r.rec;
      this.wakeAt(r.at);
    }
    for (const q of this.queues) {
      const rec = this.headOf(q);
      if (rec) {
        this.peekedQueue = q;
        return rec;
      }
    }
    return null;
  }

  /** Head of a class's queue, refilling from the outbox; skips records in flight or sent fresh. */
  private headOf(q: ClassQueue): OutboxRecord | undefined {
    const fresh = this.freshSent.size > 0;
    for (;;) {
      const buf = q.buf;
      while (buf.length > 0) {
        const head = buf[0]!;
        if (this.inFlight.has(head.seq) || (fresh && this.freshSent.has(head.seq))) {
          buf.shift();
          continue;
        }
        return head;
      }
      if (q.exhausted) return undefined;
      const after = q.cursor;
      const got = this.outbox.next(q.cls, after, this.batch);
      if (got.length === 0) {
        q.exhausted = true;
        return undefined;
      }
      let last = after;
      for (const rec of got) if (rec.seq > last) last = rec.seq;
      // The outbox's array becomes the buffer (it is new on every call): no copy.
      q.buf = got;
      q.cursor = last;
      if (got.length < this.batch) q.exhausted = true;
    }
  }

  private send(rec: OutboxRecord, now: number): void {
    if (rec.expiresAt > 0 && rec.expiresAt <= now) {
      // Expired after the outbox handed it out: never sent, removed.
      this.st.expired++;
      this.outbox.remove(rec.seq);
      return;
    }
    const qos = rec.qos;
    const signed = this.opts.signer?.shouldSign(rec.localTopic) === true;
    // Only gw and seq to send: the pre-encoded path.
    const numbered = this.numbered !== null && rec.properties === undefined && !signed && qos !== 2;
    const m = numbered ? null : this.message(rec, now, signed);
    if (m !== null && qos === 2 && hasExactlyOnce(this.link)) {
      this.sendExactlyOnce(this.link, rec, m);
      return;
    }
    if (numbered) {
      this.inFlight.set(rec.seq, rec);
      this.st.sent++;
      try {
        // (MQTT 5: the topic at HQ is the record's topic, no suffix.)
        const src = rec instanceof SegmentRow ? rec : this.scratch.set(this.utf8(rec.topic), rec.payload);
        this.numbered.link.publishNumbered(src, qos, this.numbered.gwSeq, rec.seq, this.numberedDone);
      } catch (err) {
        this.numberedDone(err instanceof Error ? err : new Error(String(err)), rec.seq);
      }
      return;
    }
    const done = this.sent(rec);
    try {
      if (m !== null) this.link.publish(m.topic, m.payload, qos, m.props, done);
    } catch (err) {
      done(err instanceof Error ? err : new Error(String(err)));
    }
  }

  /** The UTF-8 bytes of a topic, kept for the next message on it. */
  private utf8(topic: string): Buffer {
    let bytes = this.topicBytes.get(topic);
    if (bytes === undefined) {
      // Bounded: a truck whose topics keep changing starts the cache again.
      if (this.topicBytes.size >= TOPIC_BYTES_MAX) this.topicBytes.clear();
      bytes = Buffer.from(topic, 'utf8');
      this.topicBytes.set(topic, bytes);
    }
    return bytes;
  }

  /** What HQ gets for a record: its topic, and its payload and properties, signed where a route says so. */
  private message(rec: OutboxRecord, now: number, signed = this.opts.signer?.shouldSign(rec.localTopic) === true): UplinkMessage {
    const v = this.opts.protocolVersion;
    const topic = uplinkTopic(rec.topic, rec.seq, this.opts.gatewayId, v, this.opts.sequence311);
    const props = v === 5 ? uplinkProperties(rec, this.opts.gatewayId, now) : undefined;
    const signer = this.opts.signer;
    if (signed && signer !== undefined) {
      return { topic, ...signUplink(signer.key, this.opts.gatewayId, topic, rec, props, v) };
    }
    return { topic, payload: rec.payload, props };
  }

  /** Counts a record as sent and in flight; returns the callback that completes it, once. */
  private sent(rec: OutboxRecord): (err: Error | null) => void {
    const gen = this.gen;
    this.inFlight.set(rec.seq, rec);
    this.st.sent++;
    let called = false;
    return (err: Error | null): void => {
      if (called) return;
      called = true;
      this.complete(rec, gen, err);
    };
  }

  /** completed(), never throwing into the link's callback. */
  private complete(rec: OutboxRecord, gen: number, err: Error | null): void {
    try {
      this.completed(rec, gen, err);
    } catch (e) {
      this.log?.error({ err: e, seq: rec.seq }, 'uplink: ack handling failed');
    }
  }

  /**
   * QoS 2 with the packet id of its seq: a first PUBLISH of `msg`; or, with `msg` null, the flow
   * began on an earlier connection of the session HQ kept and goes on: the PUBLISH again with DUP,
   * or PUBREL if HQ had sent PUBREC.
   */
  private sendExactlyOnce(link: ExactlyOnceLink, rec: OutboxRecord, msg: UplinkMessage | null): void {
    const resume = msg === null;
    const id = qos2PacketId(rec.seq);
    for (const other of this.exactlyOnce.values()) {
      if (other.rec.seq !== rec.seq && qos2PacketId(other.rec.seq) === id) {
        // A record QOS2_ID_COUNT seqs older still holds the id: this one waits its turn.
        this.retries.push({ rec, at: this.now() + this.retryDelayMs });
        return;
      }
    }
    const flow = this.exactlyOnce.get(rec.seq) ?? { rec, released: false };
    this.exactlyOnce.set(rec.seq, flow);
    const done = this.sent(rec);
    const gen = this.gen;
    const released = (): void => {
      if (gen === this.gen) flow.released = true;
    };
    try {
      let ok: boolean;
      if (resume && flow.released) ok = link.release(id, done);
      else {
        const m = msg ?? this.message(rec, this.now());
        ok = link.publishExactlyOnce(m.topic, m.payload, m.props, id, resume, released, done);
      }
      if (!ok) done(new Error(`packet id ${id} is not free on this connection`));
    } catch (err) {
      done(err instanceof Error ? err : new Error(String(err)));
    }
  }

  /**
   * After a reconnect: with the session kept, the QoS 2 flows cut by the lost connection go on
   * first, with their ids; without it HQ knows none of them, and they go again as new PUBLISHes
   * with the backlog (a PUBREL there would complete a message HQ never got).
   */
  private resumeExactlyOnce(sessionPresent: boolean): void {
    if (!sessionPresent || !hasExactlyOnce(this.link)) {
      this.exactlyOnce.clear();
      return;
    }
    const link = this.link;
    const entries = [...this.exactlyOnce.values()].sort((a, b) => a.rec.seq - b.rec.seq);
    for (const e of entries) this.sendExactlyOnce(link, e.rec, null);
  }

  private completed(rec: OutboxRecord, gen: number, err: Error | null): void {
    if (gen !== this.gen) return; // an older connection: the record goes again on this one
    this.inFlight.delete(rec.seq);
    // PUBCOMP, or a PUBREC that refused: HQ's flow for this id is over either way.
    if (rec.qos === 2) this.exactlyOnce.delete(rec.seq);
    if (!err) {
      this.outbox.remove(rec.seq);
      this.st.acked++;
      this.st.lastAckedSeq = rec.seq;
    } else {
      const code = (err as Error & { code?: unknown }).code;
      if (typeof code === 'number' && PERMANENT_REFUSALS.has(code)) {
        this.log?.warn({ seq: rec.seq, topic: rec.topic, code }, 'uplink: HQ refused the message for good; dropped');
        this.st.rejected++;
        this.outbox.remove(rec.seq);
      } else {
        this.log?.warn({ seq: rec.seq, topic: rec.topic, code, err: err.message }, 'uplink: HQ refused the message for now; will retry');
        this.st.retried++;
        this.retries.push({ rec, at: this.now() + this.retryDelayMs });
      }
    }
    // Refill in groups: a socket write (and a wake-up of HQ) per group of records, not per
    // acknowledgement: about a quarter less truck CPU per drained message on loopback, together
    // with removals committed in groups (bench A/B). A slow link is not held back for long: a
    // group that does not fill goes after REFILL_WAIT_MS.
    if (this.inFlight.size === 0 || this.window - this.inFlight.size >= this.refillGroup) this.pumpSoon();
    else this.armRefillTimer();
  }

  private readonly onRefillTimer = (): void => {
    if (this.refillArmed) this.pump();
  };
}
