// The crash test's verdict, as pure logic: given what the broker acknowledged to publishers and
// what one subscriber session received (across every broker incarnation), report what was lost,
// what arrived more than once and whether each duplicate was allowed.
//
// The rules (MQTT 3.1.1 §4.3, MQTT 5 §4.3, and Convoy's durability contract):
// - Every acknowledged message (PUBACK for QoS 1, PUBREC for QoS 2: that is where ownership passes
//   to the broker) reaches every subscriber session that matched it: no loss.
// - It arrives at the lower of the published and the granted QoS [MQTT-3.8.4-8].
// - QoS 2 deliveries arrive exactly once.
// - QoS 1 deliveries may arrive more than once (at least once), and every copy after the first
//   carries DUP [MQTT-3.3.1-1]: within one broker incarnation because it is a redelivery, and
//   across a crash because the restarted broker sends what the crashed one may have sent with DUP
//   (StoredState.unclean: "might be a re-delivery", MQTT 5 §3.3.1.1).
// - Messages that were published but never acknowledged may or may not arrive (the broker may
//   have committed them before it died): counted, never a failure.
// - A message that nobody published is a failure (a corrupt or invented delivery).

export type QoS = 0 | 1 | 2;

/** A message the broker acknowledged to its publisher. */
export interface AckedMessage {
  /** Unique per message across the whole run (publisher and sequence number). */
  key: string;
  /** QoS it was published with. */
  qos: 1 | 2;
  /** Round (broker incarnation) in which it was acknowledged. */
  round: number;
}

/** One PUBLISH a subscriber received (for QoS 2: released by PUBREL and handed to the app). */
export interface ReceivedMessage {
  key: string;
  qos: QoS;
  dup: boolean;
  /** Broker incarnation (1 = first start) that delivered it. */
  incarnation: number;
  /** Packet identifier it came with (diagnostics only). */
  packetId?: number;
}

export interface DuplicateEntry {
  key: string;
  /** Delivery QoS of the copies (the first one's). */
  qos: QoS;
  copies: number;
  /** Incarnation and DUP flag of every copy, in arrival order. */
  arrivals: Array<{ incarnation: number; dup: boolean; packetId?: number }>;
}

export interface CheckOptions {
  /** QoS granted to the subscriber's subscription that matched every message. */
  grantedQos: QoS;
  /** Every key that was ever published (acked or not); when given, anything else is a phantom. */
  published?: ReadonlySet<string>;
}

export interface CrashReport {
  acked: number;
  receivedCopies: number;
  receivedDistinct: number;
  /** Acknowledged but never delivered. */
  lost: AckedMessage[];
  /** Delivered more than once at QoS 1 (allowed). */
  qos1Duplicates: DuplicateEntry[];
  /** Extra QoS 1 copies in total (copies beyond the first). */
  qos1ExtraCopies: number;
  /** QoS 1 extra copies that arrived from a later incarnation without DUP (a violation too). */
  qos1RedeliveredAfterRestartWithoutDup: number;
  /** QoS 1 extra copies from the same incarnation without DUP (violation of [MQTT-3.3.1-1]). */
  qos1RedeliveredWithoutDupSameIncarnation: DuplicateEntry[];
  /** Delivered more than once at QoS 2 (violation). */
  qos2Duplicates: DuplicateEntry[];
  /** Delivered at a QoS other than min(published, granted). */
  wrongQos: Array<{ key: string; expected: QoS; got: QoS }>;
  /** Delivered, never acknowledged: the broker had stored it before it died. Not a failure. */
  unackedDelivered: number;
  /** Delivered but never published at all. */
  phantoms: string[];
  /** Human-readable violations; empty when the run passed. */
  problems: string[];
}

const SAMPLE = 10;

function sample<T>(xs: readonly T[], f: (x: T) => string): string {
  const head = xs.slice(0, SAMPLE).map(f).join(', ');
  return xs.length > SAMPLE ? `${head}, … (${xs.length} in all)` : head;
}

export function checkDeliveries(acked: readonly AckedMessage[], received: readonly ReceivedMessage[], opts: CheckOptions): CrashReport {
  const ackedByKey = new Map<string, AckedMessage>();
  for (const a of acked) if (!ackedByKey.has(a.key)) ackedByKey.set(a.key, a);

  const byKey = new Map<string, ReceivedMessage[]>();
  for (const r of received) {
    const list = byKey.get(r.key);
    if (list) list.push(r);
    else byKey.set(r.key, [r]);
  }

  const lost: AckedMessage[] = [];
  for (const a of ackedByKey.values()) if (!byKey.has(a.key)) lost.push(a);

  const qos1Duplicates: DuplicateEntry[] = [];
  const qos2Duplicates: DuplicateEntry[] = [];
  const sameIncarnationNoDup: DuplicateEntry[] = [];
  const wrongQos: CrashReport['wrongQos'] = [];
  const phantoms: string[] = [];
  let qos1ExtraCopies = 0;
  let afterRestartNoDup = 0;
  let unackedDelivered = 0;

  for (const [key, copies] of byKey) {
    const a = ackedByKey.get(key);
    if (!a) {
      if (opts.published && !opts.published.has(key)) phantoms.push(key);
      else unackedDelivered++;
    }
    if (a) {
      const expected: QoS = a.qos < opts.grantedQos ? a.qos : opts.grantedQos;
      const bad = copies.find((c) => c.qos !== expected);
      if (bad) wrongQos.push({ key, expected, got: bad.qos });
    }
    if (copies.length < 2) continue;
    const entry: DuplicateEntry = {
      key, qos: copies[0]!.qos, copies: copies.length, arrivals: copies.map((c) => (c.packetId === undefined ? { incarnation: c.incarnation, dup: c.dup } : { incarnation: c.incarnation, dup: c.dup, packetId: c.packetId })),
    };
    if (copies.some((c) => c.qos === 2)) {
      qos2Duplicates.push(entry);
      continue;
    }
    qos1Duplicates.push(entry);
    qos1ExtraCopies += copies.length - 1;
    let flaggedSame = false;
    for (let i = 1; i < copies.length; i++) {
      const c = copies[i]!;
      if (c.dup) continue;
      const sameIncarnation = copies.slice(0, i).some((p) => p.incarnation === c.incarnation);
      if (sameIncarnation) flaggedSame = true;
      else afterRestartNoDup++;
    }
    if (flaggedSame) sameIncarnationNoDup.push(entry);
  }

  const problems: string[] = [];
  if (lost.length > 0) {
    problems.push(`${lost.length} acknowledged message(s) never delivered: ${sample(lost, (l) => `${l.key} (QoS ${l.qos}, acked in round ${l.round})`)}`);
  }
  if (qos2Duplicates.length > 0) {
    problems.push(`${qos2Duplicates.length} QoS 2 message(s) delivered more than once: ${sample(qos2Duplicates, (d) => `${d.key} ×${d.copies}`)}`);
  }
  if (sameIncarnationNoDup.length > 0) {
    problems.push(`${sameIncarnationNoDup.length} QoS 1 message(s) resent by the same broker process without DUP: ${sample(sameIncarnationNoDup, (d) => d.key)}`);
  }
  if (afterRestartNoDup > 0) problems.push(`${afterRestartNoDup} QoS 1 cop(ies) resent after a restart without DUP`);
  if (wrongQos.length > 0) {
    problems.push(`${wrongQos.length} message(s) delivered at the wrong QoS: ${sample(wrongQos, (w) => `${w.key} expected ${w.expected} got ${w.got}`)}`);
  }
  if (phantoms.length > 0) problems.push(`${phantoms.length} delivered message(s) that were never published: ${sample(phantoms, (p) => p)}`);

  return {
    acked: ackedByKey.size,
    receivedCopies: received.length,
    receivedDistinct: byKey.size,
    lost,
    qos1Duplicates,
    qos1ExtraCopies,
    qos1RedeliveredAfterRestartWithoutDup: afterRestartNoDup,
    qos1RedeliveredWithoutDupSameIncarnation: sameIncarnationNoDup,
    qos2Duplicates,
    wrongQos,
    unackedDelivered,
    phantoms,
    problems,
  };
}

/** Whether every acknowledged key has been received at least once (for "receive until done"). */
export function missingKeys(acked: readonly AckedMessage[], receivedKeys: ReadonlySet<string>): string[] {
  const out: string[] = [];
  for (const a of acked) if (!receivedKeys.has(a.key)) out.push(a.key);
  return out;
}
