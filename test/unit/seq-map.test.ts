import { expect } from 'chai';
import fc from 'fast-check';
import { SeqMap } from '../../src/store/seq-map.js';

function contents(m: SeqMap<string>): [number, string][] {
  const out: [number, string][] = [];
  m.forEach((v, k) => out.push([k, v]));
  return out.sort((a, b) => a[0] - b[0]);
}

describe('SeqMap (seq → value, for the drain: in flight and pending deletes)', () => {
  it('behaves like a Map under any sequence of sets, deletes and clears', () => {
    const op = fc.oneof(
      // Seqs close together (as in flight) and far apart, colliding modulo any capacity.
      fc.record({ kind: fc.constant('set' as const), seq: fc.oneof(fc.integer({ min: 1, max: 300 }), fc.integer({ min: 1, max: 2 ** 40 })), v: fc.string({ maxLength: 3 }) }),
      fc.record({ kind: fc.constant('delete' as const), seq: fc.integer({ min: 0, max: 300 }) }),
      fc.record({ kind: fc.constant('clear' as const) }),
    );
    fc.assert(
      fc.property(fc.array(op, { maxLength: 600 }), (ops) => {
        const m = new SeqMap<string>();
        const model = new Map<number, string>();
        for (const o of ops) {
          if (o.kind === 'set') {
            m.set(o.seq, o.v);
            model.set(o.seq, o.v);
          } else if (o.kind === 'delete') {
            expect(m.delete(o.seq)).to.equal(model.delete(o.seq));
          } else {
            m.clear();
            model.clear();
          }
          expect(m.size).to.equal(model.size);
        }
        for (const [k, v] of model) {
          expect(m.has(k)).to.equal(true);
          expect(m.get(k)).to.equal(v);
        }
        expect(contents(m)).to.deep.equal([...model].sort((a, b) => a[0] - b[0]));
        expect(m.sortedKeys()).to.deep.equal([...model.keys()].sort((a, b) => a - b));
      }),
      { numRuns: 300 },
    );
  });

  it('keeps a seq whose slot is taken on the side, and finds it there after the slot frees', () => {
    const m = new SeqMap<string>(16);
    // 1, 17, 33 share slot 1.
    for (const seq of [1, 17, 33, 2]) m.set(seq, `v${seq}`);
    expect(m.delete(1)).to.equal(true);
    expect(m.get(17)).to.equal('v17');
    // 17 is on the side; setting it again must not make a second copy in the freed slot.
    m.set(17, 'again');
    expect(m.size).to.equal(3);
    expect(m.get(17)).to.equal('again');
    expect(m.delete(17)).to.equal(true);
    expect(m.has(17)).to.equal(false);
    expect(m.get(33)).to.equal('v33');
    expect(m.get(2)).to.equal('v2');
    expect(m.size).to.equal(2);
  });

  it('never holds 0 or a negative, fractional or unsafe seq', () => {
    const m = new SeqMap<string>();
    expect(m.has(0)).to.equal(false);
    expect(m.get(0)).to.equal(undefined);
    for (const bad of [0, -1, 1.5, Number.NaN, 2 ** 53]) expect(() => m.set(bad, 'x')).to.throw(RangeError);
    expect(m.size).to.equal(0);
  });

  it('grows past its first capacity and keeps its arrays through clear()', () => {
    const m = new SeqMap<number>(16);
    for (let seq = 1000; seq < 3000; seq++) m.set(seq, seq * 2);
    expect(m.size).to.equal(2000);
    expect(m.get(2999)).to.equal(5998);
    m.clear();
    expect(m.size).to.equal(0);
    expect(m.has(1500)).to.equal(false);
    m.set(5, 10);
    expect(m.get(5)).to.equal(10);
  });
});
