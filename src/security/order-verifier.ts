// The stateful verifier of signed orders (design and formats: signing.ts).
//
// verify() decides synchronously, in this order: parse → trusted key → signature → gateway id →
// expiry → replay. An accepted order advances the last accepted sequence of its key at once (so an
// identical copy arriving a moment later is already a replay) and returns `durable`, a promise that
// resolves once that sequence is committed to convoy.db: the caller publishes the order on the LAN
// only then. A crash before the commit loses the order, like any downlink message acknowledged to HQ
// before it reached the LAN; nothing was recorded, so HQ may send it again, even with the same
// sequence. The other way round (delivered, sequence not recorded) cannot happen.
//
// Replay state: table signed_order_seq (kid → last accepted seq) in convoy.db, written by
// SqliteReplayStore as a participant of the state store's grouped commits (same transaction, same
// fsync as the broker's own changes). The table comes from the store's migrations (step 6); an
// empty table is a fresh start: no order accepted yet. Without a durable store (store
// disabled, or it could not be opened) MemoryReplayStore keeps the state for the process lifetime
// only, and the verifier says so in the log at start.
//
// Refusals: counted per reason (stats()), logged (at most LOG_PER_WINDOW lines per alarm window, the
// rest summarised) and reported on convoy/alarms/orders: the first refusal of a window raises the
// alarm at once, later ones in the same window are summed into one more alarm at its end, so a
// flood of forgeries costs at most two alarm messages per window.
import type { Broker } from '../broker/broker.js';
import type { UplinkConfig } from '../config/schema.js';
import type { Properties } from '../mqtt/packets.js';
import type { Logger } from '../diagnostics/log.js';
import { raiseAlarm, type Alarm } from '../diagnostics/alarms.js';
import { SqliteStateStore, type CommitParticipant, type WriteBatch } from '../store/sqlite-state-store.js';
import {
  decodeEnvelope,
  hasDetachedSignature,
  parseDetached,
  SigningFormatError,
  verifyFields,
  type SignedOrder,
} from './signing.js';
import { loadTrustedKeys, type TrustedKey } from './keys.js';

export const ORDER_REJECT_REASONS = [
  'malformed',
  'unknown_key',
  'bad_signature',
  'wrong_gateway',
  'expired',
  'replayed',
  'store_error',
] as const;
export type OrderRejectReason = (typeof ORDER_REJECT_REASONS)[number];

export const ORDERS_ALARM = 'orders';
const LOG_PER_WINDOW = 20;

// ---- replay state ----

export interface ReplayStore {
  /** Whether recorded sequences survive a restart. */
  readonly durable: boolean;
  /** Last accepted sequence for a key (recorded but not yet committed included); 0 if none. */
  last(kid: string): number;
  /** Records `seq` (greater than last(kid)) as the last accepted; resolves once durable. */
  record(kid: string, seq: number): Promise<void>;
}

export class MemoryReplayStore implements ReplayStore {
  readonly durable = false;
  private readonly seqs = new Map<string, number>();

  last(kid: string): number {
    return this.seqs.get(kid) ?? 0;
  }

  record(kid: string, seq: number): Promise<void> {
    this.seqs.set(kid, Math.max(seq, this.last(kid)));
    return Promise.resolve();
  }
}

/** The replay state in convoy.db, committed with the state store's grouped commits. */
export class SqliteReplayStore implements ReplayStore, CommitParticipant {
  readonly durable = true;
  private readonly committedSeqs = new Map<string, number>();
  private readonly pending = new Map<string, number>();
  /** Sealed into a commit, not confirmed yet (kept across a failed commit, which is retried). */
  private readonly sealed = new Map<string, number>();
  private readonly upsert: number;
  private readonly detach: () => void;

  constructor(private readonly state: SqliteStateStore) {
    // The table comes from the schema migrations (migrations.ts).
    const db = state.db;
    for (const r of db.prepare('SELECT kid, last_seq FROM signed_order_seq').all() as Array<{ kid: string; last_seq: number }>) {
      this.committedSeqs.set(r.kid, r.last_seq);
    }
    this.upsert = state.statement(
      'INSERT INTO signed_order_seq (kid, last_seq, accepted_at) VALUES (?, ?, ?) ' +
        'ON CONFLICT (kid) DO UPDATE SET last_seq = max(last_seq, excluded.last_seq), accepted_at = excluded.accepted_at',
    );
    this.detach = state.attachParticipant(this);
  }

  last(kid: string): number {
    return Math.max(this.pending.get(kid) ?? 0, this.sealed.get(kid) ?? 0, this.committedSeqs.get(kid) ?? 0);
  }

  record(kid: string, seq: number): Promise<void> {
    this.pending.set(kid, Math.max(seq, this.last(kid)));
    // The commit that settles this promise has confirmed the sealed work (committed() runs before
    // promise callbacks), unless the store dropped us in between (closing): check, never assume.
    return this.state.commit().then(() => {
      if ((this.committedSeqs.get(kid) ?? 0) < seq) throw new Error(`sequence ${seq} of key ${kid} was not committed`);
    });
  }

  /** Stops taking part in commits (the store itself is closed by its owner). */
  close(): void {
    this.detach();
  }

  // ---- the participant ----

  get hasPending(): boolean {
    return this.pending.size > 0;
  }

  seal(batch: WriteBatch): void {
    const now = Date.now();
    for (const [kid, seq] of this.pending) {
      batch.run(this.upsert, kid, seq, now);
      this.sealed.set(kid, Math.max(seq, this.sealed.get(kid) ?? 0));
    }
    this.pending.clear();
  }

  committed(): void {
    for (const [kid, seq] of this.sealed) this.committedSeqs.set(kid, Math.max(seq, this.committedSeqs.get(kid) ?? 0));
    this.sealed.clear();
  }
}

/** The durable replay store when the broker has a SQLite store, else an in-memory one. */
export function replayStoreFor(store: unknown): ReplayStore {
  return store instanceof SqliteStateStore ? new SqliteReplayStore(store) : new MemoryReplayStore();
}

// ---- the verifier ----

export interface IncomingOrder {
  /** Topic as received from HQ. */
  topic: string;
  payload: Buffer;
  properties?: Properties;
}

export type Verdict =
  | {
      ok: true;
      kid: string;
      seq: number;
      /** What to deliver: the payload (unwrapped from an envelope) and the message's properties. */
      payload: Buffer;
      properties?: Properties;
      /** Resolves once the sequence is durable: deliver then. Rejects on a store failure: drop it. */
      durable: Promise<void>;
    }
  | { ok: false; reason: OrderRejectReason; detail: string };

export interface OrderVerifierOptions {
  gatewayId: string;
  keys: readonly TrustedKey[];
  replay: ReplayStore;
  /** Tolerance for the truck's clock being behind/ahead when checking the expiry. */
  maxClockSkewS: number;
  log: Logger;
  /** Raises convoy/alarms/orders (raiseAlarm bound to the broker); none = log only. */
  alarm?: (a: Alarm) => void;
  /** Alarm window (default 60 s). */
  alarmIntervalMs?: number;
  /** Clock in ms (tests). */
  now?: () => number;
}

export interface OrderVerifierStats {
  accepted: number;
  rejected: Record<OrderRejectReason, number>;
  /** Alarm messages published / refusals folded into a later summary alarm. */
  alarms: number;
  alarmsSuppressed: number;
  trustedKeys: number;
  durable: boolean;
}

function zeroCounts(): Record<OrderRejectReason, number> {
  return Object.fromEntries(ORDER_REJECT_REASONS.map((r) => [r, 0])) as Record<OrderRejectReason, number>;
}

export class OrderVerifier {
  private keys = new Map<string, TrustedKey>();
  private readonly now: () => number;
  private readonly alarmIntervalMs: number;
  private readonly counts = zeroCounts();
  private accepted = 0;
  private alarmsRaised = 0;
  private alarmsSuppressed = 0;
  /** The current alarm window: its start, refusals in it after the first, log lines written. */
  private windowStart = -Infinity;
  private windowSuppressed = zeroCounts();
  private windowLogged = 0;
  private summaryTimer: NodeJS.Timeout | null = null;
  /** Re-reads the trusted keys from where they came from (set by createOrderVerifier; call on SIGHUP). */
  reload: () => void = () => {};

  constructor(private readonly opts: OrderVerifierOptions) {
    this.now = opts.now ?? Date.now;
    this.alarmIntervalMs = opts.alarmIntervalMs ?? 60_000;
    this.setKeys(opts.keys);
  }

  /** Replaces the trusted keys (after `convoy keys add/remove` and a reload). */
  setKeys(keys: readonly TrustedKey[]): void {
    this.keys = new Map(keys.map((k) => [k.kid, k]));
  }

  get trustedKeyCount(): number {
    return this.keys.size;
  }

  /** Checks one message from HQ; never throws. See the header comment. */
  verify(m: IncomingOrder): Verdict {
    let order: SignedOrder;
    let claimedGateway: string | undefined;
    const detached = hasDetachedSignature(m.properties);
    try {
      if (detached) {
        const d = parseDetached(m.topic, m.payload, m.properties);
        claimedGateway = d.claimedGateway;
        order = d;
      } else {
        order = decodeEnvelope(m.topic, m.payload);
        claimedGateway = order.gatewayId;
      }
    } catch (err) {
      const why = err instanceof SigningFormatError ? err.message : String(err);
      return this.reject(m.topic, 'malformed', `unsigned or malformed: ${why}`);
    }
    const ref = { kid: order.kid, seq: order.seq };
    const key = this.keys.get(order.kid);
    if (!key) return this.reject(m.topic, 'unknown_key', `signed by a key this gateway does not trust (kid ${order.kid})`, ref);

    const own = this.opts.gatewayId;
    const signedFor = claimedGateway ?? own;
    if (!verifyFields({ ...order, gatewayId: signedFor }, order.signature, key.key)) {
      return this.reject(m.topic, 'bad_signature', `signature does not match (forged, or topic/payload/fields altered), key "${key.name}"`, ref);
    }
    if (signedFor !== own) {
      return this.reject(m.topic, 'wrong_gateway', `validly signed for gateway "${signedFor}", this is "${own}"`, ref);
    }
    const nowS = Math.floor(this.now() / 1000);
    if (order.exp + this.opts.maxClockSkewS < nowS) {
      return this.reject(m.topic, 'expired', `expired at ${new Date(order.exp * 1000).toISOString()}`, ref);
    }
    const last = this.opts.replay.last(order.kid);
    if (order.seq <= last) {
      return this.reject(m.topic, 'replayed', `sequence ${order.seq} is not above ${last}, the last accepted from key "${key.name}"`, ref);
    }
    let durable: Promise<void>;
    try {
      durable = this.opts.replay.record(order.kid, order.seq);
    } catch (err) {
      durable = Promise.reject(err instanceof Error ? err : new Error(String(err)));
    }
    this.accepted++;
    const verdict: Verdict = { ok: true, kid: order.kid, seq: order.seq, payload: detached ? m.payload : order.payload, durable };
    if (m.properties) verdict.properties = m.properties;
    return verdict;
  }

  /**
   * Counts, logs and reports a refusal. Also for the caller's own refusals (store_error when
   * `durable` rejected).
   */
  reject(topic: string, reason: OrderRejectReason, detail: string, ref: { kid?: string; seq?: number } = {}): Verdict {
    this.counts[reason]++;
    const now = this.now();
    const fresh = now - this.windowStart >= this.alarmIntervalMs;
    if (fresh) {
      this.flushSummary();
      if (this.summaryTimer) clearTimeout(this.summaryTimer);
      this.summaryTimer = null;
      this.windowStart = now;
      this.windowLogged = 0;
    }
    if (this.windowLogged < LOG_PER_WINDOW) {
      this.windowLogged++;
      this.opts.log.warn({ topic, reason, ...ref }, `uplink: refused a downlink order: ${detail}; not delivered`);
    }
    if (fresh) {
      this.raise({
        name: ORDERS_ALARM,
        message: `refused a downlink order (${reason}): ${detail}; it was not delivered. Check HQ's signing keys and clocks, or look for tampering on the link.`,
        detail: { reason, topic, ...ref, ...this.totals() },
      });
    } else {
      this.windowSuppressed[reason]++;
      this.alarmsSuppressed++;
      this.summaryTimer ??= setTimeout(() => {
        this.summaryTimer = null;
        this.flushSummary();
      }, Math.max(1, this.windowStart + this.alarmIntervalMs - now));
      this.summaryTimer.unref();
    }
    return { ok: false, reason, detail };
  }

  stats(): OrderVerifierStats {
    return {
      accepted: this.accepted,
      rejected: { ...this.counts },
      alarms: this.alarmsRaised,
      alarmsSuppressed: this.alarmsSuppressed,
      trustedKeys: this.keys.size,
      durable: this.opts.replay.durable,
    };
  }

  /** Stops the summary timer (pending summaries are published now). */
  close(): void {
    this.flushSummary();
    if (this.summaryTimer) clearTimeout(this.summaryTimer);
    this.summaryTimer = null;
    if (this.opts.replay instanceof SqliteReplayStore) this.opts.replay.close();
  }

  private totals(): Record<string, number> {
    const t: Record<string, number> = {};
    for (const r of ORDER_REJECT_REASONS) t[`total_${r}`] = this.counts[r];
    return t;
  }

  /** Publishes one alarm for the refusals folded since the window opened, if any. */
  private flushSummary(): void {
    const n = ORDER_REJECT_REASONS.reduce((s, r) => s + this.windowSuppressed[r], 0);
    if (n === 0) return;
    const by = ORDER_REJECT_REASONS.filter((r) => this.windowSuppressed[r] > 0).map((r) => `${this.windowSuppressed[r]} ${r}`);
    const detail: Record<string, string | number | boolean> = { suppressed: n, ...this.totals() };
    for (const r of ORDER_REJECT_REASONS) if (this.windowSuppressed[r] > 0) detail[`window_${r}`] = this.windowSuppressed[r];
    this.windowSuppressed = zeroCounts();
    if (this.windowLogged >= LOG_PER_WINDOW) this.opts.log.warn({ ...detail }, 'uplink: more downlink orders refused (log lines suppressed)');
    this.raise({
      name: ORDERS_ALARM,
      message: `refused ${n} more downlink orders (${by.join(', ')}); none was delivered`,
      detail,
    });
  }

  private raise(a: Alarm): void {
    this.alarmsRaised++;
    try {
      this.opts.alarm?.(a);
    } catch (err) {
      this.opts.log.error({ err: String(err) }, 'uplink: cannot publish the orders alarm');
    }
  }
}

/**
 * The verifier for a gateway: trusted keys from [uplink.signing] trusted_keys_dir, replay state in
 * the broker's store (durable with SQLite), alarms on the broker. Unusable key files are logged and
 * raise the alarm (they are never trusted); no trusted key at all means every signed route refuses
 * everything (unknown_key), which is logged at start.
 */
export function createOrderVerifier(o: { uplink: UplinkConfig; broker: Broker; log: Logger; now?: () => number }): OrderVerifier {
  const { uplink, broker, log } = o;
  const signing = uplink.signing;
  const alarm = (a: Alarm): void => raiseAlarm(broker, a);
  const replay = replayStoreFor(broker.journal?.store);
  const verifier = new OrderVerifier({
    gatewayId: uplink.gateway_id,
    keys: [],
    replay,
    maxClockSkewS: signing.max_clock_skew_s,
    alarmIntervalMs: signing.alarm_interval_s * 1000,
    log,
    alarm,
    ...(o.now ? { now: o.now } : {}),
  });
  verifier.reload = () => reloadOrderKeys(verifier, signing.trusted_keys_dir, log, alarm);
  verifier.reload();
  if (!replay.durable) {
    log.warn('uplink: no durable store: signed-order replay protection lasts only until the gateway restarts');
  }
  return verifier;
}

/** (Re)loads the trusted keys of a verifier from a directory (at start and on SIGHUP). */
export function reloadOrderKeys(verifier: OrderVerifier, dir: string, log: Logger, alarm?: (a: Alarm) => void): void {
  let set;
  try {
    set = loadTrustedKeys(dir);
  } catch (err) {
    set = { keys: [], problems: [{ file: dir, problem: (err as Error).message }] };
  }
  verifier.setKeys(set.keys);
  for (const p of set.problems) {
    log.error({ file: p.file }, `uplink: trusted key file not used: ${p.problem}`);
    alarm?.({ name: 'order-keys', message: `trusted key file ${p.file} not used: ${p.problem}`, detail: { file: p.file } });
  }
  if (set.keys.length === 0) {
    log.error({ dir }, 'uplink: no trusted HQ key: every order on a verify route will be refused (add one with "convoy keys add")');
  } else {
    log.info({ dir, keys: set.keys.map((k) => `${k.name}:${k.kid}`) }, 'uplink: trusted HQ keys for signed orders');
  }
}
