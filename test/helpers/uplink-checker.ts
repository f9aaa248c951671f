// Checks what HQ received against what the LAN side had accepted (pure: no I/O, no clock).
//
// Inputs:
//  - accepted: every LAN message Convoy acknowledged (PUBACK/PUBREC), with its priority class and
//    the order in which the test saw it accepted (`localSeq`, increasing), optionally marked as
//    dropped on purpose by the outbox (evicted or expired: then it is not lost, and its gateway
//    sequence number may be missing at HQ);
//  - received: every message HQ's subscriber got, in arrival order, with topic, payload and, for
//    an MQTT 5 HQ, the user properties `gw` and `seq`; for a 3.1.1 HQ the topic ends in
//    `/{gw}/{seq}` (uplink.sequence_311 = "topic-suffix").
//
// It reports:
//  - lost: accepted, not dropped on purpose, never received;
//  - duplicates: extra deliveries of a message; allowed only after a reconnect, at most
//    `window` per reconnect (what was in flight when the link went away);
//  - order violations within a class (first deliveries must follow `localSeq`), except that after
//    each link-up the newest message per topic of a "newest first" class (telemetry) may overtake
//    its class's backlog: one burst per link-up, at most one message per topic, each the newest of
//    its topic delivered so far;
//  - sequence gaps per gateway: the seqs received must be contiguous, except for as many holes as
//    messages of that gateway were evicted or expired.
// Received messages whose key matches no accepted message (a publish Convoy stored but whose
// PUBACK the publisher never saw, or traffic of other tests) are listed as `unknown`, not failures.

export type UplinkClass = 'alarm' | 'event' | 'telemetry' | 'bulk';

export interface AcceptedMessage {
  /** What identifies the message at HQ: by default its payload as UTF-8 (see CheckOptions.keyOf). */
  key: string;
  cls: UplinkClass;
  /** Acceptance order on the LAN side: increasing in the order PUBACKs arrived (or were awaited). */
  localSeq: number;
  /** Gateway that accepted it; needed only with several gateways. */
  gateway?: string;
  /** The outbox dropped it on purpose (and counted it): not lost; its seq may be missing at HQ. */
  dropped?: 'evicted' | 'expired';
  /** performance.now() when it was accepted (for orderWithNewestFirst in uplink-scene.ts). */
  at?: number;
}

export interface ReceivedMessage {
  topic: string;
  payload: Buffer | Uint8Array | string;
  /** MQTT 5 user properties as mqtt.js gives them (`packet.properties.userProperties`). */
  userProperties?: Readonly<Record<string, string | readonly string[]>>;
  /** performance.now() when it arrived (for orderWithNewestFirst in uplink-scene.ts). */
  at?: number;
}

export interface CheckOptions {
  /** Key of a received message, matched against AcceptedMessage.key. Default: payload as UTF-8. */
  keyOf?: (m: ReceivedMessage, parsed: ParsedReceived) => string;
  /** How gw/seq travel: 5 = user properties, 4 = topic suffix, 'auto' (default) = properties if present. */
  protocol?: 4 | 5 | 'auto';
  /** Uplink reconnects during the run (link-ups after the first, restarts of Convoy included). Default 0. */
  reconnects?: number;
  /** In-flight window towards HQ: duplicates allowed per reconnect. Default 64. */
  window?: number;
  /** Classes whose newest message per topic may go first after a link-up. Default ["telemetry"]. */
  newestFirstClasses?: readonly UplinkClass[];
  /** Link-ups during the run (bursts of newest-first allowed). Default reconnects + 1. */
  linkUps?: number;
  /** Expected first seq per gateway; holes before the lowest received seq then count as gaps. */
  firstSeq?: Readonly<Record<string, number>>;
  /** Received messages to leave out entirely (e.g. the retained status topic). */
  ignore?: (m: ReceivedMessage) => boolean;
}

/** Gateway id and sequence number of a received message, and its topic without a 3.1.1 suffix. */
export interface ParsedReceived {
  topic: string;
  gateway: string | undefined;
  seq: number | undefined;
}

export interface OrderViolation {
  cls: UplinkClass;
  /** The message that arrived too late... */
  key: string;
  localSeq: number;
  /** ...after this one, accepted after it. */
  afterKey: string;
  afterLocalSeq: number;
}

export interface GatewaySeqReport {
  /** Distinct seqs received. */
  received: number;
  min: number;
  max: number;
  /** Seqs between the expected first (or the lowest received) and the highest that never arrived. */
  missing: number[];
  /** Holes allowed: messages of this gateway evicted or expired. */
  allowedMissing: number;
}

export interface UplinkReport {
  ok: boolean;
  /** One line per failed property, for assertion messages. */
  problems: string[];
  accepted: number;
  /** Messages received (after `ignore`), duplicates included. */
  received: number;
  /** Accepted messages received at least once. */
  delivered: number;
  /** Keys of accepted messages never received (dropped ones excluded). */
  lost: string[];
  /** Accepted messages marked as evicted or expired. */
  dropped: number;
  /** Extra deliveries in total, and how many were allowed. */
  duplicates: number;
  duplicatesAllowed: number;
  duplicateKeys: string[];
  /** Keys delivered more than once with different seqs (stored twice, e.g. a LAN retransmission). */
  reSequenced: string[];
  orderViolations: OrderViolation[];
  /** Keys allowed to overtake their class as "newest per topic" after a link-up. */
  newestFirst: string[];
  gateways: Record<string, GatewaySeqReport>;
  /** Received messages that carry no gateway/seq. */
  unsequenced: number;
  /** Keys of received messages that match no accepted message. */
  unknown: string[];
}

const NEWEST_FIRST_DEFAULT: readonly UplinkClass[] = ['telemetry'];

function firstValue(v: string | readonly string[] | undefined): string | undefined {
  if (v === undefined) return undefined;
  return typeof v === 'string' ? v : v[0];
}

function parseSeq(s: string | undefined): number | undefined {
  if (s === undefined || !/^\d+$/.test(s)) return undefined;
  const n = Number(s);
  return Number.isSafeInteger(n) ? n : undefined;
}

/** Reads gw/seq from user properties (MQTT 5) or the `/{gw}/{seq}` topic suffix (3.1.1). */
export function parseReceived(m: ReceivedMessage, protocol: 4 | 5 | 'auto' = 'auto'): ParsedReceived {
  const props = m.userProperties;
  const useProps = protocol === 5 || (protocol === 'auto' && props !== undefined && props.seq !== undefined);
  if (useProps) {
    return { topic: m.topic, gateway: firstValue(props?.gw), seq: parseSeq(firstValue(props?.seq)) };
  }
  const levels = m.topic.split('/');
  if (levels.length >= 3) {
    const seq = parseSeq(levels[levels.length - 1]);
    const gw = levels[levels.length - 2];
    if (seq !== undefined && gw !== undefined && gw !== '') {
      return { topic: levels.slice(0, -2).join('/'), gateway: gw, seq };
    }
  }
  return { topic: m.topic, gateway: undefined, seq: undefined };
}

function payloadText(p: Buffer | Uint8Array | string): string {
  return typeof p === 'string' ? p : Buffer.from(p.buffer, p.byteOffset, p.byteLength).toString('utf8');
}

interface Delivery {
  key: string;
  acc: AcceptedMessage;
  topic: string;
}

export function checkUplink(
  accepted: readonly AcceptedMessage[],
  received: readonly ReceivedMessage[],
  opts: CheckOptions = {},
): UplinkReport {
  const protocol = opts.protocol ?? 'auto';
  const keyOf = opts.keyOf ?? ((m: ReceivedMessage) => payloadText(m.payload));
  const reconnects = opts.reconnects ?? 0;
  const window = opts.window ?? 64;
  const newestFirstClasses = new Set(opts.newestFirstClasses ?? NEWEST_FIRST_DEFAULT);
  const linkUps = opts.linkUps ?? reconnects + 1;
  const problems: string[] = [];

  const byKey = new Map<string, AcceptedMessage>();
  for (const a of accepted) {
    if (byKey.has(a.key)) throw new Error(`checkUplink: accepted key ${JSON.stringify(a.key)} appears twice; keys must be unique`);
    byKey.set(a.key, a);
  }

  const counts = new Map<string, number>();
  const seqsOfKey = new Map<string, Set<string>>();
  const firstDeliveries: Delivery[] = [];
  const unknown: string[] = [];
  const seqsByGw = new Map<string, Set<number>>();
  let unsequenced = 0;
  let receivedCount = 0;

  for (const m of received) {
    if (opts.ignore?.(m)) continue;
    receivedCount++;
    const parsed = parseReceived(m, protocol);
    const key = keyOf(m, parsed);
    if (parsed.gateway === undefined || parsed.seq === undefined) {
      unsequenced++;
    } else {
      let s = seqsByGw.get(parsed.gateway);
      if (!s) seqsByGw.set(parsed.gateway, (s = new Set()));
      s.add(parsed.seq);
    }
    const acc = byKey.get(key);
    if (!acc) {
      unknown.push(key);
      continue;
    }
    const n = (counts.get(key) ?? 0) + 1;
    counts.set(key, n);
    let ids = seqsOfKey.get(key);
    if (!ids) seqsOfKey.set(key, (ids = new Set()));
    ids.add(`${parsed.gateway ?? ''}/${parsed.seq ?? ''}`);
    if (n === 1) firstDeliveries.push({ key, acc, topic: parsed.topic });
  }

  // Lost.
  const lost: string[] = [];
  let dropped = 0;
  for (const a of accepted) {
    if (a.dropped) dropped++;
    else if (!counts.has(a.key)) lost.push(a.key);
  }
  if (lost.length > 0) {
    problems.push(`${lost.length} accepted message(s) lost: ${preview(lost)}`);
  }

  // Duplicates.
  let duplicates = 0;
  const duplicateKeys: string[] = [];
  const reSequenced: string[] = [];
  for (const [key, n] of counts) {
    if (n > 1) {
      duplicates += n - 1;
      duplicateKeys.push(key);
    }
    if ((seqsOfKey.get(key)?.size ?? 0) > 1) reSequenced.push(key);
  }
  const duplicatesAllowed = reconnects * window;
  if (duplicates > duplicatesAllowed) {
    problems.push(
      reconnects === 0
        ? `${duplicates} duplicate(s) without a reconnect: ${preview(duplicateKeys)}`
        : `${duplicates} duplicate(s), more than ${duplicatesAllowed} (${reconnects} reconnect(s) × window ${window}): ${preview(duplicateKeys)}`,
    );
  }

  // Order within each class.
  const orderViolations: OrderViolation[] = [];
  const newestFirst: string[] = [];
  const byClass = new Map<UplinkClass, Delivery[]>();
  for (const d of firstDeliveries) {
    let l = byClass.get(d.acc.cls);
    if (!l) byClass.set(d.acc.cls, (l = []));
    l.push(d);
  }
  for (const [cls, list] of byClass) {
    const exempt = newestFirstClasses.has(cls) ? newestFirstExemptions(list, linkUps) : new Set<number>();
    for (const i of exempt) newestFirst.push(list[i]!.key);
    let max: Delivery | undefined;
    list.forEach((d, i) => {
      if (exempt.has(i)) return;
      if (max && d.acc.localSeq < max.acc.localSeq) {
        orderViolations.push({ cls, key: d.key, localSeq: d.acc.localSeq, afterKey: max.key, afterLocalSeq: max.acc.localSeq });
      } else {
        max = d;
      }
    });
  }
  if (orderViolations.length > 0) {
    const v = orderViolations[0]!;
    problems.push(
      `${orderViolations.length} order violation(s) within a class; first: ${v.cls} ${JSON.stringify(v.key)} (#${v.localSeq}) ` +
        `arrived after ${JSON.stringify(v.afterKey)} (#${v.afterLocalSeq})`,
    );
  }

  // Sequence gaps per gateway.
  const droppedByGw = new Map<string | undefined, number>();
  for (const a of accepted) if (a.dropped) droppedByGw.set(a.gateway, (droppedByGw.get(a.gateway) ?? 0) + 1);
  const gateways: Record<string, GatewaySeqReport> = {};
  for (const [gw, seqs] of seqsByGw) {
    const sorted = [...seqs].sort((a, b) => a - b);
    const min = sorted[0]!;
    const max = sorted[sorted.length - 1]!;
    const from = Math.min(opts.firstSeq?.[gw] ?? min, min);
    const missing: number[] = [];
    for (let s = from; s <= max; s++) if (!seqs.has(s)) missing.push(s);
    // Dropped messages without a gateway belong to the only gateway (or are shared when there are several).
    const allowedMissing = (droppedByGw.get(gw) ?? 0) + (droppedByGw.get(undefined) ?? 0);
    gateways[gw] = { received: seqs.size, min, max, missing, allowedMissing };
    if (missing.length > allowedMissing) {
      problems.push(
        `gateway ${gw}: ${missing.length} seq(s) missing between ${from} and ${max} (${allowedMissing} evicted/expired allowed): ${preview(missing.map(String))}`,
      );
    }
  }

  return {
    ok: problems.length === 0,
    problems,
    accepted: accepted.length,
    received: receivedCount,
    delivered: counts.size,
    lost,
    dropped,
    duplicates,
    duplicatesAllowed,
    duplicateKeys,
    reSequenced,
    orderViolations,
    newestFirst,
    gateways,
    unsequenced,
    unknown,
  };
}

/**
 * Indices (in `list`, first deliveries of one class in arrival order) of messages allowed to have
 * overtaken older ones as "newest per topic after a link-up". A candidate overtakes: some later
 * delivery is older. Candidates form bursts (runs of consecutive candidates); at most `linkUps`
 * bursts are excused, and within one only the first message of each topic, and only if no newer
 * message of its topic was delivered before it.
 */
function newestFirstExemptions(list: readonly Delivery[], linkUps: number): Set<number> {
  const n = list.length;
  // suffixMin[i] = lowest localSeq at or after i.
  const suffixMin = new Array<number>(n + 1).fill(Infinity);
  for (let i = n - 1; i >= 0; i--) suffixMin[i] = Math.min(list[i]!.acc.localSeq, suffixMin[i + 1]!);
  const exempt = new Set<number>();
  const newestSeen = new Map<string, number>();
  let bursts = 0;
  let inBurst = false;
  let burstTopics = new Set<string>();
  for (let i = 0; i < n; i++) {
    const d = list[i]!;
    const overtakes = d.acc.localSeq > suffixMin[i + 1]!;
    if (overtakes) {
      if (!inBurst) {
        inBurst = true;
        bursts++;
        burstTopics = new Set();
      }
      const newer = (newestSeen.get(d.topic) ?? -Infinity) > d.acc.localSeq;
      if (bursts <= linkUps && !burstTopics.has(d.topic) && !newer) {
        exempt.add(i);
        burstTopics.add(d.topic);
      }
    } else {
      inBurst = false;
    }
    newestSeen.set(d.topic, Math.max(newestSeen.get(d.topic) ?? -Infinity, d.acc.localSeq));
  }
  return exempt;
}

function preview(keys: readonly string[], max = 10): string {
  const shown = keys.slice(0, max).map((k) => JSON.stringify(k)).join(', ');
  return keys.length > max ? `${shown} … (+${keys.length - max})` : shown;
}

/** Throws an Error listing the problems when the report is not ok (for `it` bodies). */
export function assertUplinkOk(report: UplinkReport): void {
  if (!report.ok) {
    throw new Error(`uplink check failed:\n  ${report.problems.join('\n  ')}`);
  }
}
