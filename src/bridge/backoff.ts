// Reconnect delays towards HQ (pure): exponential backoff with full jitter, a cap, and a reset
// once a link has stayed up for a stable period. Full jitter (a uniform delay between 0 and the
// exponential bound) spreads a fleet leaving a tunnel over the whole window instead of letting
// every truck retry at the same instants.

/** The bound before jitter: min(cap, base·2^attempt), attempt counted from 0. */
export function backoffCeiling(attempt: number, baseMs: number, capMs: number): number {
  // 2^53 already exceeds any cap; clamping keeps the arithmetic finite.
  const exp = Math.min(Math.max(0, Math.floor(attempt)), 53);
  return Math.min(capMs, baseMs * 2 ** exp);
}

/** One full-jitter delay: random(0, min(cap, base·2^attempt)), `random` in [0, 1). */
export function fullJitterDelay(attempt: number, baseMs: number, capMs: number, random: () => number = Math.random): number {
  const r = random();
  const unit = r >= 0 && r < 1 ? r : 0;
  return Math.floor(unit * backoffCeiling(attempt, baseMs, capMs));
}

export interface BackoffOptions {
  /** Bound of the first delay (attempt 0). */
  initialMs: number;
  /** Largest bound. */
  maxMs: number;
  /** A link up at least this long resets the attempt count when it goes down; 0 = reset on every success. */
  resetAfterMs: number;
  /** Uniform in [0, 1); injectable for tests. */
  random?: () => number;
  /** Clock; injectable for tests. */
  now?: () => number;
}

/**
 * Attempt counter for one link. `next()` gives the delay before the next attempt and counts it;
 * `connected()` marks the link up; `disconnected()` resets the count if the link was up for the
 * stable period (a flapping HQ that accepts and drops keeps backing off).
 */
export class Backoff {
  private attemptNo = 0;
  private upSince: number | null = null;
  private readonly random: () => number;
  private readonly now: () => number;

  constructor(private readonly opts: BackoffOptions) {
    this.random = opts.random ?? Math.random;
    this.now = opts.now ?? Date.now;
  }

  /** Attempts counted since the last reset. */
  get attempts(): number {
    return this.attemptNo;
  }

  /** Delay before the next attempt (ms); counts the attempt. */
  next(): number {
    const d = fullJitterDelay(this.attemptNo, this.opts.initialMs, this.opts.maxMs, this.random);
    if (this.attemptNo < 1000) this.attemptNo++;
    return d;
  }

  connected(): void {
    this.upSince = this.now();
  }

  disconnected(): void {
    if (this.upSince !== null && this.now() - this.upSince >= this.opts.resetAfterMs) this.attemptNo = 0;
    this.upSince = null;
  }

  /** Also resets while up, once the stable period has passed (for status reporting). */
  checkStable(): void {
    if (this.upSince !== null && this.now() - this.upSince >= this.opts.resetAfterMs) this.attemptNo = 0;
  }

  reset(): void {
    this.attemptNo = 0;
  }
}
