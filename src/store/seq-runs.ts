// Deletes by key range: acknowledgements arrive mostly in order, so the rows a commit deletes
// (a persistent session's deliveries, the outbox rows HQ acknowledged) are usually consecutive
// seqs. One `seq BETWEEN ? AND ?` statement per run costs the writer one statement instead of one
// per row (binding, stepping, resetting).

/**
 * Splits seqs (any order, no duplicates; sorted in place) into runs, returned flat as
 * [from0, to0, from1, to1, …]. Two neighbours a < b share a run only when canSpan(a, b) says no
 * row to keep lies strictly between them; canSpan is not asked about neighbours b = a + 1.
 */
export function seqRuns(seqs: number[], canSpan: (lo: number, hi: number) => boolean): number[] {
  const out: number[] = [];
  if (seqs.length === 0) return out;
  seqs.sort((a, b) => a - b);
  let from = seqs[0]!;
  let to = from;
  for (let i = 1; i < seqs.length; i++) {
    const s = seqs[i]!;
    if (s === to + 1 || canSpan(to, s)) {
      to = s;
      continue;
    }
    out.push(from, to);
    from = s;
    to = s;
  }
  out.push(from, to);
  return out;
}

/** canSpan for strictly consecutive runs (when what lies between is unknown). */
export const noGaps = (): boolean => false;
