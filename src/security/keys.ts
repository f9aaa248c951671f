// Key files for signed orders (see signing.ts for the design).
//
// Layout of a keys directory (default ./keys; `convoy keys --dir DIR`):
//   gateway.key        the gateway's own Ed25519 private key, PKCS#8 PEM, mode 0600
//   gateway.pub        its public key, SPKI PEM (what HQ trusts: `convoy keys show`), mode 0600
//   trusted/NAME.pem   an HQ public key the gateway trusts, SPKI PEM, mode 0600 (directory 0700)
// Config: [uplink.signing] trusted_keys_dir = "<DIR>/trusted", gateway_key = "<DIR>/gateway.key".
//
// Every file is replaced atomically (write, fsync, rename). A trusted key must be an Ed25519 public
// key: a PEM holding a private key is refused (HQ's private key never belongs on a truck).
import { createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { writeFileAtomic } from './password-file.js';
import { keyId } from './signing.js';

export const DEFAULT_KEYS_DIR = './keys';
export const GATEWAY_KEY_FILE = 'gateway.key';
export const GATEWAY_PUB_FILE = 'gateway.pub';
export const TRUSTED_DIR = 'trusted';
const PEM_SUFFIX = '.pem';
const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

export class KeyFileError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'KeyFileError';
  }
}

export interface TrustedKey {
  name: string;
  kid: string;
  key: KeyObject;
  file: string;
}

export interface GatewayKey {
  privateKey: KeyObject;
  publicKey: KeyObject;
  kid: string;
  /** The public key as SPKI PEM. */
  publicPem: string;
}

export function checkKeyName(name: string): void {
  if (!NAME.test(name)) {
    throw new KeyFileError(`invalid key name "${name}": use 1 to 64 letters, digits, ".", "_" or "-", starting with a letter or digit`);
  }
}

function ensureDir(dir: string): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
}

function publicPemOf(key: KeyObject): string {
  return key.export({ type: 'spki', format: 'pem' }).toString();
}

/** Parses an Ed25519 public key (SPKI PEM). Refuses private keys and other algorithms. */
export function parsePublicKeyPem(pem: string, what: string): KeyObject {
  if (/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(pem)) {
    throw new KeyFileError(`${what} holds a PRIVATE key: give the public key only (e.g. "openssl pkey -in hq.key -pubout")`);
  }
  let key: KeyObject;
  try {
    key = createPublicKey(pem);
  } catch (err) {
    throw new KeyFileError(`${what} is not a PEM public key: ${(err as Error).message}`);
  }
  if (key.asymmetricKeyType !== 'ed25519') {
    throw new KeyFileError(`${what} is a ${key.asymmetricKeyType ?? 'unknown'} key: signed orders use Ed25519`);
  }
  return key;
}

// ---- the gateway's own key pair ----

/**
 * Creates the gateway's key pair in `dir`. Refuses to replace an existing one unless `force`
 * (HQ would stop trusting the truck's signatures).
 */
export function initGatewayKey(dir: string, opts: { force?: boolean } = {}): GatewayKey {
  const keyFile = join(dir, GATEWAY_KEY_FILE);
  if (existsSync(keyFile) && !opts.force) {
    throw new KeyFileError(`${keyFile} already exists: the gateway has a key pair (use --force to replace it; HQ must then trust the new public key)`);
  }
  ensureDir(dir);
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  writeFileAtomic(keyFile, privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(), 0o600);
  const publicPem = publicPemOf(publicKey);
  writeFileAtomic(join(dir, GATEWAY_PUB_FILE), publicPem, 0o600);
  return { privateKey, publicKey, kid: keyId(publicKey), publicPem };
}

/** Loads the gateway's private key file. Throws KeyFileError (missing, unreadable, not Ed25519, too open). */
export function loadGatewayKey(keyFile: string): GatewayKey {
  let text: string;
  try {
    text = readFileSync(keyFile, 'utf8');
  } catch (err) {
    throw new KeyFileError(`cannot read ${keyFile}: ${(err as Error).message} (create it with "convoy keys init")`);
  }
  if (process.platform !== 'win32' && (statSync(keyFile).mode & 0o077) !== 0) {
    throw new KeyFileError(`${keyFile} is readable by other users: chmod 600 ${keyFile}`);
  }
  let privateKey: KeyObject;
  try {
    privateKey = createPrivateKey(text);
  } catch (err) {
    throw new KeyFileError(`${keyFile} is not a PEM private key: ${(err as Error).message}`);
  }
  if (privateKey.asymmetricKeyType !== 'ed25519') throw new KeyFileError(`${keyFile} is not an Ed25519 key`);
  const publicKey = createPublicKey(privateKey);
  return { privateKey, publicKey, kid: keyId(publicKey), publicPem: publicPemOf(publicKey) };
}

// ---- trusted HQ public keys ----

/** Trusts the Ed25519 public key in `pemText` under `name` in `trustedDir`. Returns it. */
export function addTrustedKey(trustedDir: string, name: string, pemText: string, opts: { force?: boolean } = {}): TrustedKey {
  checkKeyName(name);
  const key = parsePublicKeyPem(pemText, `the key for "${name}"`);
  const kid = keyId(key);
  const existing = loadTrustedKeys(trustedDir).keys;
  const same = existing.find((k) => k.kid === kid);
  if (same && same.name !== name) throw new KeyFileError(`this key is already trusted as "${same.name}" (kid ${kid})`);
  const file = join(trustedDir, name + PEM_SUFFIX);
  if (existsSync(file) && !opts.force && !same) throw new KeyFileError(`a key named "${name}" is already trusted: remove it first`);
  ensureDir(trustedDir);
  writeFileAtomic(file, publicPemOf(key), 0o600);
  return { name, kid, key, file };
}

/** Stops trusting `name`. Returns false when there was no such key. */
export function removeTrustedKey(trustedDir: string, name: string): boolean {
  checkKeyName(name);
  const file = join(trustedDir, name + PEM_SUFFIX);
  if (!existsSync(file)) return false;
  rmSync(file);
  return true;
}

export interface TrustedKeySet {
  keys: TrustedKey[];
  /** Files that could not be used (never trusted), with why. */
  problems: Array<{ file: string; problem: string }>;
}

/** Reads every NAME.pem of `trustedDir` (a missing directory is an empty set). */
export function loadTrustedKeys(trustedDir: string): TrustedKeySet {
  const out: TrustedKeySet = { keys: [], problems: [] };
  let names: string[];
  try {
    names = readdirSync(trustedDir).filter((f) => f.endsWith(PEM_SUFFIX)).sort();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return out;
    throw new KeyFileError(`cannot read ${trustedDir}: ${(err as Error).message}`);
  }
  const seen = new Map<string, string>();
  for (const f of names) {
    const file = join(trustedDir, f);
    const name = f.slice(0, -PEM_SUFFIX.length);
    try {
      checkKeyName(name);
      const key = parsePublicKeyPem(readFileSync(file, 'utf8'), file);
      const kid = keyId(key);
      const dup = seen.get(kid);
      if (dup !== undefined) throw new KeyFileError(`same key as ${dup}.pem`);
      seen.set(kid, name);
      out.keys.push({ name, kid, key, file });
    } catch (err) {
      out.problems.push({ file, problem: (err as Error).message });
    }
  }
  return out;
}
