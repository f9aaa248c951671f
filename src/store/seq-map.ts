// A map from outbox seqs (positive integers) to values, for the drain's hot sets: the records in
// flight to HQ, and the deletes waiting for their commit.
//
// Why not a Map: those sets take and lose an entry per drained message and are emptied at every
// commit. V8's Map allocates a new table each time it grows, rehashes or is cleared, and those
// tables were a fifth of a drain's garbage (heap profile). The seqs of such a set are mostly
// consecutive, so this one is direct-mapped: seq lives in slot seq mod capacity, and a seq whose
// slot is taken by another goes to a small Map on the side. (Open addressing with linear probing
// was tried first: consecutive seqs make one long cluster, and each backward-shift delete walked
// all of it: 2.7 µs per operation against Map's 0.09.) The slots grow when the side Map does;
// they never shrink, and clear() empties them in place. Iteration order is not insertion order.

const EMPTY = 0;
const MIN_CAPACITY = 16;

export class SeqMap<V> {
  private keys: Float64Array;
  private vals: (V | undefined)[];
  private mask: number;
  /** Entries in slots. */
  private inSlots = 0;
  /** Entries whose slot another seq held when they came. */
  private readonly overflow = new Map<number, V>();

  constructor(capacity = MIN_CAPACITY) {
    let cap = MIN_CAPACITY;
    while (cap < capacity) cap *= 2;
    this.keys = new Float64Array(cap);
    this.vals = new Array<V | undefined>(cap).fill(undefined);
    this.mask = cap - 1;
  }

  get size(): number {
    return this.inSlots + this.overflow.size;
  }

  has(seq: number): boolean {
    if (this.keys[seq & this.mask] === seq && seq > 0) return true;
    return this.overflow.size > 0 && this.overflow.has(seq);
  }

  get(seq: number): V | undefined {
    const i = seq & this.mask;
    if (this.keys[i] === seq && seq > 0) return this.vals[i];
    return this.overflow.size > 0 ? this.overflow.get(seq) : undefined;
  }

  set(seq: number, value: V): this {
    if (!(seq > 0) || !Number.isSafeInteger(seq)) throw new RangeError(`SeqMap keys are positive integers, not ${seq}`);
    const i = seq & this.mask;
    const k = this.keys[i]!;
    if (k === seq) {
      this.vals[i] = value;
      return this;
    }
    // Already on the side (its slot was taken when it came): it stays there.
    if (this.overflow.size > 0 && this.overflow.has(seq)) {
      this.overflow.set(seq, value);
      return this;
    }
    if (k === EMPTY) {
      this.keys[i] = seq;
      this.vals[i] = value;
      this.inSlots++;
      return this;
    }
    this.overflow.set(seq, value);
    // The live seqs span more than the slots: more slots.
    if (this.overflow.size * 8 > this.keys.length) this.grow();
    return this;
  }

  delete(seq: number): boolean {
    const i = seq & this.mask;
    if (this.keys[i] === seq && seq > 0) {
      this.keys[i] = EMPTY;
      this.vals[i] = undefined;
      this.inSlots--;
      return true;
    }
    return this.overflow.size > 0 && this.overflow.delete(seq);
  }

  /** Empties the map; its slots keep their number. */
  clear(): void {
    if (this.inSlots > 0) {
      this.keys.fill(EMPTY);
      this.vals.fill(undefined);
      this.inSlots = 0;
    }
    if (this.overflow.size > 0) this.overflow.clear();
  }

  forEach(fn: (value: V, seq: number) => void): void {
    const keys = this.keys;
    const vals = this.vals;
    for (let i = 0; i < keys.length; i++) if (keys[i] !== EMPTY) fn(vals[i]!, keys[i]!);
    if (this.overflow.size > 0) this.overflow.forEach(fn);
  }

  /** The seqs, in ascending order (a new array). */
  sortedKeys(): number[] {
    const out: number[] = [];
    this.forEach((_, seq) => out.push(seq));
    return out.sort((a, b) => a - b);
  }

  private grow(): void {
    const entries: [number, V][] = [];
    this.forEach((v, seq) => entries.push([seq, v]));
    const cap = this.keys.length * 2;
    this.keys = new Float64Array(cap);
    this.vals = new Array<V | undefined>(cap).fill(undefined);
    this.mask = cap - 1;
    this.inSlots = 0;
    this.overflow.clear();
    for (const [seq, v] of entries) this.set(seq, v);
  }
}
