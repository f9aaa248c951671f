// Signed orders (pure): the bytes HQ signs, Ed25519 sign/verify with node:crypto, and the two ways a
// signature travels with a downlink message. The stateful checks (trusted keys, gateway id, expiry,
// replay) are in order-verifier.ts.
//
// ---- Design (the README copies this section) -----------------------------------------------------
//
// Threat: someone on the cellular path, a compromised HQ account without the signing key, or a
// replaying middlebox sends the truck an order or a cancellation ("deliver the parcel to X instead").
// Downlink routes marked `verify = true` only deliver messages signed by an HQ key the gateway
// trusts. The signature (Ed25519, RFC 8032) covers:
//   - the gateway id the order is for   (a message for truck gw2 is refused by truck gw1),
//   - the topic as published at HQ     (an order cannot be moved to another topic),
//   - the payload                      (not altered),
//   - a sequence number                (replays: it must be higher than the last one accepted),
//   - an expiry time                   (a withheld order is useless once it expired),
//   - the key id                       (which trusted key signed it).
//
// Key id (kid): the first 16 bytes of SHA-256 over the public key's SubjectPublicKeyInfo DER, as 32
// lowercase hex digits (`keyId()`). It does not depend on the name a gateway gives the key.
//
// Canonical bytes signed (`canonicalBytes()`), big-endian, no padding:
//   "convoy-order-v1" (15 ASCII bytes) 0x00
//   u16 length + gateway id (UTF-8)
//   u16 length + topic at HQ (UTF-8)
//   u8  length + kid (ASCII)
//   u64 sequence number (1 .. 2^53-1)
//   u64 expiry, Unix time in seconds (1 .. 2^53-1)
//   u32 length + payload
//
// Transport 1, MQTT 5 (detached signature): the payload is the order itself; user properties
//   sig = base64 of the 64-byte signature   kid = key id   seq = decimal   exp = decimal seconds
//   gw  = gateway id (optional: only lets the gateway tell "for another truck" from "forged").
// These properties are delivered to the LAN unchanged (a LAN device may verify too).
//
// Transport 2, MQTT 3.1.1 (or any HQ): an envelope in the payload, delivered to the LAN unwrapped:
//   offset 0  4 bytes  magic "CVS1" (0x43 0x56 0x53 0x31)
//          4  u8       G = length of the gateway id, then G bytes gateway id (UTF-8)
//             u8       K = length of the kid, then K bytes kid (ASCII)
//             u64      sequence number
//             u64      expiry (Unix seconds)
//             64 bytes Ed25519 signature over the canonical bytes
//             rest     the order payload
// A message with a `sig` user property is read as transport 1, any other as transport 2.
//
// Verification at the gateway (order-verifier.ts), in this order: parse (malformed) → key trusted
// (unknown_key) → signature (bad_signature: forged or altered) → gateway id (wrong_gateway) →
// expiry with max_clock_skew_s tolerance (expired) → sequence strictly above the last one accepted
// for that kid (replayed). The last accepted sequence per kid is stored in convoy.db and is made
// durable BEFORE the order is published on the LAN, so a crash or restart never lets a replay in.
// HQ therefore keeps one increasing counter per signing key (gaps allowed: a database sequence or
// a microsecond clock both work) and publishes each truck's orders in counter order; an order that
// arrives after a higher one from the same key is refused as replayed, never delivered late.
// A refused message is dropped, counted by reason, logged and reported on convoy/alarms/orders
// (rate limited); it is never delivered.
import { createHash, createPublicKey, sign as cryptoSign, verify as cryptoVerify, type KeyObject } from 'node:crypto';
import type { Properties, UserProperties } from '../mqtt/packets.js';

export const SIGNING_CONTEXT = 'convoy-order-v1';
export const ENVELOPE_MAGIC = Buffer.from('CVS1', 'ascii');
export const SIGNATURE_BYTES = 64;
/** Largest sequence number and expiry (JavaScript safe integer; fits SQLite INTEGER). */
export const MAX_COUNTER = Number.MAX_SAFE_INTEGER;

export const PROP_SIG = 'sig';
export const PROP_KID = 'kid';
export const PROP_SEQ = 'seq';
export const PROP_EXP = 'exp';
export const PROP_GW = 'gw';

/** What a signature covers. */
export interface SignedFields {
  gatewayId: string;
  /** The topic as published at HQ. */
  topic: string;
  payload: Buffer;
  kid: string;
  seq: number;
  /** Unix time in seconds after which the order must not be delivered. */
  exp: number;
}

/** A signed message as received: the fields plus the signature. */
export interface SignedOrder extends SignedFields {
  signature: Buffer;
}

export class SigningFormatError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SigningFormatError';
  }
}

function checkCounter(name: string, v: number): void {
  if (!Number.isSafeInteger(v) || v < 1 || v > MAX_COUNTER) throw new SigningFormatError(`${name} must be a whole number from 1 to ${MAX_COUNTER}`);
}

function u64(v: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(BigInt(v));
  return b;
}

function lengthPrefixed(bytes: Buffer, width: 1 | 2 | 4, what: string): Buffer {
  const max = width === 1 ? 0xff : width === 2 ? 0xffff : 0xffffffff;
  if (bytes.length > max) throw new SigningFormatError(`${what} is too long (${bytes.length} bytes, at most ${max})`);
  const len = Buffer.alloc(width);
  len.writeUIntBE(bytes.length, 0, width);
  return Buffer.concat([len, bytes]);
}

/** The exact bytes an Ed25519 signature covers (layout in the header comment). */
export function canonicalBytes(f: SignedFields): Buffer {
  checkCounter('seq', f.seq);
  checkCounter('exp', f.exp);
  if (!/^[\x21-\x7e]{1,255}$/.test(f.kid)) throw new SigningFormatError('kid must be 1 to 255 printable ASCII characters');
  return Buffer.concat([
    Buffer.from(SIGNING_CONTEXT, 'ascii'),
    Buffer.from([0]),
    lengthPrefixed(Buffer.from(f.gatewayId, 'utf8'), 2, 'gateway id'),
    lengthPrefixed(Buffer.from(f.topic, 'utf8'), 2, 'topic'),
    lengthPrefixed(Buffer.from(f.kid, 'ascii'), 1, 'kid'),
    u64(f.seq),
    u64(f.exp),
    lengthPrefixed(f.payload, 4, 'payload'),
  ]);
}

/** The key id of a public (or private: its public half) Ed25519 key. */
export function keyId(key: KeyObject): string {
  const pub = key.type === 'private' ? createPublicKey(key) : key;
  const der = pub.export({ type: 'spki', format: 'der' });
  return createHash('sha256').update(der).digest('hex').slice(0, 32);
}

function requireEd25519(key: KeyObject, type: 'public' | 'private'): void {
  if (key.asymmetricKeyType !== 'ed25519') throw new SigningFormatError(`expected an Ed25519 key, got ${key.asymmetricKeyType ?? 'a symmetric key'}`);
  if (type === 'private' && key.type !== 'private') throw new SigningFormatError('expected a private key');
}

/** Signs the fields with an Ed25519 private key (its kid must be f.kid). */
export function signFields(f: SignedFields, privateKey: KeyObject): Buffer {
  requireEd25519(privateKey, 'private');
  return cryptoSign(null, canonicalBytes(f), privateKey);
}

/** Whether `signature` is a valid Ed25519 signature of the fields by `publicKey`. Never throws. */
export function verifyFields(f: SignedFields, signature: Buffer, publicKey: KeyObject): boolean {
  try {
    if (signature.length !== SIGNATURE_BYTES) return false;
    requireEd25519(publicKey, 'public');
    return cryptoVerify(null, canonicalBytes(f), publicKey, signature);
  } catch {
    return false;
  }
}

// ---- transport 1: MQTT 5 user properties ----

/** The user properties carrying a detached signature (to add to the message's own). */
export function signatureProperties(o: SignedOrder): UserProperties {
  return [
    [PROP_SIG, o.signature.toString('base64')],
    [PROP_KID, o.kid],
    [PROP_SEQ, String(o.seq)],
    [PROP_EXP, String(o.exp)],
    [PROP_GW, o.gatewayId],
  ];
}

function onlyValue(props: UserProperties, name: string): string | undefined {
  const values = props.filter(([k]) => k === name).map(([, v]) => v);
  if (values.length > 1) throw new SigningFormatError(`user property "${name}" given ${values.length} times`);
  return values[0];
}

const DECIMAL = /^[1-9][0-9]{0,15}$/;
const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/;

function parseCounter(name: string, v: string | undefined): number {
  if (v === undefined) throw new SigningFormatError(`user property "${name}" is missing`);
  if (!DECIMAL.test(v)) throw new SigningFormatError(`user property "${name}" is not a positive decimal number`);
  const n = Number(v);
  checkCounter(name, n);
  return n;
}

/** Whether a message carries a detached signature (transport 1). */
export function hasDetachedSignature(props: Properties | undefined): boolean {
  return props?.userProperties?.some(([k]) => k === PROP_SIG) ?? false;
}

/**
 * Reads a detached signature. `gatewayId` is the gw property when present, else undefined (the
 * verifier then checks the signature for its own id). Throws SigningFormatError.
 */
export function parseDetached(topic: string, payload: Buffer, props: Properties | undefined): SignedOrder & { claimedGateway: string | undefined } {
  const up = props?.userProperties ?? [];
  const sig = onlyValue(up, PROP_SIG);
  if (sig === undefined) throw new SigningFormatError(`user property "${PROP_SIG}" is missing`);
  if (!BASE64.test(sig)) throw new SigningFormatError(`user property "${PROP_SIG}" is not base64`);
  const signature = Buffer.from(sig, 'base64');
  if (signature.length !== SIGNATURE_BYTES) throw new SigningFormatError(`signature is ${signature.length} bytes, not ${SIGNATURE_BYTES}`);
  const kid = onlyValue(up, PROP_KID);
  if (kid === undefined || kid === '') throw new SigningFormatError(`user property "${PROP_KID}" is missing`);
  const gw = onlyValue(up, PROP_GW);
  return {
    gatewayId: gw ?? '',
    claimedGateway: gw,
    topic,
    payload,
    kid,
    seq: parseCounter(PROP_SEQ, onlyValue(up, PROP_SEQ)),
    exp: parseCounter(PROP_EXP, onlyValue(up, PROP_EXP)),
    signature,
  };
}

// ---- transport 2: the envelope ----

/** Wraps a signed order in the envelope (layout in the header comment). */
export function encodeEnvelope(o: SignedOrder): Buffer {
  if (o.signature.length !== SIGNATURE_BYTES) throw new SigningFormatError(`signature must be ${SIGNATURE_BYTES} bytes`);
  checkCounter('seq', o.seq);
  checkCounter('exp', o.exp);
  return Buffer.concat([
    ENVELOPE_MAGIC,
    lengthPrefixed(Buffer.from(o.gatewayId, 'utf8'), 1, 'gateway id'),
    lengthPrefixed(Buffer.from(o.kid, 'ascii'), 1, 'kid'),
    u64(o.seq),
    u64(o.exp),
    o.signature,
    o.payload,
  ]);
}

/** Unwraps an envelope received on `topic`. Throws SigningFormatError. */
export function decodeEnvelope(topic: string, data: Buffer): SignedOrder {
  let at = 0;
  const need = (n: number, what: string): void => {
    if (data.length - at < n) throw new SigningFormatError(`envelope truncated in ${what}`);
  };
  need(4, 'magic');
  if (!data.subarray(0, 4).equals(ENVELOPE_MAGIC)) throw new SigningFormatError('not a signed envelope (no CVS1 magic)');
  at = 4;
  need(1, 'gateway id length');
  const g = data[at++]!;
  need(g, 'gateway id');
  const gatewayId = data.toString('utf8', at, at + g);
  at += g;
  need(1, 'kid length');
  const k = data[at++]!;
  if (k === 0) throw new SigningFormatError('envelope kid is empty');
  need(k, 'kid');
  const kid = data.toString('latin1', at, at + k);
  at += k;
  need(16, 'seq and exp');
  const seqBig = data.readBigUInt64BE(at);
  const expBig = data.readBigUInt64BE(at + 8);
  at += 16;
  if (seqBig < 1n || seqBig > BigInt(MAX_COUNTER)) throw new SigningFormatError('envelope seq out of range');
  if (expBig < 1n || expBig > BigInt(MAX_COUNTER)) throw new SigningFormatError('envelope exp out of range');
  need(SIGNATURE_BYTES, 'signature');
  const signature = Buffer.from(data.subarray(at, at + SIGNATURE_BYTES));
  at += SIGNATURE_BYTES;
  return { gatewayId, topic, kid, seq: Number(seqBig), exp: Number(expBig), signature, payload: Buffer.from(data.subarray(at)) };
}

// ---- for HQ tooling and tests ----

export interface SignOrderInput {
  gatewayId: string;
  topic: string;
  payload: Buffer | string;
  seq: number;
  exp: number;
  privateKey: KeyObject;
}

/** Signs an order: the fields (kid derived from the key) and the signature. */
export function signOrder(i: SignOrderInput): SignedOrder {
  const f: SignedFields = {
    gatewayId: i.gatewayId,
    topic: i.topic,
    payload: typeof i.payload === 'string' ? Buffer.from(i.payload) : i.payload,
    kid: keyId(i.privateKey),
    seq: i.seq,
    exp: i.exp,
  };
  return { ...f, signature: signFields(f, i.privateKey) };
}
