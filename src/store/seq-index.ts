// The store's mirror of one session's deliveries on disk: seq → message id (sqlite-state-store.ts).
//
// Deliveries are written in increasing seq order and mostly acknowledged (deleted) from the front,
// so two parallel arrays sorted by seq do what a Map does here at a fraction of its memory and
// time: a store with a large queue builds the mirror at every start, one entry per delivery. A
// deleted entry keeps its seq with message id 0 (ids start at 1) until the front passes it; the
// front is cut off once it is most of the arrays.

/** Deleted entries before the front that trigger a cut of the arrays (and at least half of them). */
const COMPACT_AT = 1024;

export class SeqIndex {
  private seqs: number[] = [];
  private ids: number[] = [];
  /** First entry not known deleted. */
  private head = 0;
  private live = 0;

  /** Entries present. */
  get size(): number {
    return this.live;
  }

  get(seq: number): number | undefined {
    const i = this.find(seq);
    if (i < 0) return undefined;
    const id = this.ids[i]!;
    return id === 0 ? undefined : id;
  }

  has(seq: number): boolean {
    return this.get(seq) !== undefined;
  }

  /** Sets seq → messageId (> 0); returns the message id it replaced, if any. */
  set(seq: number, messageId: number): number | undefined {
    if (!(messageId > 0)) throw new RangeError(`SeqIndex: message id must be > 0, not ${messageId}`);
    const n = this.seqs.length;
    if (n === this.head || seq > this.seqs[n - 1]!) {
      this.seqs.push(seq);
      this.ids.push(messageId);
      this.live++;
      return undefined;
    }
    const i = this.find(seq);
    if (i >= 0) {
      const before = this.ids[i]!;
      this.ids[i] = messageId;
      if (before === 0) {
        this.live++;
        return undefined;
      }
      return before;
    }
    // Below the highest seq and not present: rare (not written in order); keep the arrays sorted.
    const at = this.lowerBound(seq);
    this.seqs.splice(at, 0, seq);
    this.ids.splice(at, 0, messageId);
    this.live++;
    return undefined;
  }

  /** Removes seq; returns its message id, or undefined when it was not there. */
  delete(seq: number): number | undefined {
    const i = this.find(seq);
    if (i < 0) return undefined;
    const id = this.ids[i]!;
    if (id === 0) return undefined;
    this.ids[i] = 0;
    this.live--;
    if (i === this.head) this.advance();
    return id;
  }

  /** The seqs present, in increasing order. */
  keys(): number[] {
    const out: number[] = [];
    for (let i = this.head; i < this.seqs.length; i++) if (this.ids[i] !== 0) out.push(this.seqs[i]!);
    return out;
  }

  private advance(): void {
    const n = this.seqs.length;
    while (this.head < n && this.ids[this.head] === 0) this.head++;
    if (this.head === n) {
      this.seqs = [];
      this.ids = [];
      this.head = 0;
    } else if (this.head >= COMPACT_AT && this.head * 2 >= n) {
      this.seqs = this.seqs.slice(this.head);
      this.ids = this.ids.slice(this.head);
      this.head = 0;
    }
  }

  /** Index of seq among the entries from the front, or -1. */
  private find(seq: number): number {
    const i = this.lowerBound(seq);
    return i < this.seqs.length && this.seqs[i] === seq ? i : -1;
  }

  /** First index from the front whose seq is >= seq. */
  private lowerBound(seq: number): number {
    let lo = this.head;
    let hi = this.seqs.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.seqs[mid]! < seq) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }
}
