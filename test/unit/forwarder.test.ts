import { expect } from 'chai';
import { generateKeyPairSync } from 'node:crypto';
import { Forwarder, TokenBucket, uplinkProperties, uplinkTopic, type ForwarderLink, type ForwarderOptions, type NumberedDone } from '../../src/bridge/forwarder.js';
import type { Properties, QoS } from '../../src/mqtt/packets.js';
import { OUTBOX_CLASSES, type Outbox, type OutboxClass, type OutboxRecord, type OutboxStats } from '../../src/bridge/types.js';
import { decodeSegment, encodeSegment } from '../../src/store/outbox-segment.js';
import { writePublish, writePublishNumbered, type NumberedSource, type NumberedUserProperties } from '../../src/mqtt/codec/encode.js';
import { OutBuffer } from '../../src/mqtt/codec/out-buffer.js';
import { keyId } from '../../src/security/signing.js';
import { QOS2_ID_COUNT, qos2PacketId } from '../../src/bridge/qos2-ids.js';

/** In-memory Outbox with the contract's observable behaviour (no budget). */
class FakeOutbox implements Outbox {
  readonly rows = new Map<number, OutboxRecord>();
  private seq = 0;
  expiredDropped = 0;
  removed: number[] = [];

  /** The next record appended gets this seq. */
  nextSeq(seq: number): void {
    this.seq = seq - 1;
  }

  append(rec: Omit<OutboxRecord, 'seq'>): OutboxRecord {
    const r = { ...rec, seq: ++this.seq };
    this.rows.set(r.seq, r);
    return r;
  }

  remove(seq: number): void {
    this.removed.push(seq);
    this.rows.delete(seq);
  }

  next(cls: OutboxClass, afterSeq: number, limit: number): OutboxRecord[] {
    const now = Date.now();
    const out: OutboxRecord[] = [];
    for (const r of [...this.rows.values()].sort((a, b) => a.seq - b.seq)) {
      if (r.cls !== cls || r.seq <= afterSeq) continue;
      if (r.expiresAt > 0 && r.expiresAt <= now) {
        this.rows.delete(r.seq);
        this.expiredDropped++;
        continue;
      }
      out.push(r);
      if (out.length >= limit) break;
    }
    return out;
  }

  newestPerTopic(cls: OutboxClass, limit: number): OutboxRecord[] {
    const newest = new Map<string, OutboxRecord>();
    for (const r of this.rows.values()) {
      if (r.cls !== cls) continue;
      const cur = newest.get(r.localTopic);
      if (!cur || cur.seq < r.seq) newest.set(r.localTopic, r);
    }
    return [...newest.values()].sort((a, b) => b.seq - a.seq).slice(0, limit);
  }

  stats(): OutboxStats {
    const byClass = Object.fromEntries(OUTBOX_CLASSES.map((c) => [c, { count: 0, bytes: 0 }])) as OutboxStats['byClass'];
    let bytes = 0;
    for (const r of this.rows.values()) {
      byClass[r.cls].count++;
      byClass[r.cls].bytes += r.payload.length;
      bytes += r.payload.length;
    }
    return { count: this.rows.size, bytes, byClass, dropped: { expired: this.expiredDropped, evicted: 0, refused_full: 0 }, lastSeq: this.seq };
  }

  add(cls: OutboxClass, localTopic: string, payload: string, extra: Partial<OutboxRecord> = {}): OutboxRecord {
    return this.append({
      cls, localTopic, topic: `hq/${localTopic}`, payload: Buffer.from(payload), qos: 1, createdAt: Date.now(), expiresAt: 0, ...extra,
    });
  }
}

interface Sent {
  topic: string;
  payload: string;
  qos: QoS;
  properties: Properties | undefined;
  done: (err: Error | null) => void;
  seq: number;
}

/** Records PUBLISHes; acks on demand. */
class FakeLink implements ForwarderLink {
  sent: Sent[] = [];
  autoAck = false;

  publish(topic: string, payload: Buffer, qos: QoS, properties: Properties | undefined, done: (err: Error | null) => void): void {
    const seqProp = properties?.userProperties?.find(([k]) => k === 'seq')?.[1];
    const seq = seqProp !== undefined ? Number(seqProp) : Number(topic.split('/').pop());
    this.sent.push({ topic, payload: payload.toString(), qos, properties, done, seq });
    if (this.autoAck) setImmediate(() => done(null));
  }

  seqs(): number[] {
    return this.sent.map((s) => s.seq);
  }

  payloads(): string[] {
    return this.sent.map((s) => s.payload);
  }

  ack(seq: number, err: Error | null = null): void {
    const s = this.sent.find((x) => x.seq === seq);
    if (!s) throw new Error(`seq ${seq} was not sent`);
    s.done(err);
  }
}

/** Lets queued microtasks run (the forwarder refills from a microtask after acknowledgements). */
async function microtasks(): Promise<void> {
  for (let i = 0; i < 10; i++) await Promise.resolve();
}

async function settle(rounds = 5): Promise<void> {
  for (let i = 0; i < rounds; i++) await new Promise((r) => setImmediate(r));
}

function reasonError(code: number): Error {
  return Object.assign(new Error(`refused 0x${code.toString(16)}`), { code });
}

describe('uplink forwarder (fake outbox, fake link)', () => {
  let outbox: FakeOutbox;
  let link: FakeLink;
  const forwarders: Forwarder[] = [];

  function make(o: Partial<ForwarderOptions> = {}): Forwarder {
    const f = new Forwarder({
      outbox, link, gatewayId: 'gw1', protocolVersion: 5, sequence311: 'topic-suffix', inflightWindow: 100,
      drainRateMsgs: 0, drainRateBytes: 0, ...o,
    });
    forwarders.push(f);
    return f;
  }

  beforeEach(() => {
    outbox = new FakeOutbox();
    link = new FakeLink();
  });
  afterEach(() => {
    for (const f of forwarders.splice(0)) f.stop();
  });

  it('drains classes in strict priority (alarm > event > telemetry > bulk), each in seq order', async () => {
    outbox.add('bulk', 'b/1', 'bulk1');
    outbox.add('event', 'e/1', 'ev1');
    outbox.add('alarm', 'a/1', 'al1');
    outbox.add('bulk', 'b/2', 'bulk2');
    outbox.add('event', 'e/2', 'ev2');
    outbox.add('alarm', 'a/2', 'al2');
    const f = make();
    f.linkUp({ receiveMaximum: 65535 });
    await settle();
    expect(link.payloads()).to.deep.equal(['al1', 'al2', 'ev1', 'ev2', 'bulk1', 'bulk2']);
  });

  it('sends a newly arrived alarm before the rest of a lower-class backlog', async () => {
    for (let i = 1; i <= 5; i++) outbox.add('bulk', 'b/x', `bulk${i}`);
    const f = make({ inflightWindow: 1 });
    f.linkUp({ receiveMaximum: 65535 });
    await settle();
    expect(link.payloads()).to.deep.equal(['bulk1']);
    outbox.add('alarm', 'a/fire', 'fire');
    f.nudge('alarm');
    link.ack(1);
    await settle();
    expect(link.payloads()).to.deep.equal(['bulk1', 'fire']);
    link.ack(6);
    await settle();
    expect(link.payloads()).to.deep.equal(['bulk1', 'fire', 'bulk2']);
  });

  it('after each (re)connect sends the newest telemetry per topic first, then the backlog without repeating them', async () => {
    outbox.add('telemetry', 'gps', 'gps1');
    outbox.add('telemetry', 'speed', 'spd1');
    outbox.add('event', 'door', 'door1');
    outbox.add('telemetry', 'gps', 'gps2');
    outbox.add('telemetry', 'speed', 'spd2');
    outbox.add('telemetry', 'gps', 'gps3');
    const f = make();
    f.linkUp({ receiveMaximum: 65535 });
    await settle();
    // newest per topic in seq order (spd2 = 5, gps3 = 6), then event, then the telemetry backlog
    expect(link.payloads()).to.deep.equal(['spd2', 'gps3', 'door1', 'gps1', 'spd1', 'gps2']);
    expect(new Set(link.seqs()).size).to.equal(6);

    // Link drops with everything unacknowledged; after the reconnect, the same order again.
    f.linkDown();
    link.sent = [];
    f.linkUp({ receiveMaximum: 65535 });
    await settle();
    expect(link.payloads()).to.deep.equal(['spd2', 'gps3', 'door1', 'gps1', 'spd1', 'gps2']);
  });

  it('keeps at most the window in flight: min(inflight_window, HQ receive maximum)', async () => {
    for (let i = 1; i <= 10; i++) outbox.add('event', 'e', `m${i}`);
    const f = make({ inflightWindow: 4 });
    f.linkUp({ receiveMaximum: 65535 });
    await settle();
    expect(link.seqs()).to.deep.equal([1, 2, 3, 4]);
    expect(f.stats().window).to.equal(4);
    link.ack(2);
    await settle();
    expect(link.seqs()).to.deep.equal([1, 2, 3, 4, 5]);
    expect(f.stats().inFlight).to.equal(4);

    f.linkDown();
    link.sent = [];
    f.linkUp({ receiveMaximum: 2 });
    await settle();
    expect(f.stats().window).to.equal(2);
    expect(link.seqs()).to.deep.equal([1, 3]);
  });

  it('caps a refill group at 64 records (a window of 1,024)', async () => {
    for (let i = 1; i <= 1100; i++) outbox.add('event', 'e', `m${i}`);
    const f = make({ inflightWindow: 1024 });
    f.linkUp({ receiveMaximum: 65535 });
    await settle();
    expect(link.sent).to.have.length(1024);
    for (let seq = 1; seq <= 63; seq++) link.ack(seq);
    await microtasks();
    expect(link.sent, 'held until 64 slots are free').to.have.length(1024);
    link.ack(64);
    await microtasks();
    expect(link.sent).to.have.length(1088);
    expect(f.stats().inFlight).to.equal(1024);
  });

  it('refills a large window in groups (a quarter of it); a group that does not fill goes after 1 ms', async () => {
    for (let i = 1; i <= 200; i++) outbox.add('event', 'e', `m${i}`);
    const f = make({ inflightWindow: 64 });
    f.linkUp({ receiveMaximum: 65535 });
    await settle();
    expect(link.sent).to.have.length(64);
    // 15 acknowledgements: the window waits for its group.
    for (let seq = 1; seq <= 15; seq++) link.ack(seq);
    await microtasks();
    expect(link.sent, 'held until 16 slots are free').to.have.length(64);
    // The 16th: refilled at once, in one go.
    link.ack(16);
    await microtasks();
    expect(link.sent).to.have.length(80);
    expect(f.stats().inFlight).to.equal(64);
    // One acknowledgement alone: its slot is refilled by the timer.
    const refilled = new Promise<void>((resolve) => {
      const publish = link.publish.bind(link);
      link.publish = (...args: Parameters<FakeLink['publish']>): void => {
        publish(...args);
        resolve();
      };
    });
    link.ack(17);
    await microtasks();
    expect(link.sent).to.have.length(80);
    await refilled;
    expect(link.sent).to.have.length(81);
    expect(link.seqs().slice(-1)).to.deep.equal([81]);
  });

  it('holds new sends while in flight + acknowledged-but-not-durably-removed reach 4 × the window (the crash duplicate bound)', async () => {
    // An outbox whose removals become durable only when the test says so (a commit).
    class SlowRemovals extends FakeOutbox {
      pending = 0;
      private readonly durable = new Set<() => void>();
      override remove(seq: number): void {
        super.remove(seq);
        this.pending++;
      }
      removalsPending(): number {
        return this.pending;
      }
      onRemovalsDurable(cb: () => void): () => void {
        this.durable.add(cb);
        return () => this.durable.delete(cb);
      }
      commit(): void {
        this.pending = 0;
        for (const cb of this.durable) cb();
      }
    }
    const slow = new SlowRemovals();
    outbox = slow;
    for (let i = 1; i <= 20; i++) outbox.add('event', 'e', `m${i}`);
    const f = make({ inflightWindow: 4 });
    f.linkUp({ receiveMaximum: 65535 });
    await settle();
    expect(link.seqs()).to.deep.equal([1, 2, 3, 4]);
    // Acknowledged, removals not durable: each frees a slot while in flight + pending < 16.
    for (let seq = 1; seq <= 12; seq++) {
      link.ack(seq);
      await settle();
    }
    expect(link.seqs()).to.deep.equal([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]);
    expect(f.stats().inFlight).to.equal(4);
    link.ack(13);
    await settle();
    expect(link.seqs(), 'held: 3 in flight + 13 removals pending').to.have.length(16);
    // The removals commit: the forwarder fills the window again.
    slow.commit();
    await settle();
    expect(link.seqs()).to.have.length(17);
    expect(f.stats().inFlight).to.equal(4);
  });

  it('removes a record only when HQ acknowledges it, and re-sends the unacknowledged ones after a reconnect', async () => {
    for (let i = 1; i <= 3; i++) outbox.add('event', 'e', `m${i}`);
    const f = make();
    f.linkUp({ receiveMaximum: 65535 });
    await settle();
    expect(link.seqs()).to.deep.equal([1, 2, 3]);
    expect(outbox.rows.size).to.equal(3);
    link.ack(2);
    expect(outbox.removed).to.deep.equal([2]);
    expect(f.stats()).to.include({ sent: 3, acked: 1, inFlight: 2, lastAckedSeq: 2 });

    const old = link.sent;
    f.linkDown();
    expect(outbox.rows.size).to.equal(2); // in flight at the drop: still in the outbox
    link.sent = [];
    f.linkUp({ receiveMaximum: 65535 });
    await settle();
    expect(link.seqs()).to.deep.equal([1, 3]);
    // A late ack from the dead connection changes nothing; the new connection's ack does.
    old[0]!.done(null);
    expect(outbox.rows.has(1)).to.equal(true);
    link.ack(1);
    link.ack(3);
    expect(outbox.rows.size).to.equal(0);
    expect(f.stats()).to.include({ inFlight: 0, lastAckedSeq: 3 });
  });

  it('never has the same record in flight twice', async () => {
    for (let i = 1; i <= 3; i++) outbox.add('telemetry', `t${i}`, `m${i}`);
    const f = make();
    f.linkUp({ receiveMaximum: 65535 });
    await settle();
    f.nudge();
    f.nudge('telemetry');
    await settle();
    expect(link.seqs()).to.deep.equal([1, 2, 3]);
  });

  it('removes QoS 0 records once written (done without an ack)', async () => {
    outbox.add('telemetry', 't', 'q0', { qos: 0 });
    const f = make();
    f.linkUp({ receiveMaximum: 65535 });
    await settle();
    expect(link.sent[0]!.qos).to.equal(0);
    link.ack(1);
    expect(outbox.rows.size).to.equal(0);
  });

  it('sends nothing while the link is down and starts on linkUp', async () => {
    const f = make();
    outbox.add('event', 'e', 'm1');
    f.nudge('event');
    await settle();
    expect(link.sent).to.have.length(0);
    f.linkUp({ receiveMaximum: 65535 });
    await settle();
    expect(link.payloads()).to.deep.equal(['m1']);
  });

  it('MQTT 5: adds gw and seq user properties, keeps the record\'s own, and reduces message expiry by the wait', async () => {
    const now = Date.now();
    outbox.add('event', 'e', 'm1', {
      properties: {
        contentType: 'application/json', correlationData: Buffer.from('c'), payloadFormatIndicator: 1,
        userProperties: [['driver', 'ann'], ['gw', 'forged'], ['seq', '999']], messageExpiryInterval: 60,
      },
      createdAt: now - 30_000,
      expiresAt: now + 30_000,
    });
    const f = make();
    f.linkUp({ receiveMaximum: 65535 });
    await settle();
    const s = link.sent[0]!;
    expect(s.topic).to.equal('hq/e');
    expect(s.properties?.userProperties).to.deep.equal([['driver', 'ann'], ['gw', 'gw1'], ['seq', '1']]);
    expect(s.properties).to.include({ contentType: 'application/json', payloadFormatIndicator: 1 });
    expect(s.properties?.messageExpiryInterval).to.be.within(29, 30);
  });

  it('drops a record that expired after the outbox handed it out, without sending it', async () => {
    outbox.add('telemetry', 'gps', 'stale', { expiresAt: Date.now() - 1 });
    outbox.add('telemetry', 'speed', 'fresh');
    const f = make();
    f.linkUp({ receiveMaximum: 65535 }); // newestPerTopic does not filter expired ones
    await settle();
    expect(link.payloads()).to.deep.equal(['fresh']);
    expect(outbox.removed).to.deep.equal([1]);
    expect(f.stats().expired).to.equal(1);
  });

  it('uplinkProperties: no expiry when the message had none (a route TTL is not sent to HQ)', () => {
    const p = uplinkProperties({ seq: 7, expiresAt: Date.now() + 5000 }, 'g', Date.now());
    expect(p).to.deep.equal({ userProperties: [['gw', 'g'], ['seq', '7']] });
  });

  it('MQTT 3.1.1 with topic-suffix: /{gateway}/{seq} appended, no properties', async () => {
    outbox.add('event', 'e', 'm1', { properties: { userProperties: [['a', 'b']] } });
    outbox.add('event', 'e', 'm2');
    const f = make({ protocolVersion: 4 });
    f.linkUp({ receiveMaximum: 65535 });
    await settle();
    expect(link.sent.map((s) => s.topic)).to.deep.equal(['hq/e/gw1/1', 'hq/e/gw1/2']);
    expect(link.sent.map((s) => s.properties)).to.deep.equal([undefined, undefined]);
    expect(uplinkTopic('a/b', 5, 'g', 4, 'none')).to.equal('a/b');
    expect(uplinkTopic('a/b', 5, 'g', 5, 'topic-suffix')).to.equal('a/b');
  });

  it('HQ refusals: permanent reason codes drop the record, transient ones retry it later', async () => {
    outbox.add('event', 'e', 'bad-topic');
    outbox.add('event', 'e', 'quota');
    outbox.add('event', 'e', 'ok');
    const f = make({ retryDelayMs: 50 });
    f.linkUp({ receiveMaximum: 65535 });
    await settle();
    link.ack(1, reasonError(0x90));
    link.ack(2, reasonError(0x97));
    link.ack(3);
    expect(outbox.rows.has(1)).to.equal(false);
    expect(outbox.rows.has(2)).to.equal(true);
    expect(f.stats()).to.include({ rejected: 1, retried: 1, acked: 1 });
    await new Promise((r) => setTimeout(r, 120));
    await settle();
    expect(link.seqs()).to.deep.equal([1, 2, 3, 2]);
    link.sent[3]!.done(null);
    expect(outbox.rows.size).to.equal(0);
  });

  it('survives an outbox that throws (logs, retries later, no exception out of the pump)', async () => {
    const f = make({ retryDelayMs: 20 });
    let fail = true;
    const realNext = outbox.next.bind(outbox);
    outbox.next = (c, a, l) => {
      if (fail) throw new Error('disk I/O error');
      return realNext(c, a, l);
    };
    outbox.add('event', 'e', 'm1');
    f.linkUp({ receiveMaximum: 65535 });
    await settle();
    expect(link.sent).to.have.length(0);
    fail = false;
    await new Promise((r) => setTimeout(r, 60));
    await settle();
    expect(link.payloads()).to.deep.equal(['m1']);
  });

  it('paces the backlog with drain_rate_msgs (one second of burst), alarms never wait', async () => {
    link.autoAck = true;
    for (let i = 1; i <= 30; i++) outbox.add('event', 'e', `m${i}`);
    const f = make({ drainRateMsgs: 20 });
    const t0 = Date.now();
    f.linkUp({ receiveMaximum: 65535 });
    await settle();
    expect(link.sent.length).to.equal(20); // the burst
    outbox.add('alarm', 'a', 'fire');
    f.nudge('alarm');
    await settle();
    expect(link.payloads()).to.include('fire'); // not held back by the empty bucket
    while (outbox.rows.size > 0 && Date.now() - t0 < 3000) await new Promise((r) => setTimeout(r, 10));
    const elapsed = Date.now() - t0;
    // 11 more after the burst of 20 (the alarm spent a token too) at 20/s: ~550 ms
    expect(elapsed).to.be.within(400, 1200);
    expect(link.payloads().slice(-1)).to.deep.equal(['m30']);
  });

  it('paces the backlog with drain_rate_bytes, while the newest telemetry after a reconnect is not paced', async () => {
    link.autoAck = true;
    const payload = 'x'.repeat(95); // + 5-byte topic "hq/ev" = 100 bytes
    for (let i = 1; i <= 15; i++) outbox.add('event', 'ev', payload);
    outbox.add('telemetry', 'gps', 'where');
    const f = make({ drainRateBytes: 1000 });
    const t0 = Date.now();
    f.linkUp({ receiveMaximum: 65535 });
    await settle();
    expect(link.payloads()[0]).to.equal('where');
    expect(link.sent.length).to.equal(11); // 'where' + a 1000-byte burst of 10 events
    while (outbox.rows.size > 0 && Date.now() - t0 < 3000) await new Promise((r) => setTimeout(r, 10));
    expect(outbox.rows.size).to.equal(0);
    // 5 more events of 100 bytes at 1000 bytes/s: ~500 ms
    expect(Date.now() - t0).to.be.within(400, 1200);
  });

  it('drain_rate_bytes counts a record read from a segment by its byte ranges, as much as the same record in memory', async () => {
    link.autoAck = true;
    const rows = Array.from({ length: 25 }, (_, i) => ({
      seq: i + 1, cls: 'event' as const, localTopic: 'ev', topic: 'hq/ev', payload: Buffer.from('x'.repeat(45)), qos: 1 as const,
      createdAt: Date.now(), expiresAt: 0, size: 100,
    }));
    for (const r of decodeSegment(encodeSegment(rows).data, 'event')) outbox.rows.set(r.seq, r);
    outbox.nextSeq(26);
    make({ drainRateBytes: 1000 }).linkUp({ receiveMaximum: 65535 });
    await settle();
    // 45 payload bytes + the 5-byte topic = 50 per record: a 1000-byte burst is 20 of them
    // (22 if the topic were not counted).
    expect(link.sent.length).to.equal(20);
    expect(link.payloads()[0]).to.equal('x'.repeat(45));
  });

  it('TokenBucket: burst of one second, then the rate; a cost above the burst waits for a full bucket', () => {
    const b = new TokenBucket(10, 0);
    for (let i = 0; i < 10; i++) {
      expect(b.wait(1, 0)).to.equal(0);
      b.spend(1, 0);
    }
    expect(b.wait(1, 0)).to.equal(100);
    expect(b.wait(1, 100)).to.equal(0);
    const big = new TokenBucket(100, 0);
    big.spend(50, 0);
    expect(big.wait(500, 0)).to.equal(500); // needs a full bucket (100), has 50
    expect(big.wait(500, 500)).to.equal(0);
    big.spend(500, 500);
    expect(big.wait(1, 500)).to.equal(4010); // 400 tokens of debt + 1
  });

  it('direct QoS 0 (not stored): sent with gw and seq 0 while up, dropped while down', async () => {
    const f = make();
    expect(f.sendDirect('hq/t', Buffer.from('d0'), undefined)).to.equal(false);
    f.linkUp({ receiveMaximum: 65535 });
    await settle();
    expect(f.sendDirect('hq/t', Buffer.from('d1'), { userProperties: [['k', 'v']] })).to.equal(true);
    expect(link.sent[0]!.qos).to.equal(0);
    expect(link.sent[0]!.properties?.userProperties).to.deep.equal([['k', 'v'], ['gw', 'gw1'], ['seq', '0']]);
    expect(f.stats()).to.include({ direct: 1, directDropped: 1 });
  });
});

/** One PUBLISH as the link would put it on the wire, and which of the link's methods sent it. */
interface Encoded {
  via: 'publish' | 'publishNumbered';
  seq: number;
  bytes: Buffer;
}

/** Encodes like Link's direct path (our codec, packet ids 1, 2, …); acks on demand. */
class EncodingLink implements ForwarderLink {
  readonly sent: Encoded[] = [];
  private readonly dones = new Map<number, (err: Error | null) => void>();
  private nextId = 1;

  constructor(private readonly version: 4 | 5) {}

  publish(topic: string, payload: Buffer, qos: QoS, properties: Properties | undefined, done: (err: Error | null) => void): void {
    const seqProp = properties?.userProperties?.find(([k]) => k === 'seq')?.[1];
    const out = new OutBuffer();
    const src = { topic, topicLength: Buffer.byteLength(topic), topicBuf: null, topicOffset: 0, payloadBuf: payload, payloadStart: 0, payloadEnd: payload.length };
    writePublish(out, this.version, src, qos, false, false, this.packetId(qos), this.version === 5 ? properties : undefined);
    this.record('publish', seqProp !== undefined ? Number(seqProp) : Number(topic.split('/').pop()), out, qos, done);
  }

  ack(seq: number): void {
    this.dones.get(seq)!(null);
  }

  protected packetId(qos: QoS): number {
    return qos === 0 ? 0 : this.nextId++;
  }

  protected record(via: Encoded['via'], seq: number, out: OutBuffer, qos: QoS, done: (err: Error | null) => void): void {
    this.sent.push({ via, seq, bytes: Buffer.concat(out.take()) });
    this.dones.set(seq, done);
    if (qos === 0) done(null);
  }
}

class NumberedEncodingLink extends EncodingLink {
  publishNumbered(src: NumberedSource, qos: 0 | 1, props: NumberedUserProperties, num: number, done: NumberedDone): void {
    const out = new OutBuffer();
    writePublishNumbered(out, src, qos, this.packetId(qos), props, num);
    // As the link does: the completion gets the number back.
    this.record('publishNumbered', num, out, qos, (err) => done(err, num));
  }
}

describe('uplink forwarder: gw and seq pre-encoded (link.publishNumbered)', () => {
  const forwarders: Forwarder[] = [];

  function make(outbox: Outbox, link: ForwarderLink, o: Partial<ForwarderOptions> = {}): Forwarder {
    const f = new Forwarder({
      outbox, link, gatewayId: 'gw1', protocolVersion: 5, sequence311: 'topic-suffix', inflightWindow: 1000,
      drainRateMsgs: 0, drainRateBytes: 0, ...o,
    });
    forwarders.push(f);
    return f;
  }

  /** What one forwarder puts on the wire for the outbox's records. */
  async function drain(outbox: FakeOutbox, link: EncodingLink, o: Partial<ForwarderOptions> = {}): Promise<Encoded[]> {
    make(outbox, link, o).linkUp({ receiveMaximum: 65535 });
    await settle();
    return link.sent;
  }

  afterEach(() => {
    for (const f of forwarders.splice(0)) f.stop();
  });

  it('puts the same bytes on the wire as the general path (seqs, gateway ids, topics, payload sizes, QoS 0/1)', async () => {
    const topics = ['gps', 'fahrzeug/größe/°C', `deep/${'x/'.repeat(200)}end`];
    const sizes = [0, 1, 200, 20000];
    for (const gatewayId of ['gw1', 'Lkw-München-7', '卡车🚚']) {
      for (const first of [1, 9, 10, 99999, 2 ** 40]) {
        const fill = (outbox: FakeOutbox): void => {
          outbox.nextSeq(first);
          let i = 0;
          for (const t of topics) {
            for (const n of sizes) outbox.add('event', t, 'p'.repeat(n), { qos: (i++ % 2) as 0 | 1 });
          }
        };
        const plain = new FakeOutbox();
        const fast = new FakeOutbox();
        fill(plain);
        fill(fast);
        const want = await drain(plain, new EncodingLink(5), { gatewayId });
        const got = await drain(fast, new NumberedEncodingLink(5), { gatewayId });
        expect(want.every((e) => e.via === 'publish')).to.equal(true);
        expect(got.every((e) => e.via === 'publishNumbered')).to.equal(true);
        expect(got.map((e) => e.seq)).to.deep.equal(want.map((e) => e.seq));
        expect(got.length).to.equal(topics.length * sizes.length);
        got.forEach((e, k) => {
          if (!e.bytes.equals(want[k]!.bytes)) expect.fail(`gw ${gatewayId}, seq ${e.seq}: bytes differ`);
        });
      }
    }
  });

  it('keeps the general path for records with properties, signed records, QoS 2 and a 3.1.1 HQ', async () => {
    const { privateKey, publicKey } = generateKeyPairSync('ed25519');
    const key = { privateKey, publicKey, kid: keyId(publicKey), publicPem: publicKey.export({ type: 'spki', format: 'pem' }).toString() };
    const signer = { key, shouldSign: (localTopic: string): boolean => localTopic === 'signed' };
    const fill = (outbox: FakeOutbox): void => {
      outbox.add('event', 'plain', 'a');
      outbox.add('event', 'props', 'b', { properties: { contentType: 'text/plain' } });
      outbox.add('event', 'empty-props', 'c', { properties: {} });
      // A fixed createdAt: the signature covers the expiry derived from it.
      outbox.add('event', 'signed', 'd', { createdAt: 1_700_000_000_000 });
      outbox.add('event', 'qos2', 'e', { qos: 2 });
      outbox.add('event', 'plain', 'f', { qos: 0 });
    };
    const plain = new FakeOutbox();
    const fast = new FakeOutbox();
    fill(plain);
    fill(fast);
    const want = await drain(plain, new EncodingLink(5), { signer });
    const got = await drain(fast, new NumberedEncodingLink(5), { signer });
    expect(got.map((e) => e.via)).to.deep.equal(['publishNumbered', 'publish', 'publish', 'publish', 'publish', 'publishNumbered']);
    got.forEach((e, k) => expect(e.bytes.equals(want[k]!.bytes), `seq ${e.seq}`).to.equal(true));

    const v4 = new FakeOutbox();
    fill(v4);
    const sent311 = await drain(v4, new NumberedEncodingLink(4), { protocolVersion: 4, signer });
    expect(sent311.map((e) => e.via)).to.deep.equal(Array(6).fill('publish'));
  });

  it('a record sent pre-encoded leaves the outbox on its PUBACK', async () => {
    const outbox = new FakeOutbox();
    outbox.add('event', 'e', 'm1');
    const link = new NumberedEncodingLink(5);
    const f = make(outbox, link);
    f.linkUp({ receiveMaximum: 65535 });
    await settle();
    expect(link.sent.map((e) => e.via)).to.deep.equal(['publishNumbered']);
    expect(outbox.rows.size).to.equal(1);
    link.ack(1);
    expect(outbox.removed).to.deep.equal([1]);
    expect(f.stats()).to.include({ acked: 1, inFlight: 0 });
  });

  it('direct QoS 0: pre-encoded with seq 0 when it has no properties, the same bytes as the general path', async () => {
    const general = new EncodingLink(5);
    const fast = new NumberedEncodingLink(5);
    const fg = make(new FakeOutbox(), general);
    const ff = make(new FakeOutbox(), fast);
    fg.linkUp({ receiveMaximum: 65535 });
    ff.linkUp({ receiveMaximum: 65535 });
    await settle();
    for (const f of [fg, ff]) {
      expect(f.sendDirect('hq/t', Buffer.from('d1'), undefined)).to.equal(true);
      expect(f.sendDirect('hq/t', Buffer.from('d2'), { userProperties: [['k', 'v']] })).to.equal(true);
    }
    expect(fast.sent.map((e) => e.via)).to.deep.equal(['publishNumbered', 'publish']);
    expect(fast.sent.map((e) => e.bytes)).to.deep.equal(general.sent.map((e) => e.bytes));
  });
});

/** A link with the QoS 2 flow of its own (the real Link's publishExactlyOnce / release). */
class ExactlyOnceLink extends FakeLink {
  flows: Array<{ kind: 'publish' | 'pubrel'; id: number; dup: boolean; seq: number; released: () => void; done: (err: Error | null) => void }> = [];
  busy = new Set<number>();

  publishExactlyOnce(
    topic: string, _payload: Buffer, properties: Properties | undefined, id: number, dup: boolean,
    released: () => void, done: (err: Error | null) => void,
  ): boolean {
    const seq = Number(properties?.userProperties?.find(([k]) => k === 'seq')?.[1] ?? topic.split('/').pop());
    this.flows.push({ kind: 'publish', id, dup, seq, released, done });
    return true;
  }

  release(id: number, done: (err: Error | null) => void): boolean {
    this.flows.push({ kind: 'pubrel', id, dup: false, seq: -1, released: () => {}, done });
    return true;
  }

  /** HQ's PUBREC for the newest flow with this id. */
  pubrec(id: number): void {
    [...this.flows].reverse().find((f) => f.id === id)!.released();
  }

  pubcomp(id: number): void {
    [...this.flows].reverse().find((f) => f.id === id)!.done(null);
  }
}

describe('uplink forwarder: QoS 2 flows go on after a reconnect to a kept session', () => {
  let outbox: FakeOutbox;
  let link: ExactlyOnceLink;
  const forwarders: Forwarder[] = [];

  function make(): Forwarder {
    const f = new Forwarder({
      outbox, link, gatewayId: 'gw1', protocolVersion: 5, sequence311: 'none', inflightWindow: 10, drainRateMsgs: 0, drainRateBytes: 0,
    });
    forwarders.push(f);
    return f;
  }

  beforeEach(() => {
    outbox = new FakeOutbox();
    link = new ExactlyOnceLink();
  });
  afterEach(() => {
    for (const f of forwarders.splice(0)) f.stop();
  });

  it('sends QoS 2 with the packet id of its seq; PUBREL (not the PUBLISH) after a reconnect once HQ had sent PUBREC', async () => {
    outbox.add('event', 'e', 'a', { qos: 2 });
    outbox.add('event', 'e', 'b', { qos: 2 });
    const f = make();
    f.linkUp({ receiveMaximum: 65535, sessionPresent: false });
    await settle();
    expect(link.flows.map((x) => [x.kind, x.id, x.dup])).to.deep.equal([['publish', qos2PacketId(1), false], ['publish', qos2PacketId(2), false]]);
    link.pubrec(qos2PacketId(1)); // seq 1 released; seq 2 not yet
    f.linkDown();
    link.flows = [];
    f.linkUp({ receiveMaximum: 65535, sessionPresent: true });
    await settle();
    expect(link.flows.map((x) => [x.kind, x.id, x.dup])).to.deep.equal([['pubrel', qos2PacketId(1), false], ['publish', qos2PacketId(2), true]]);
    expect(link.sent, 'nothing through the general path').to.deep.equal([]);
    link.pubcomp(qos2PacketId(1));
    link.pubrec(qos2PacketId(2));
    link.pubcomp(qos2PacketId(2));
    await settle();
    expect(outbox.removed).to.deep.equal([1, 2]);
    // Completed: a later reconnect resumes nothing.
    f.linkDown();
    link.flows = [];
    f.linkUp({ receiveMaximum: 65535, sessionPresent: true });
    await settle();
    expect(link.flows).to.deep.equal([]);
  });

  it('without the session at HQ every cut flow starts again with a PUBLISH (a PUBREL would complete what HQ never got)', async () => {
    outbox.add('event', 'e', 'a', { qos: 2 });
    const f = make();
    f.linkUp({ receiveMaximum: 65535, sessionPresent: false });
    await settle();
    link.pubrec(qos2PacketId(1));
    f.linkDown();
    link.flows = [];
    f.linkUp({ receiveMaximum: 65535, sessionPresent: false });
    await settle();
    expect(link.flows.map((x) => [x.kind, x.id, x.dup])).to.deep.equal([['publish', qos2PacketId(1), false]]);
  });

  it('holds a QoS 2 record back while an older one with the same packet id is still in its flow', async () => {
    outbox.add('event', 'e', 'old', { qos: 2 });
    outbox.nextSeq(1 + QOS2_ID_COUNT);
    outbox.add('event', 'e', 'new', { qos: 2 });
    const f = make();
    f.linkUp({ receiveMaximum: 65535, sessionPresent: false });
    await settle();
    expect(link.flows.map((x) => x.seq), 'the newer one waits').to.deep.equal([1]);
    expect(f.stats().inFlight).to.equal(1);
  });
});
