// Login abuse: failed logins are counted per address and per user name in a sliding window. Each
// failure is answered a little later than the one before (a growing delay before the refusal is
// sent), and reaching `afterFailures` failures within `windowMs` bans that address or user name
// for `durationMs`. Pure bookkeeping with an injectable clock; the caller sleeps.
//
// Memory is bounded: at most `maxKeys` addresses/user names are tracked for failures and at most
// `maxKeys` bans are held; beyond that the least recently failed key (or the oldest ban) is
// forgotten. A flood of distinct user names can therefore push a ban out early: the per-address
// count still applies to the flooding address.
//
// Trade-off (as in every per-user lockout): someone who knows a user name can get it banned by
// failing on purpose; the per-address ban limits how fast one host can do that.

export interface BanOptions {
  /** Failures within the window that trigger a ban; 0 = never ban (failures are still slowed). */
  afterFailures: number;
  windowMs: number;
  durationMs: number;
  /** Addresses + user names tracked at most (each table). Default 10,000. */
  maxKeys?: number;
  /** Delay after the first failure in the window; doubles with each further one. Default 100 ms. */
  slowdownBaseMs?: number;
  /** Longest delay. Default 3,000 ms. */
  slowdownMaxMs?: number;
  /** Clock in milliseconds. Default Date.now. */
  now?: () => number;
}

export interface BanStatus {
  banned: boolean;
  /** What is banned ("address 10.0.0.7", "user alice"), when banned. */
  what?: string;
  /** When the ban ends (clock ms), when banned. */
  untilMs?: number;
}

export interface FailureOutcome {
  /** How long to wait before sending the refusal. */
  delayMs: number;
  /** True when this failure started a ban (of the address or the user name). */
  bannedNow: boolean;
  /** Failures in the window for the worse of the two keys, this one included. */
  failures: number;
}

/** Normalises an address: IPv4-mapped IPv6 ("::ffff:10.0.0.7") counts as the IPv4 address. */
export function addressKey(address: string): string {
  const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  return `a:${m ? m[1] : address.toLowerCase()}`;
}

function userKey(user: string): string {
  return `u:${user}`;
}

function describe(key: string): string {
  return key.startsWith('a:') ? `address ${key.slice(2)}` : `user ${key.slice(2)}`;
}

export class LoginBans {
  /** Failure times per key, oldest first, at most afterFailures (or 32) entries; LRU order. */
  private readonly failures = new Map<string, number[]>();
  /** Ban end time per key; insertion order = oldest ban first. */
  private readonly bans = new Map<string, number>();
  private readonly maxKeys: number;
  private readonly baseMs: number;
  private readonly maxMs: number;
  private readonly now: () => number;

  constructor(private readonly opts: BanOptions) {
    this.maxKeys = opts.maxKeys ?? 10_000;
    this.baseMs = opts.slowdownBaseMs ?? 100;
    this.maxMs = opts.slowdownMaxMs ?? 3000;
    this.now = opts.now ?? Date.now;
  }

  /** Keys currently tracked (failure table, ban table), for metrics and tests. */
  get size(): { failures: number; bans: number } {
    return { failures: this.failures.size, bans: this.bans.size };
  }

  private keys(address: string, user: string | undefined): string[] {
    return user === undefined ? [addressKey(address)] : [addressKey(address), userKey(user)];
  }

  /** Whether the address or the user name is banned now. Expired bans are dropped. */
  check(address: string, user: string | undefined): BanStatus {
    const t = this.now();
    for (const k of this.keys(address, user)) {
      const until = this.bans.get(k);
      if (until === undefined) continue;
      if (until > t) return { banned: true, what: describe(k), untilMs: until };
      this.bans.delete(k);
    }
    return { banned: false };
  }

  /** Failures in the window for an address (for logs and tests). */
  failuresForAddress(address: string): number {
    return this.countRecent(addressKey(address));
  }

  /** Failures in the window for a user name (for logs and tests). */
  failuresForUser(user: string): number {
    return this.countRecent(userKey(user));
  }

  private countRecent(key: string): number {
    const t = this.now();
    return (this.failures.get(key) ?? []).filter((x) => x > t - this.opts.windowMs).length;
  }

  /** Counts a failed login for the address and (if given) the user name. */
  recordFailure(address: string, user: string | undefined): FailureOutcome {
    const t = this.now();
    const keep = this.opts.afterFailures > 0 ? this.opts.afterFailures : 32;
    let worst = 0;
    let bannedNow = false;
    for (const k of this.keys(address, user)) {
      const prev = this.failures.get(k);
      const times = prev ? prev.filter((x) => x > t - this.opts.windowMs) : [];
      times.push(t);
      if (times.length > keep) times.splice(0, times.length - keep);
      // Re-insert: Map order is least recently failed first, which eviction relies on.
      this.failures.delete(k);
      if (this.opts.afterFailures > 0 && times.length >= this.opts.afterFailures) {
        this.ban(k, t + this.opts.durationMs);
        bannedNow = true;
      } else {
        this.evict(this.failures);
        this.failures.set(k, times);
      }
      worst = Math.max(worst, times.length);
    }
    const delayMs = Math.min(this.maxMs, this.baseMs * 2 ** Math.min(worst - 1, 30));
    return { delayMs, bannedNow, failures: worst };
  }

  private ban(key: string, until: number): void {
    this.bans.delete(key);
    this.evict(this.bans);
    this.bans.set(key, until);
  }

  private evict<V>(m: Map<string, V>): void {
    while (m.size >= this.maxKeys) {
      const oldest = m.keys().next();
      if (oldest.done) return;
      m.delete(oldest.value);
    }
  }

  /** Lifts every ban and forgets every failure. */
  clear(): void {
    this.failures.clear();
    this.bans.clear();
  }
}
