import { expect } from 'chai';
import fc from 'fast-check';
import { SeqIndex } from '../../src/store/seq-index.js';

describe('SeqIndex (the store mirror of one session: seq → message id)', () => {
  it('behaves like a Map under any sequence of sets and deletes', () => {
    const op = fc.oneof(
      // Mostly appends at the end, like the broker's deliveries...
      fc.record({ kind: fc.constant('append' as const), id: fc.integer({ min: 1, max: 50 }) }),
      // ...and deletes from the front, some out of order, and rewrites of existing seqs.
      fc.record({ kind: fc.constant('deleteFront' as const) }),
      fc.record({ kind: fc.constant('delete' as const), seq: fc.integer({ min: 0, max: 3000 }) }),
      fc.record({ kind: fc.constant('set' as const), seq: fc.integer({ min: 0, max: 3000 }), id: fc.integer({ min: 1, max: 50 }) }),
    );
    fc.assert(
      fc.property(fc.array(op, { maxLength: 4000 }), (ops) => {
        const index = new SeqIndex();
        const model = new Map<number, number>();
        let next = 1;
        for (const o of ops) {
          if (o.kind === 'append') {
            const seq = next++;
            expect(index.set(seq, o.id)).to.equal(model.get(seq));
            model.set(seq, o.id);
          } else if (o.kind === 'deleteFront') {
            const first = Math.min(...model.keys());
            if (Number.isFinite(first)) {
              expect(index.delete(first)).to.equal(model.get(first));
              model.delete(first);
            }
          } else if (o.kind === 'delete') {
            expect(index.delete(o.seq)).to.equal(model.get(o.seq));
            model.delete(o.seq);
          } else {
            expect(index.set(o.seq, o.id)).to.equal(model.get(o.seq));
            model.set(o.seq, o.id);
            if (o.seq >= next) next = o.seq + 1;
          }
          expect(index.size).to.equal(model.size);
        }
        expect(index.keys()).to.deep.equal([...model.keys()].sort((a, b) => a - b));
        for (const [seq, id] of model) expect(index.get(seq)).to.equal(id);
      }),
      { numRuns: 200 },
    );
  });

  it('keeps its arrays short when deliveries leave from the front', () => {
    const index = new SeqIndex();
    let wrong = 0;
    for (let seq = 1; seq <= 100_000; seq++) {
      index.set(seq, seq);
      if (seq > 10 && index.delete(seq - 10) !== seq - 10) wrong++;
    }
    expect(wrong, 'deletes that did not return their message id').to.equal(0);
    expect(index.size).to.equal(10);
    expect(index.keys()).to.deep.equal(Array.from({ length: 10 }, (_, i) => 99_991 + i));
    // The front is cut off as it goes: the arrays hold a few thousand entries, not 100,000.
    expect((index as unknown as { seqs: number[] }).seqs.length).to.be.below(3000);
  });

  it('refuses message id 0 (it marks a deleted entry)', () => {
    expect(() => new SeqIndex().set(1, 0)).to.throw(RangeError, /message id must be > 0/);
  });
});
