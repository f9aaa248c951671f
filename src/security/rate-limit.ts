// Token bucket (pure, injectable time): `rate` tokens per second, holding at most `burst`.

export class TokenBucket {
  private tokens: number;
  private last: number;

  constructor(private readonly rate: number, private readonly burst: number, now: number) {
    this.tokens = burst;
    this.last = now;
  }

  private refill(now: number): void {
    if (now > this.last) {
      this.tokens = Math.min(this.burst, this.tokens + ((now - this.last) / 1000) * this.rate);
      this.last = now;
    }
  }

  /** Takes n tokens if there are enough; false (nothing taken) otherwise. */
  take(n: number, now: number): boolean {
    this.refill(now);
    if (this.tokens < n) return false;
    this.tokens -= n;
    return true;
  }

  /** Takes n tokens even into debt; returns the ms until the balance is back at zero. */
  force(n: number, now: number): number {
    this.refill(now);
    this.tokens -= n;
    return this.tokens >= 0 ? 0 : Math.ceil((-this.tokens / this.rate) * 1000);
  }
}

/** A client's publish rate: messages/s and bytes/s, each with one second of burst. */
export class PublishRate {
  private readonly msgs: TokenBucket | null;
  private readonly bytes: TokenBucket | null;

  constructor(msgsPerSec: number, bytesPerSec: number, now: number) {
    this.msgs = msgsPerSec > 0 ? new TokenBucket(msgsPerSec, msgsPerSec, now) : null;
    this.bytes = bytesPerSec > 0 ? new TokenBucket(bytesPerSec, bytesPerSec, now) : null;
  }

  /** Counts one message of `size` bytes; returns 0 if within the rate, else ms to wait before reading more. */
  charge(size: number, now: number): number {
    const a = this.msgs ? this.msgs.force(1, now) : 0;
    const b = this.bytes ? this.bytes.force(size, now) : 0;
    return Math.max(a, b);
  }
}
