// Password hashes: Convoy's scrypt format, plus Mosquitto's formats so an existing password file
// migrates as is. Hashing runs on libuv's threadpool (async crypto.scrypt / crypto.pbkdf2), never
// on the event loop, and a HashLimiter bounds how many run at once.
//
// Formats (one per password-file line, after "user:"):
//
//   $scrypt$ln=<log2 N>,r=<r>,p=<p>$<salt>$<hash>     Convoy (written by `convoy passwd`)
//       scrypt (RFC 7914) with N = 2^ln; salt 16 random bytes, hash 32 bytes; salt and hash in
//       standard base64 (RFC 4648 §4) without "=" padding, as in the PHC string format (padding is
//       accepted on read). The parameters travel with each hash, so raising the defaults later
//       leaves existing lines valid.
//   $7$<iterations>$<salt>$<hash>                       Mosquitto ≥ 2.0 (mosquitto_passwd default)
//       PBKDF2-HMAC-SHA512 over the password bytes with the base64-decoded salt (12 bytes from
//       mosquitto_passwd) and `iterations` (101 from mosquitto_passwd); hash is 64 bytes; base64
//       with padding. Verified only; Convoy never writes it.
//   $6$<salt>$<hash>                                    Mosquitto ≤ 1.6 (-H sha512)
//       SHA-512(password bytes ‖ base64-decoded salt), a single unsalted-iteration hash: weak
//       against offline guessing. Verified only; re-set such users with `convoy passwd`.
//
// Default scrypt cost: ln=13, r=8, p=1 (N = 8192, 8 MiB of memory per hash). Measured 58 ms per
// hash on the x86 build VM (ln=14: 104 ms, ln=15: 319 ms); a Raspberry Pi 4 (Cortex-A72) is
// estimated — not measured — at roughly 1.5-2x that, i.e. about 80-120 ms, the target for an
// interactive login on the gateway. With security.hash_concurrency = 2 at most 16 MiB is in use.
import { createHash, pbkdf2, randomBytes, scrypt, timingSafeEqual, type ScryptOptions } from 'node:crypto';

export interface ScryptParams {
  /** log2 of the CPU/memory cost N. */
  ln: number;
  /** Block size. */
  r: number;
  /** Parallelisation. */
  p: number;
}

export const DEFAULT_SCRYPT_PARAMS: Readonly<ScryptParams> = Object.freeze({ ln: 13, r: 8, p: 1 });
export const SCRYPT_SALT_BYTES = 16;
export const SCRYPT_HASH_BYTES = 32;

/** Bounds accepted when reading a hash, so a hostile or mistyped file cannot ask for gigabytes. */
const MAX_SCRYPT_MEMORY = 256 * 1024 * 1024;
const MAX_PBKDF2_ITERATIONS = 10_000_000;

export type ParsedHash =
  | { scheme: 'scrypt'; params: ScryptParams; salt: Buffer; hash: Buffer }
  | { scheme: 'pbkdf2-sha512'; iterations: number; salt: Buffer; hash: Buffer }
  | { scheme: 'sha512'; salt: Buffer; hash: Buffer };

const B64 = /^[A-Za-z0-9+/]+={0,2}$/;

function decodeB64(s: string, what: string): Buffer | string {
  if (!B64.test(s) || (s.includes('=') && s.length % 4 !== 0)) return `${what} is not base64`;
  const b = Buffer.from(s, 'base64');
  if (b.length === 0) return `${what} is empty`;
  return b;
}

function b64(b: Buffer): string {
  return b.toString('base64').replace(/=+$/, '');
}

/** Bytes scrypt needs for these parameters (as OpenSSL counts them), plus slack. */
function scryptMemory(p: ScryptParams): number {
  return 128 * p.r * (2 ** p.ln + p.p + 2) + 64 * 1024;
}

/** Null when the parameters are within the accepted bounds, else why not. */
export function checkScryptParams(p: ScryptParams): string | null {
  if (!Number.isInteger(p.ln) || p.ln < 1 || p.ln > 24) return 'ln must be an integer from 1 to 24';
  if (!Number.isInteger(p.r) || p.r < 1 || p.r > 64) return 'r must be an integer from 1 to 64';
  if (!Number.isInteger(p.p) || p.p < 1 || p.p > 16) return 'p must be an integer from 1 to 16';
  if (scryptMemory(p) > MAX_SCRYPT_MEMORY) return `needs more than ${MAX_SCRYPT_MEMORY / 1048576} MiB`;
  return null;
}

function positiveInt(s: string): number {
  return /^[1-9][0-9]{0,9}$/.test(s) ? Number(s) : NaN;
}

/**
 * Parses an encoded hash. Returns the parts, or a string saying what is wrong with it. Pure:
 * used at load time so a bad line is reported before any client tries to log in.
 */
export function parseHash(encoded: string): ParsedHash | string {
  const parts = encoded.split('$');
  if (parts[0] !== '' || parts.length < 2) {
    return 'not a password hash (expected "$scrypt$...", "$7$..." or "$6$..."); a plain-text password must be hashed with `convoy passwd`';
  }
  switch (parts[1] ?? '') {
    case 'scrypt': {
      if (parts.length !== 5) return 'scrypt hash must be $scrypt$ln=N,r=N,p=N$SALT$HASH';
      const params: Partial<ScryptParams> = {};
      for (const kv of (parts[2] ?? '').split(',')) {
        const m = /^(ln|r|p)=(.*)$/.exec(kv);
        if (!m || params[m[1] as keyof ScryptParams] !== undefined) return `scrypt parameters "${parts[2]}" must be ln=N,r=N,p=N`;
        params[m[1] as keyof ScryptParams] = positiveInt(m[2] ?? '');
      }
      if (params.ln === undefined || params.r === undefined || params.p === undefined) return `scrypt parameters "${parts[2]}" must be ln=N,r=N,p=N`;
      const full: ScryptParams = { ln: params.ln, r: params.r, p: params.p };
      const bad = checkScryptParams(full);
      if (bad !== null) return `scrypt parameters: ${bad}`;
      const salt = decodeB64(parts[3] ?? '', 'salt');
      if (typeof salt === 'string') return salt;
      const hash = decodeB64(parts[4] ?? '', 'hash');
      if (typeof hash === 'string') return hash;
      if (hash.length < 16 || hash.length > 64) return 'scrypt hash must be 16 to 64 bytes';
      return { scheme: 'scrypt', params: full, salt, hash };
    }
    case '7': {
      if (parts.length !== 5) return 'PBKDF2 hash must be $7$ITERATIONS$SALT$HASH';
      const iterations = positiveInt(parts[2] ?? '');
      if (!(iterations <= MAX_PBKDF2_ITERATIONS)) return `PBKDF2 iterations must be from 1 to ${MAX_PBKDF2_ITERATIONS}`;
      const salt = decodeB64(parts[3] ?? '', 'salt');
      if (typeof salt === 'string') return salt;
      const hash = decodeB64(parts[4] ?? '', 'hash');
      if (typeof hash === 'string') return hash;
      if (hash.length < 16 || hash.length > 64) return 'PBKDF2-SHA512 hash must be 16 to 64 bytes';
      return { scheme: 'pbkdf2-sha512', iterations, salt, hash };
    }
    case '6': {
      if (parts.length !== 4) return 'SHA-512 hash must be $6$SALT$HASH';
      const salt = decodeB64(parts[2] ?? '', 'salt');
      if (typeof salt === 'string') return salt;
      const hash = decodeB64(parts[3] ?? '', 'hash');
      if (typeof hash === 'string') return hash;
      if (hash.length !== 64) return 'SHA-512 hash must be 64 bytes';
      return { scheme: 'sha512', salt, hash };
    }
    default:
      return `unknown hash scheme "$${parts[1]}$" (Convoy reads $scrypt$, and Mosquitto's $7$ and $6$)`;
  }
}

/** Encodes parsed parts back to the string form (Convoy's scrypt without padding). */
export function encodeHash(h: ParsedHash): string {
  switch (h.scheme) {
    case 'scrypt': return `$scrypt$ln=${h.params.ln},r=${h.params.r},p=${h.params.p}$${b64(h.salt)}$${b64(h.hash)}`;
    case 'pbkdf2-sha512': return `$7$${h.iterations}$${h.salt.toString('base64')}$${h.hash.toString('base64')}`;
    case 'sha512': return `$6$${h.salt.toString('base64')}$${h.hash.toString('base64')}`;
  }
}

function scryptAsync(pw: Buffer, salt: Buffer, len: number, p: ScryptParams): Promise<Buffer> {
  const opts: ScryptOptions = { N: 2 ** p.ln, r: p.r, p: p.p, maxmem: scryptMemory(p) };
  return new Promise((resolve, reject) => {
    scrypt(pw, salt, len, opts, (err, key) => (err ? reject(err) : resolve(key)));
  });
}

function pbkdf2Async(pw: Buffer, salt: Buffer, iterations: number, len: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    pbkdf2(pw, salt, iterations, len, 'sha512', (err, key) => (err ? reject(err) : resolve(key)));
  });
}

function toBuffer(pw: string | Buffer): Buffer {
  return typeof pw === 'string' ? Buffer.from(pw, 'utf8') : pw;
}

/** Hashes a password in Convoy's scrypt format with a fresh random salt. */
export async function hashPassword(password: string | Buffer, params: ScryptParams = DEFAULT_SCRYPT_PARAMS): Promise<string> {
  const bad = checkScryptParams(params);
  if (bad !== null) throw new RangeError(`scrypt parameters: ${bad}`);
  const salt = randomBytes(SCRYPT_SALT_BYTES);
  const hash = await scryptAsync(toBuffer(password), salt, SCRYPT_HASH_BYTES, params);
  return encodeHash({ scheme: 'scrypt', params: { ...params }, salt, hash });
}

/** Derives the hash of `password` for the scheme and parameters of `h` (same length as h.hash). */
async function derive(password: Buffer, h: ParsedHash): Promise<Buffer> {
  switch (h.scheme) {
    case 'scrypt': return scryptAsync(password, h.salt, h.hash.length, h.params);
    case 'pbkdf2-sha512': return pbkdf2Async(password, h.salt, h.iterations, h.hash.length);
    case 'sha512': return createHash('sha512').update(password).update(h.salt).digest();
  }
}

/**
 * True when `password` matches `encoded` (any format parseHash reads); false when it does not or
 * when `encoded` is malformed. The comparison is constant-time.
 */
export async function verifyPassword(password: string | Buffer, encoded: string | ParsedHash): Promise<boolean> {
  const h = typeof encoded === 'string' ? parseHash(encoded) : encoded;
  if (typeof h === 'string') return false;
  const derived = await derive(toBuffer(password), h);
  return derived.length === h.hash.length && timingSafeEqual(derived, h.hash);
}

/**
 * A hash with the same scheme and cost as `like` but random salt and hash, so verifying against
 * it costs the same time and never succeeds (for unknown user names: timing stays flat).
 */
export function dummyHashLike(like: ParsedHash | undefined): ParsedHash {
  const h: ParsedHash = like ?? {
    scheme: 'scrypt', params: { ...DEFAULT_SCRYPT_PARAMS }, salt: Buffer.alloc(SCRYPT_SALT_BYTES), hash: Buffer.alloc(SCRYPT_HASH_BYTES),
  };
  return { ...h, salt: randomBytes(h.salt.length), hash: randomBytes(h.hash.length) };
}

/** Thrown by HashLimiter.run when the queue is full. */
export class HashQueueFullError extends Error {
  constructor(limit: number) {
    super(`more than ${limit} password checks waiting`);
    this.name = 'HashQueueFullError';
  }
}

/**
 * Runs at most `concurrency` tasks at once; the rest wait in FIFO order, up to `maxQueued`
 * (beyond that run() rejects with HashQueueFullError at once, holding no memory for the task).
 */
export class HashLimiter {
  private running = 0;
  private readonly waiting: Array<() => void> = [];

  constructor(
    readonly concurrency: number,
    readonly maxQueued = Infinity,
  ) {
    if (!Number.isInteger(concurrency) || concurrency < 1) throw new RangeError('concurrency must be a positive integer');
  }

  /** Tasks running now. */
  get active(): number {
    return this.running;
  }

  /** Tasks waiting for a slot. */
  get queued(): number {
    return this.waiting.length;
  }

  async run<T>(task: () => Promise<T>): Promise<T> {
    if (this.running >= this.concurrency) {
      if (this.waiting.length >= this.maxQueued) throw new HashQueueFullError(this.maxQueued);
      // The slot is handed over by release(): `running` stays counted across the hand-off.
      await new Promise<void>((resolve) => this.waiting.push(resolve));
    } else {
      this.running++;
    }
    try {
      return await task();
    } finally {
      this.release();
    }
  }

  private release(): void {
    const next = this.waiting.shift();
    if (next) next();
    else this.running--;
  }
}
