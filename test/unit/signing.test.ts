// Signed orders, the pure part: canonical bytes, Ed25519 sign/verify, the MQTT 5 properties and the
// 3.1.1 envelope (layouts documented in src/security/signing.ts).
import { expect } from 'chai';
import { generateKeyPairSync, createPublicKey } from 'node:crypto';
import {
  canonicalBytes,
  decodeEnvelope,
  encodeEnvelope,
  hasDetachedSignature,
  keyId,
  parseDetached,
  signatureProperties,
  signFields,
  signOrder,
  SigningFormatError,
  verifyFields,
  type SignedFields,
} from '../../src/security/signing.js';

const hq = generateKeyPairSync('ed25519');
const other = generateKeyPairSync('ed25519');

function fields(over: Partial<SignedFields> = {}): SignedFields {
  return { gatewayId: 'gw1', topic: 'fleet/gw1/orders/7', payload: Buffer.from('deliver to dock 4'), kid: keyId(hq.publicKey), seq: 42, exp: 1_900_000_000, ...over };
}

describe('security/signing: canonical bytes', () => {
  it('has the documented layout: context, gateway, topic, kid, seq, exp, payload', () => {
    const b = canonicalBytes({ gatewayId: 'g', topic: 't/x', payload: Buffer.from('PQ'), kid: 'k1', seq: 258, exp: 65536 });
    const expected = Buffer.concat([
      Buffer.from('convoy-order-v1\0', 'ascii'),
      Buffer.from([0, 1]), Buffer.from('g'),
      Buffer.from([0, 3]), Buffer.from('t/x'),
      Buffer.from([2]), Buffer.from('k1'),
      Buffer.from([0, 0, 0, 0, 0, 0, 1, 2]),
      Buffer.from([0, 0, 0, 0, 0, 1, 0, 0]),
      Buffer.from([0, 0, 0, 2]), Buffer.from('PQ'),
    ]);
    expect(b.toString('hex')).to.equal(expected.toString('hex'));
  });

  it('is unambiguous: moving bytes between fields changes it', () => {
    const a = canonicalBytes(fields({ gatewayId: 'gw1', topic: 'a/b' }));
    const b = canonicalBytes(fields({ gatewayId: 'gw1a', topic: '/b' }));
    expect(a.equals(b)).to.equal(false);
  });

  it('refuses out-of-range counters and bad key ids', () => {
    expect(() => canonicalBytes(fields({ seq: 0 }))).to.throw(SigningFormatError);
    expect(() => canonicalBytes(fields({ seq: 1.5 }))).to.throw(SigningFormatError);
    expect(() => canonicalBytes(fields({ exp: Number.MAX_SAFE_INTEGER + 1 }))).to.throw(SigningFormatError);
    expect(() => canonicalBytes(fields({ kid: '' }))).to.throw(SigningFormatError);
    expect(() => canonicalBytes(fields({ kid: 'with space' }))).to.throw(SigningFormatError);
  });
});

describe('security/signing: Ed25519', () => {
  it('key id: 32 hex digits of SHA-256(SPKI), the same from the private and the public key', () => {
    expect(keyId(hq.publicKey)).to.match(/^[0-9a-f]{32}$/);
    expect(keyId(hq.privateKey)).to.equal(keyId(hq.publicKey));
    expect(keyId(other.publicKey)).to.not.equal(keyId(hq.publicKey));
  });

  it('verifies what was signed and nothing else', () => {
    const f = fields();
    const sig = signFields(f, hq.privateKey);
    expect(sig.length).to.equal(64);
    expect(verifyFields(f, sig, hq.publicKey)).to.equal(true);
    expect(verifyFields(f, sig, createPublicKey(hq.privateKey))).to.equal(true);
    const altered: Array<Partial<SignedFields>> = [
      { gatewayId: 'gw2' }, { topic: 'fleet/gw1/orders/8' }, { payload: Buffer.from('deliver to dock 5') },
      { seq: 43 }, { exp: 1_900_000_001 }, { kid: keyId(other.publicKey) },
    ];
    for (const a of altered) expect(verifyFields(fields(a), sig, hq.publicKey), JSON.stringify(Object.keys(a))).to.equal(false);
    expect(verifyFields(f, sig, other.publicKey)).to.equal(false);
    expect(verifyFields(f, sig.subarray(0, 63), hq.publicKey)).to.equal(false);
    const flipped = Buffer.from(sig);
    flipped[10] = flipped[10]! ^ 1;
    expect(verifyFields(f, flipped, hq.publicKey)).to.equal(false);
  });

  it('refuses to sign with a non-Ed25519 key and never throws when verifying with one', () => {
    const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    expect(() => signFields(fields(), ec.privateKey)).to.throw(SigningFormatError);
    expect(verifyFields(fields(), Buffer.alloc(64), ec.publicKey)).to.equal(false);
  });
});

describe('security/signing: MQTT 5 user properties', () => {
  it('round-trips sig, kid, seq, exp and gw', () => {
    const o = signOrder({ gatewayId: 'gw1', topic: 'fleet/gw1/orders/7', payload: 'x', seq: 9, exp: 2_000_000_000, privateKey: hq.privateKey });
    const props = { userProperties: [['order', '7'] as [string, string], ...signatureProperties(o)] };
    expect(hasDetachedSignature(props)).to.equal(true);
    expect(hasDetachedSignature({ userProperties: [['order', '7']] })).to.equal(false);
    expect(hasDetachedSignature(undefined)).to.equal(false);
    const d = parseDetached(o.topic, o.payload, props);
    expect(d).to.deep.include({ gatewayId: 'gw1', claimedGateway: 'gw1', kid: o.kid, seq: 9, exp: 2_000_000_000 });
    expect(d.signature.equals(o.signature)).to.equal(true);
    expect(verifyFields(d, d.signature, hq.publicKey)).to.equal(true);
  });

  it('refuses missing, repeated or malformed properties', () => {
    const o = signOrder({ gatewayId: 'gw1', topic: 't', payload: 'x', seq: 9, exp: 2_000_000_000, privateKey: hq.privateKey });
    const good = signatureProperties(o);
    const without = (k: string) => good.filter(([n]) => n !== k);
    const replace = (k: string, v: string) => good.map(([n, x]) => [n, n === k ? v : x] as [string, string]);
    const bad: Array<[string, Array<[string, string]>]> = [
      ['no sig', without('sig')],
      ['no kid', without('kid')],
      ['no seq', without('seq')],
      ['no exp', without('exp')],
      ['two seq', [...good, ['seq', '10']]],
      ['seq 0', replace('seq', '0')],
      ['seq hex', replace('seq', '0x10')],
      ['seq leading zero', replace('seq', '010')],
      ['seq too large', replace('seq', '99999999999999999')],
      ['sig short', replace('sig', Buffer.alloc(32).toString('base64'))],
      ['sig not base64', replace('sig', '!!!')],
    ];
    for (const [what, up] of bad) expect(() => parseDetached('t', Buffer.from('x'), { userProperties: up }), what).to.throw(SigningFormatError);
  });
});

describe('security/signing: 3.1.1 envelope', () => {
  it('has the documented layout and round-trips', () => {
    const o = signOrder({ gatewayId: 'gw1', topic: 'fleet/gw1/orders/7', payload: Buffer.from([0, 1, 2, 255]), seq: 300, exp: 2_000_000_000, privateKey: hq.privateKey });
    const env = encodeEnvelope(o);
    expect(env.subarray(0, 4).toString('ascii')).to.equal('CVS1');
    expect(env[4]).to.equal(3);
    expect(env.subarray(5, 8).toString()).to.equal('gw1');
    expect(env[8]).to.equal(32);
    expect(env.subarray(9, 41).toString()).to.equal(o.kid);
    expect(env.readBigUInt64BE(41)).to.equal(300n);
    expect(env.readBigUInt64BE(49)).to.equal(2_000_000_000n);
    expect(env.subarray(57, 121).equals(o.signature)).to.equal(true);
    expect(env.subarray(121).equals(Buffer.from([0, 1, 2, 255]))).to.equal(true);
    const d = decodeEnvelope(o.topic, env);
    expect(d).to.deep.include({ gatewayId: 'gw1', kid: o.kid, seq: 300, exp: 2_000_000_000, topic: o.topic });
    expect(d.payload.equals(o.payload)).to.equal(true);
    expect(verifyFields(d, d.signature, hq.publicKey)).to.equal(true);
  });

  it('refuses a missing magic, truncation at every point, and zero counters', () => {
    const o = signOrder({ gatewayId: 'gw1', topic: 't', payload: '', seq: 1, exp: 1, privateKey: hq.privateKey });
    const env = encodeEnvelope(o);
    expect(() => decodeEnvelope('t', Buffer.from('plain order text'))).to.throw(SigningFormatError, /magic/);
    for (let n = 0; n < env.length; n++) expect(() => decodeEnvelope('t', env.subarray(0, n)), `length ${n}`).to.throw(SigningFormatError);
    expect(decodeEnvelope('t', env).payload.length).to.equal(0);
    const zeroSeq = Buffer.from(env);
    zeroSeq.writeBigUInt64BE(0n, 4 + 1 + 3 + 1 + 32);
    expect(() => decodeEnvelope('t', zeroSeq)).to.throw(SigningFormatError, /seq/);
  });
});
