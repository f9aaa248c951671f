import { expect } from 'chai';
import fc from 'fast-check';
import {
  EVICTION_ORDER,
  emptyTotals,
  floorCapacity,
  outboxCapacity,
  planEviction,
  totalBytes,
  type ClassTotalsByClass,
} from '../../src/bridge/eviction.js';
import { OUTBOX_CLASSES, type OutboxClass } from '../../src/bridge/types.js';

function totals(bytes: Partial<Record<OutboxClass, number>>): ClassTotalsByClass {
  const t = emptyTotals();
  for (const [cls, b] of Object.entries(bytes) as [OutboxClass, number][]) t[cls] = { count: b > 0 ? 1 : 0, bytes: b };
  return t;
}

describe('outbox eviction policy (pure)', () => {
  it('accepts without dropping anything when the newcomer fits', () => {
    const d = planEviction({
      byClass: totals({ bulk: 100, alarm: 100 }),
      expired: totals({ bulk: 50 }),
      incoming: { cls: 'bulk', size: 100 },
      capacityBytes: 300,
    });
    expect(d).to.deep.equal({ accept: true, needBytes: 0, dropExpired: false, evict: [] });
  });

  it('drops expired records first, and evicts nothing live when they make room', () => {
    const d = planEviction({
      byClass: totals({ bulk: 100, event: 100 }),
      expired: totals({ event: 60 }),
      incoming: { cls: 'telemetry', size: 50 },
      capacityBytes: 200,
    });
    expect(d).to.deep.equal({ accept: true, needBytes: 50, dropExpired: true, evict: [] });
  });

  it('then evicts the lowest class: bulk, telemetry, event', () => {
    const d = planEviction({
      byClass: totals({ bulk: 30, telemetry: 40, event: 100, alarm: 10 }),
      expired: totals({ telemetry: 10 }),
      incoming: { cls: 'event', size: 100 },
      capacityBytes: 180,
    });
    // need = 180 + 100 - 180 = 100: 10 expired, 30 bulk, 30 live telemetry, 30 event
    expect(d.accept).to.equal(true);
    expect(d.needBytes).to.equal(100);
    expect(d.dropExpired).to.equal(true);
    expect(d.evict).to.deep.equal([
      { cls: 'bulk', bytes: 30 },
      { cls: 'telemetry', bytes: 30 },
      { cls: 'event', bytes: 30 },
    ]);
  });

  it('an alarm newcomer evicts non-alarms', () => {
    const d = planEviction({
      byClass: totals({ alarm: 100, event: 100 }),
      expired: emptyTotals(),
      incoming: { cls: 'alarm', size: 50 },
      capacityBytes: 200,
    });
    expect(d).to.deep.equal({ accept: true, needBytes: 50, dropExpired: false, evict: [{ cls: 'event', bytes: 50 }] });
  });

  it('refuses any newcomer, alarms included, when only alarms remain; nothing live is dropped', () => {
    for (const cls of OUTBOX_CLASSES) {
      const d = planEviction({
        byClass: totals({ alarm: 200 }),
        expired: emptyTotals(),
        incoming: { cls, size: 10 },
        capacityBytes: 200,
      });
      expect(d, cls).to.deep.equal({ accept: false, needBytes: 10, dropExpired: false, evict: [] });
    }
  });

  it('refuses when the non-alarms cannot make enough room, but still drops expired alarms', () => {
    const d = planEviction({
      byClass: totals({ alarm: 180, bulk: 20 }),
      expired: totals({ alarm: 10 }),
      incoming: { cls: 'alarm', size: 50 },
      capacityBytes: 200,
    });
    expect(d).to.deep.equal({ accept: false, needBytes: 50, dropExpired: true, evict: [] });
  });

  it('refuses a newcomer larger than the capacity', () => {
    const d = planEviction({
      byClass: totals({ bulk: 100 }),
      expired: emptyTotals(),
      incoming: { cls: 'alarm', size: 301 },
      capacityBytes: 300,
    });
    expect(d.accept).to.equal(false);
  });

  it('capacity: the budget lowered by the filesystem floor, never negative', () => {
    expect(outboxCapacity(1000, Infinity)).to.equal(1000);
    expect(outboxCapacity(1000, 400)).to.equal(400);
    expect(outboxCapacity(1000, -5)).to.equal(0);
    expect(floorCapacity({ outboxBytes: 500, freeBytes: 1000, reusableBytes: 200, minFreeBytes: 800 })).to.equal(900);
    expect(floorCapacity({ outboxBytes: 500, freeBytes: 100, reusableBytes: 0, minFreeBytes: 800 })).to.equal(-200);
  });

  describe('properties', () => {
    const cls = fc.constantFrom(...OUTBOX_CLASSES);
    const classBytes = fc.record({
      alarm: fc.nat(10_000),
      event: fc.nat(10_000),
      telemetry: fc.nat(10_000),
      bulk: fc.nat(10_000),
    });
    const input = fc
      .record({
        held: classBytes,
        expiredShare: fc.record({ alarm: fc.double({ min: 0, max: 1, noNaN: true }), event: fc.double({ min: 0, max: 1, noNaN: true }), telemetry: fc.double({ min: 0, max: 1, noNaN: true }), bulk: fc.double({ min: 0, max: 1, noNaN: true }) }),
        cls,
        size: fc.integer({ min: 1, max: 5_000 }),
        capacity: fc.nat(45_000),
      })
      .map(({ held, expiredShare, cls: incomingCls, size, capacity }) => {
        const byClass = totals(held);
        const expired = emptyTotals();
        for (const c of OUTBOX_CLASSES) expired[c] = { count: 0, bytes: Math.floor(held[c] * expiredShare[c]) };
        return { byClass, expired, incoming: { cls: incomingCls, size }, capacityBytes: capacity };
      });

    function liveBytes(i: { byClass: ClassTotalsByClass; expired: ClassTotalsByClass }, c: OutboxClass): number {
      return i.byClass[c].bytes - i.expired[c].bytes;
    }

    it('never evicts alarms', () => {
      fc.assert(
        fc.property(input, (i) => {
          expect(planEviction(i).evict.map((e) => e.cls)).to.not.include('alarm');
        }),
      );
    });

    it('accepted ⇒ after the drops the newcomer fits the capacity', () => {
      fc.assert(
        fc.property(input, (i) => {
          const d = planEviction(i);
          if (!d.accept) return;
          let after = totalBytes(i.byClass) + i.incoming.size;
          if (d.dropExpired) for (const c of OUTBOX_CLASSES) after -= i.expired[c].bytes;
          for (const e of d.evict) after -= e.bytes;
          expect(after).to.be.at.most(i.capacityBytes);
        }),
      );
    });

    it('refused ⇔ expired plus every live non-alarm byte would not make room', () => {
      fc.assert(
        fc.property(input, (i) => {
          const d = planEviction(i);
          let freeable = 0;
          for (const c of OUTBOX_CLASSES) freeable += i.expired[c].bytes;
          for (const c of EVICTION_ORDER) freeable += liveBytes(i, c);
          const fits = totalBytes(i.byClass) + i.incoming.size - freeable <= i.capacityBytes;
          expect(d.accept).to.equal(fits);
          if (!d.accept) expect(d.evict).to.deep.equal([]);
        }),
      );
    });

    it('evicts a class only once every lower class is used up, and never more than needed or held', () => {
      fc.assert(
        fc.property(input, (i) => {
          const d = planEviction(i);
          const order = d.evict.map((e) => EVICTION_ORDER.indexOf(e.cls));
          expect(order).to.deep.equal([...order].sort((a, b) => a - b));
          for (let k = 0; k < d.evict.length; k++) {
            const e = d.evict[k]!;
            expect(e.bytes).to.be.greaterThan(0);
            expect(e.bytes).to.be.at.most(liveBytes(i, e.cls));
            // Every class below this one (and present in the plan before it) is taken entirely.
            for (const lower of EVICTION_ORDER.slice(0, EVICTION_ORDER.indexOf(e.cls))) {
              const taken = d.evict.find((x) => x.cls === lower)?.bytes ?? 0;
              expect(taken).to.equal(liveBytes(i, lower));
            }
          }
          const planned = d.evict.reduce((n, e) => n + e.bytes, 0);
          let expiredBytes = 0;
          for (const c of OUTBOX_CLASSES) expiredBytes += i.expired[c].bytes;
          expect(planned).to.be.at.most(Math.max(0, d.needBytes - expiredBytes));
        }),
      );
    });

    it('nothing is dropped when the newcomer fits', () => {
      fc.assert(
        fc.property(input, (i) => {
          const d = planEviction(i);
          if (totalBytes(i.byClass) + i.incoming.size <= i.capacityBytes) {
            expect(d).to.deep.equal({ accept: true, needBytes: 0, dropExpired: false, evict: [] });
          }
        }),
      );
    });

    it('the newcomer\'s class does not change the decision', () => {
      fc.assert(
        fc.property(input, cls, (i, other) => {
          expect(planEviction({ ...i, incoming: { ...i.incoming, cls: other } })).to.deep.equal(planEviction(i));
        }),
      );
    });
  });
});
