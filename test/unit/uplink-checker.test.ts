// The uplink checker on hand-made histories: each property it proves is shown failing and passing.
import { expect } from 'chai';
import {
  assertUplinkOk, checkUplink, parseReceived, type AcceptedMessage, type ReceivedMessage, type UplinkClass,
} from '../helpers/uplink-checker.js';
import { orderWithNewestFirst } from '../helpers/uplink-scene.js';

const GW = 'gw1';

/** Accepted messages m0..m(n-1) of one class, localSeq = index. */
function acceptedRun(n: number, cls: UplinkClass = 'event', from = 0): AcceptedMessage[] {
  return Array.from({ length: n }, (_, i) => ({ key: `m${from + i}`, cls, localSeq: from + i }));
}

/** What an MQTT 5 HQ receives for key with gateway seq. */
function v5(key: string, seq: number, topic = 'fleet/gw1/events/x', gw = GW): ReceivedMessage {
  return { topic, payload: Buffer.from(key), userProperties: { gw, seq: String(seq) } };
}

/** What a 3.1.1 HQ receives (topic suffix /gw/seq). */
function v4(key: string, seq: number, topic = 'fleet/gw1/events/x', gw = GW): ReceivedMessage {
  return { topic: `${topic}/${gw}/${seq}`, payload: key };
}

/** In-order delivery of keys m{from}.. with seqs starting at seq0. */
function deliveredRun(n: number, seq0 = 1, from = 0, make = v5): ReceivedMessage[] {
  return Array.from({ length: n }, (_, i) => make(`m${from + i}`, seq0 + i));
}

describe('uplink checker', () => {
  describe('parseReceived', () => {
    it('reads gw and seq from MQTT 5 user properties (single or repeated)', () => {
      expect(parseReceived(v5('a', 7))).to.deep.equal({ topic: 'fleet/gw1/events/x', gateway: 'gw1', seq: 7 });
      const rep = { topic: 't', payload: '', userProperties: { gw: ['gw2', 'x'], seq: ['9'] } };
      expect(parseReceived(rep)).to.deep.equal({ topic: 't', gateway: 'gw2', seq: 9 });
    });

    it('reads the 3.1.1 topic suffix and strips it from the topic', () => {
      expect(parseReceived(v4('a', 42))).to.deep.equal({ topic: 'fleet/gw1/events/x', gateway: 'gw1', seq: 42 });
      expect(parseReceived({ topic: 'fleet/gw1/status', payload: 'online' })).to.deep.equal({
        topic: 'fleet/gw1/status', gateway: undefined, seq: undefined,
      });
      expect(parseReceived({ topic: 'a/b/-1', payload: '' }).seq).to.equal(undefined);
    });

    it('with protocol 5 does not read a topic suffix', () => {
      expect(parseReceived(v4('a', 3), 5).seq).to.equal(undefined);
    });
  });

  it('a clean run passes and counts everything', () => {
    const r = checkUplink(acceptedRun(100), deliveredRun(100));
    assertUplinkOk(r);
    expect(r).to.include({ accepted: 100, received: 100, delivered: 100, duplicates: 0, unsequenced: 0, dropped: 0 });
    expect(r.gateways[GW]).to.deep.equal({ received: 100, min: 1, max: 100, missing: [], allowedMissing: 0 });
  });

  it('a clean 3.1.1 run passes', () => {
    assertUplinkOk(checkUplink(acceptedRun(20), deliveredRun(20, 1, 0, v4), { protocol: 4 }));
  });

  it('reports lost messages', () => {
    const got = deliveredRun(10).filter((_, i) => i !== 3 && i !== 7);
    const r = checkUplink(acceptedRun(10), got);
    expect(r.ok).to.equal(false);
    expect(r.lost).to.deep.equal(['m3', 'm7']);
    expect(r.problems.join()).to.match(/2 accepted message\(s\) lost/);
    // Their seqs are missing too.
    expect(r.gateways[GW]!.missing).to.deep.equal([4, 8]);
    expect(() => assertUplinkOk(r)).to.throw(/lost/);
  });

  it('evicted and expired messages are not lost, and excuse as many seq gaps', () => {
    const acc = acceptedRun(10);
    acc[3]!.dropped = 'evicted';
    acc[7]!.dropped = 'expired';
    const got = deliveredRun(10).filter((_, i) => i !== 3 && i !== 7);
    const r = checkUplink(acc, got);
    assertUplinkOk(r);
    expect(r.dropped).to.equal(2);
    expect(r.gateways[GW]).to.include({ allowedMissing: 2 });
    // One more hole than drops fails.
    const r2 = checkUplink(acc, got.filter((m) => payload(m) !== 'm5'));
    expect(r2.ok).to.equal(false);
    expect(r2.lost).to.deep.equal(['m5']);
    expect(r2.problems.join()).to.match(/gateway gw1: 3 seq\(s\) missing/);
  });

  it('a seq gap alone (message received but a seq skipped) fails', () => {
    const got = [v5('m0', 1), v5('m1', 2), v5('m2', 4)];
    const r = checkUplink(acceptedRun(3), got);
    expect(r.ok).to.equal(false);
    expect(r.lost).to.deep.equal([]);
    expect(r.gateways[GW]!.missing).to.deep.equal([3]);
  });

  it('firstSeq makes holes before the lowest received seq count', () => {
    const got = deliveredRun(3, 5);
    assertUplinkOk(checkUplink(acceptedRun(3), got));
    const r = checkUplink(acceptedRun(3), got, { firstSeq: { gw1: 1 } });
    expect(r.gateways[GW]!.missing).to.deep.equal([1, 2, 3, 4]);
    expect(r.ok).to.equal(false);
  });

  it('tracks seqs per gateway', () => {
    const acc: AcceptedMessage[] = [
      { key: 'a0', cls: 'event', localSeq: 0, gateway: 'gwA' },
      { key: 'b0', cls: 'event', localSeq: 1, gateway: 'gwB' },
      { key: 'a1', cls: 'event', localSeq: 2, gateway: 'gwA', dropped: 'evicted' },
      { key: 'a2', cls: 'event', localSeq: 3, gateway: 'gwA' },
      { key: 'b1', cls: 'event', localSeq: 4, gateway: 'gwB' },
    ];
    const got = [v5('a0', 1, 't', 'gwA'), v5('b0', 1, 't', 'gwB'), v5('a2', 3, 't', 'gwA'), v5('b1', 3, 't', 'gwB')];
    const r = checkUplink(acc, got);
    expect(r.gateways.gwA).to.deep.include({ missing: [2], allowedMissing: 1 });
    expect(r.gateways.gwB).to.deep.include({ missing: [2], allowedMissing: 0 });
    expect(r.ok).to.equal(false);
    expect(r.problems).to.have.length(1);
    expect(r.problems[0]).to.match(/gateway gwB/);
  });

  it('duplicates fail without a reconnect and pass within reconnects × window', () => {
    const got = deliveredRun(10);
    got.push(v5('m8', 9), v5('m9', 10)); // redelivered after a reconnect, same seqs
    const strict = checkUplink(acceptedRun(10), got);
    expect(strict.ok).to.equal(false);
    expect(strict.duplicates).to.equal(2);
    expect(strict.duplicateKeys).to.deep.equal(['m8', 'm9']);
    expect(strict.problems.join()).to.match(/without a reconnect/);

    const r = checkUplink(acceptedRun(10), got, { reconnects: 1, window: 2 });
    assertUplinkOk(r);
    expect(r.duplicatesAllowed).to.equal(2);
    expect(r.reSequenced).to.deep.equal([]);

    const tooMany = checkUplink(acceptedRun(10), got, { reconnects: 1, window: 1 });
    expect(tooMany.ok).to.equal(false);
    expect(tooMany.problems.join()).to.match(/more than 1/);
  });

  it('a duplicate stored twice (new seq) is flagged as re-sequenced', () => {
    const got = [...deliveredRun(3), v5('m2', 4)];
    const r = checkUplink(acceptedRun(3), got, { reconnects: 1 });
    assertUplinkOk(r);
    expect(r.reSequenced).to.deep.equal(['m2']);
  });

  it('reports order violations within a class', () => {
    const got = [v5('m0', 1), v5('m2', 3), v5('m1', 2), v5('m3', 4)];
    const r = checkUplink(acceptedRun(4), got);
    expect(r.ok).to.equal(false);
    expect(r.orderViolations).to.deep.equal([{ cls: 'event', key: 'm1', localSeq: 1, afterKey: 'm2', afterLocalSeq: 2 }]);
  });

  it('allows interleaving across classes (alarms overtaking events)', () => {
    const acc = [...acceptedRun(3, 'event'), ...acceptedRun(2, 'alarm', 3)];
    const got = [v5('m3', 4), v5('m4', 5), v5('m0', 1), v5('m1', 2), v5('m2', 3)];
    assertUplinkOk(checkUplink(acc, got));
  });

  it('duplicates do not count as reordering (order is by first delivery)', () => {
    const got = [...deliveredRun(5), v5('m3', 4), v5('m4', 5), ...deliveredRun(2, 6, 5)];
    assertUplinkOk(checkUplink(acceptedRun(7), got, { reconnects: 1 }));
  });

  describe('newest telemetry per topic first after a link-up', () => {
    // Telemetry on two topics: a backlog of m0..m5 (even on gps, odd on speed), link comes up,
    // newest per topic (m4 gps, m5 speed) go first, then the rest of the backlog.
    const acc = acceptedRun(6, 'telemetry');
    const topic = (i: number): string => (i % 2 === 0 ? 'fleet/gw1/telemetry/gps' : 'fleet/gw1/telemetry/speed');
    const msg = (i: number): ReceivedMessage => v5(`m${i}`, i + 1, topic(i));

    it('passes in the default configuration', () => {
      const got = [4, 5, 0, 1, 2, 3].map(msg);
      const r = checkUplink(acc, got);
      assertUplinkOk(r);
      expect(r.newestFirst).to.deep.equal(['m4', 'm5']);
    });

    it('fails when the class is not newest-first', () => {
      const got = [4, 5, 0, 1, 2, 3].map(msg);
      expect(checkUplink(acc, got, { newestFirstClasses: [] }).ok).to.equal(false);
      // Events are never newest-first.
      const ev = acceptedRun(6, 'event');
      expect(checkUplink(ev, got).ok).to.equal(false);
    });

    it('allows one burst per link-up only', () => {
      // Two bursts: 4 first, later 5 first again.
      const accLong = acceptedRun(8, 'telemetry');
      const got = [0, 3, 1, 2, 7, 4, 5, 6].map((i) => v5(`m${i}`, i + 1, `t/${i % 2}`));
      expect(checkUplink(accLong, got).ok).to.equal(false);
      assertUplinkOk(checkUplink(accLong, got, { reconnects: 1 }));
    });

    it('does not excuse two overtakers of the same topic', () => {
      const got = [4, 2, 5, 0, 1, 3].map(msg); // m4 and m2 are both gps
      const r = checkUplink(acc, got);
      expect(r.ok).to.equal(false);
      expect(r.newestFirst).to.deep.equal(['m4', 'm5']);
      expect(r.orderViolations.map((v) => v.key)).to.deep.equal(['m0', 'm1']);
    });

    it('does not excuse an overtaker older than a message of its topic already delivered', () => {
      const got = [0, 4, 1, 2, 3, 5].map(msg); // m4 overtakes m1..m3 and is the newest gps: fine
      assertUplinkOk(checkUplink(acc, got));
      const bad = [4, 5, 2, 0, 1, 3].map(msg); // after the burst, m2 (gps, older than m4) overtakes m0
      const r = checkUplink(acc, bad);
      expect(r.ok).to.equal(false);
      expect(r.orderViolations.map((v) => v.key)).to.include('m0');
    });
  });

  it('lists unknown and unsequenced messages without failing, and honours ignore', () => {
    const got = [
      ...deliveredRun(2),
      v5('stray', 3),
      { topic: 'fleet/gw1/status', payload: 'online' },
    ];
    const r = checkUplink(acceptedRun(2), got);
    assertUplinkOk(r);
    expect(r.unknown).to.deep.equal(['stray', 'online']);
    expect(r.unsequenced).to.equal(1);
    const r2 = checkUplink(acceptedRun(2), got, { ignore: (m) => m.topic.endsWith('/status') });
    expect(r2.received).to.equal(3);
    expect(r2.unsequenced).to.equal(0);
  });

  it('uses a custom key function', () => {
    const acc = acceptedRun(2);
    const got = [
      { topic: 'x', payload: JSON.stringify({ id: 'm0', v: 1 }), userProperties: { gw: GW, seq: '1' } },
      { topic: 'x', payload: JSON.stringify({ id: 'm1', v: 2 }), userProperties: { gw: GW, seq: '2' } },
    ];
    const r = checkUplink(acc, got, { keyOf: (m) => (JSON.parse(String(m.payload)) as { id: string }).id });
    assertUplinkOk(r);
    expect(r.delivered).to.equal(2);
  });

  it('rejects duplicate accepted keys (a broken test, not a broken uplink)', () => {
    expect(() => checkUplink([...acceptedRun(2), { key: 'm0', cls: 'event', localSeq: 9 }], [])).to.throw(/appears twice/);
  });
});

function payload(m: ReceivedMessage): string {
  return typeof m.payload === 'string' ? m.payload : Buffer.from(m.payload).toString();
}

describe('orderWithNewestFirst (the soak\'s per-message order check)', () => {
  // Topic X: x1 (accepted at 0 ms), x2 (at 10 ms); topic Y: y1 (at 5 ms). The link comes up at
  // about 100 ms and the forwarder sends x2 first (newest of X), then the backlog x1, y1.
  const accepted: AcceptedMessage[] = [
    { key: 'x1', cls: 'telemetry', localSeq: 1, at: 0 },
    { key: 'y1', cls: 'telemetry', localSeq: 2, at: 5 },
    { key: 'x2', cls: 'telemetry', localSeq: 3, at: 10 },
  ];
  const topicOf = new Map([['x1', 'X'], ['x2', 'X'], ['y1', 'Y'], ['x3', 'X']]);
  const got = (keys: [string, number][]): ReceivedMessage[] => keys.map(([k, at]) => ({ topic: 't', payload: k, at }));

  it('excuses the newest message of a topic sent first after a link-up', () => {
    const r = orderWithNewestFirst(accepted, got([['x2', 110], ['x1', 120], ['y1', 130]]), topicOf, 1);
    expect(r.violations).to.deep.equal([]);
    expect(r.exempt).to.equal(1);
  });

  it('still excuses it when a newer message of its topic was accepted between the pick and its arrival', () => {
    // x3 accepted at 105 ms: after the link-up's pick, before x2 arrived at 110 ms.
    const withX3 = [...accepted, { key: 'x3', cls: 'telemetry' as const, localSeq: 4, at: 105 }];
    const r = orderWithNewestFirst(withX3, got([['x2', 110], ['x1', 120], ['y1', 130], ['x3', 140]]), topicOf, 1);
    expect(r.violations).to.deep.equal([]);
  });

  it('does not excuse a message of a topic that had a newer one accepted well before it arrived', () => {
    // x3 accepted at 20 ms, so a link-up at about 1,000 ms would pick x3, not x2.
    const withX3 = [...accepted, { key: 'x3', cls: 'telemetry' as const, localSeq: 4, at: 20 }];
    const r = orderWithNewestFirst(withX3, got([['x2', 1100], ['x1', 1110], ['y1', 1120], ['x3', 1130]]), topicOf, 1);
    expect(r.violations).to.deep.equal(['telemetry x1 (#1) after x2 (#3)', 'telemetry y1 (#2) after x2 (#3)']);
  });
});
