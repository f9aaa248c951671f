import { expect } from 'chai';
import { noGaps, seqRuns } from '../../src/store/seq-runs.js';

describe('seqRuns', () => {
  it('returns nothing for no seqs', () => {
    expect(seqRuns([], noGaps)).to.deep.equal([]);
  });

  it('joins consecutive seqs into one run, in any input order', () => {
    expect(seqRuns([5, 3, 4, 6], noGaps)).to.deep.equal([3, 6]);
  });

  it('splits at a gap it may not span', () => {
    expect(seqRuns([1, 2, 4, 5, 9], noGaps)).to.deep.equal([1, 2, 4, 5, 9, 9]);
  });

  it('spans a gap when nothing to keep lies in it, and asks only about real gaps', () => {
    const asked: Array<[number, number]> = [];
    const keep = new Set([7]);
    const canSpan = (lo: number, hi: number): boolean => {
      asked.push([lo, hi]);
      for (let s = lo + 1; s < hi; s++) if (keep.has(s)) return false;
      return true;
    };
    expect(seqRuns([1, 2, 4, 6, 8, 9], canSpan)).to.deep.equal([1, 6, 8, 9]);
    expect(asked).to.deep.equal([
      [2, 4],
      [4, 6],
      [6, 8],
    ]);
  });

  it('keeps a single seq as a run of one', () => {
    expect(seqRuns([42], noGaps)).to.deep.equal([42, 42]);
  });
});
