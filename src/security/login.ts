// The LoginChecker: password file, certificate identity, anonymous policy, slow-down and bans.
//
// Decision order for an attempt:
//   1. address or user name banned                        → 0x8A Banned
//   2. listener.useIdentityAsUsername:
//        with a verified certificate: the CN is the user name (CONNECT's user name and password
//        are ignored), no password needed                 → CN
//        without one                                       → 0x87 NotAuthorized
//   3. no user name: listener.allowAnonymous              → anonymous (undefined)
//                    otherwise                            → 0x87 NotAuthorized (a failure)
//   4. a user name but no password file configured:
//        allowAnonymous → accepted as anonymous (the claimed name is unverified, so ACLs never
//        see it); otherwise                               → 0x86 BadUserNameOrPassword (a failure)
//   5. a user name: the password is verified against the file (an unknown user is verified
//      against a dummy hash with the cost of the file's first entry, so timing does not tell
//      whether the user exists; a missing password is refused without hashing); wrong
//                                                         → 0x86 BadUserNameOrPassword (a failure)
// The ProtocolError's message may reach the client as an MQTT 5 reason string, so it never says
// whether the user exists; the detail goes to onFailure (for the log) only.
// A failure is counted per address and per user name, answered after a growing delay, and may
// start a ban (see ban.ts). Hashing waits for one of `hashConcurrency` slots; when more than
// `maxQueuedHashes` attempts are already waiting the attempt is refused with 0x89 ServerBusy
// (not counted as a failure).
import { ProtocolError } from '../mqtt/errors.js';
import { Reason } from '../mqtt/reason-codes.js';
import { LoginBans } from './ban.js';
import { loadPasswordFile, type PasswordEntry } from './password-file.js';
import { HashLimiter, HashQueueFullError, dummyHashLike, verifyPassword, type ParsedHash } from './passwords.js';
import type { LoginAttempt, LoginChecker } from './types.js';

export interface LoginCheckerOptions {
  /** Password file path; undefined or '' = no password logins. Loaded now: errors throw. */
  passwordFile?: string;
  /** security.ban_after_failures (0 = never ban). */
  banAfterFailures: number;
  /** security.ban_window_s. */
  banWindowS: number;
  /** security.ban_duration_s. */
  banDurationS: number;
  /** security.hash_concurrency. */
  hashConcurrency: number;
  /** Attempts that may wait for a hashing slot before new ones get ServerBusy. Default 1,000. */
  maxQueuedHashes?: number;
  /** Slow-down of failures: first delay and cap (ms). Defaults 100 and 3,000. */
  slowdownBaseMs?: number;
  slowdownMaxMs?: number;
  /** Clock (ms) for bans. Default Date.now. */
  now?: () => number;
  /** Waits before a refusal is sent. Default a timer. */
  sleep?: (ms: number) => Promise<void>;
  /** Called for each failure and ban, for logs and metrics. */
  onFailure?: (event: LoginFailureEvent) => void;
}

export interface LoginFailureEvent {
  address: string;
  username: string | undefined;
  clientId: string;
  listener: string;
  reason: 'BadUserNameOrPassword' | 'NotAuthorized' | 'Banned' | 'ServerBusy';
  /** Why, for the log line ("unknown user", "wrong password", ...). */
  detail: string;
  /** Failures in the window (worse of address and user name); 0 for Banned/ServerBusy. */
  failures: number;
  /** True when this failure started a ban. */
  bannedNow: boolean;
}

export interface ConvoyLoginChecker extends LoginChecker {
  /**
   * Re-reads the password file (SIGHUP). On error throws PasswordFileError and keeps the users
   * loaded before; existing connections are not affected either way.
   */
  reload(): void;
  /** Users currently loaded. */
  readonly userCount: number;
  /** The failure and ban bookkeeping. */
  readonly bans: LoginBans;
  /** The hashing slots. */
  readonly limiter: HashLimiter;
}

const defaultSleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms).unref());

export function createLoginChecker(opts: LoginCheckerOptions): ConvoyLoginChecker {
  const file = opts.passwordFile === '' ? undefined : opts.passwordFile;
  let users: Map<string, PasswordEntry> | null = null;
  let dummy: ParsedHash = dummyHashLike(undefined);
  const load = (): void => {
    if (file === undefined) return;
    const next = loadPasswordFile(file);
    users = next;
    dummy = dummyHashLike(next.values().next().value?.hash);
  };
  load();

  const bans = new LoginBans({
    afterFailures: opts.banAfterFailures,
    windowMs: opts.banWindowS * 1000,
    durationMs: opts.banDurationS * 1000,
    slowdownBaseMs: opts.slowdownBaseMs,
    slowdownMaxMs: opts.slowdownMaxMs,
    now: opts.now,
  });
  const limiter = new HashLimiter(opts.hashConcurrency, opts.maxQueuedHashes ?? 1000);
  const sleep = opts.sleep ?? defaultSleep;

  const event = (a: LoginAttempt, username: string | undefined, reason: LoginFailureEvent['reason'], detail: string, failures = 0, bannedNow = false): void => {
    opts.onFailure?.({ address: a.address, username, clientId: a.clientId, listener: a.listener.name, reason, detail, failures, bannedNow });
  };

  /** Counts the failure, waits the slow-down delay, then throws. */
  const fail = async (a: LoginAttempt, username: string | undefined, reason: typeof Reason.BadUserNameOrPassword | typeof Reason.NotAuthorized, detail: string): Promise<never> => {
    const out = bans.recordFailure(a.address, username);
    event(a, username, reason === Reason.NotAuthorized ? 'NotAuthorized' : 'BadUserNameOrPassword', detail, out.failures, out.bannedNow);
    if (out.delayMs > 0) await sleep(out.delayMs);
    // The message may reach the client (MQTT 5 reason string): never say which part was wrong.
    const said = reason === Reason.NotAuthorized ? 'not authorized' : 'bad user name or password';
    throw new ProtocolError(reason, `${a.listener.name}: login refused: ${said}`);
  };

  const verify = async (a: LoginAttempt, hash: ParsedHash, password: Buffer): Promise<boolean> => {
    try {
      return await limiter.run(() => verifyPassword(password, hash));
    } catch (e) {
      if (e instanceof HashQueueFullError) {
        event(a, a.username, 'ServerBusy', e.message);
        throw new ProtocolError(Reason.ServerBusy, `${a.listener.name}: login refused: ${e.message}`);
      }
      throw e;
    }
  };

  const check = async (a: LoginAttempt): Promise<string | undefined> => {
    const claimed = a.listener.useIdentityAsUsername ? a.certificateIdentity : a.username;
    const ban = bans.check(a.address, claimed);
    if (ban.banned) {
      event(a, claimed, 'Banned', `${ban.what} is banned`);
      throw new ProtocolError(Reason.Banned, `${a.listener.name}: login refused: ${ban.what} is banned`);
    }
    if (a.listener.useIdentityAsUsername) {
      if (a.certificateIdentity !== undefined && a.certificateIdentity !== '') return a.certificateIdentity;
      event(a, undefined, 'NotAuthorized', 'no client certificate identity');
      throw new ProtocolError(Reason.NotAuthorized, `${a.listener.name}: login refused: the listener takes the user name from a client certificate and there is none`);
    }
    if (a.username === undefined) {
      if (a.listener.allowAnonymous) return undefined;
      return fail(a, undefined, Reason.NotAuthorized, 'anonymous clients are not allowed');
    }
    const table = users;
    if (table === null) {
      if (a.listener.allowAnonymous) return undefined;
      return fail(a, a.username, Reason.BadUserNameOrPassword, 'no password file is configured');
    }
    if (a.password === undefined) return fail(a, a.username, Reason.BadUserNameOrPassword, 'no password');
    const entry = table.get(a.username);
    const ok = await verify(a, entry ? entry.hash : dummy, a.password);
    if (entry && ok) return a.username;
    return fail(a, a.username, Reason.BadUserNameOrPassword, entry ? 'wrong password' : 'unknown user');
  };

  return {
    check,
    reload: load,
    get userCount() {
      return users?.size ?? 0;
    },
    bans,
    limiter,
  };
}
