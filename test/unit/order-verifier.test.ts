// The signed-order verifier: every refusal reason, the alarm rate limit, and the replay state kept
// in convoy.db across a reopened store. Also the key files (security/keys.ts).
import { expect } from 'chai';
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Alarm } from '../../src/diagnostics/alarms.js';
import { silentLogger } from '../../src/diagnostics/log.js';
import {
  addTrustedKey,
  initGatewayKey,
  KeyFileError,
  loadGatewayKey,
  loadTrustedKeys,
  removeTrustedKey,
  type TrustedKey,
} from '../../src/security/keys.js';
import {
  MemoryReplayStore,
  OrderVerifier,
  SqliteReplayStore,
  type IncomingOrder,
  type ReplayStore,
  type Verdict,
} from '../../src/security/order-verifier.js';
import { encodeEnvelope, keyId, signatureProperties, signOrder } from '../../src/security/signing.js';
import { SqliteStateStore } from '../../src/store/sqlite-state-store.js';

const NOW_MS = Date.UTC(2030, 0, 1);
const NOW_S = NOW_MS / 1000;
const hq = generateKeyPairSync('ed25519');
const stranger = generateKeyPairSync('ed25519');
const trusted: TrustedKey = { name: 'hq', kid: keyId(hq.publicKey), key: hq.publicKey, file: 'hq.pem' };
const TOPIC = 'fleet/gw1/orders/7';

interface Opts {
  gw?: string;
  topic?: string;
  payload?: string;
  seq?: number;
  exp?: number;
  key?: KeyObject;
  envelope?: boolean;
}

function order(o: Opts = {}): IncomingOrder {
  const signed = signOrder({
    gatewayId: o.gw ?? 'gw1',
    topic: o.topic ?? TOPIC,
    payload: o.payload ?? 'deliver to dock 4',
    seq: o.seq ?? 1,
    exp: o.exp ?? NOW_S + 300,
    privateKey: o.key ?? hq.privateKey,
  });
  if (o.envelope) return { topic: signed.topic, payload: encodeEnvelope(signed) };
  return { topic: signed.topic, payload: signed.payload, properties: { userProperties: [['order', '7'], ...signatureProperties(signed)] } };
}

function reason(v: Verdict): string {
  return v.ok ? 'accepted' : v.reason;
}

describe('security/order-verifier', () => {
  let alarms: Alarm[];
  let now: number;
  let replay: ReplayStore;
  let v: OrderVerifier;

  function verifier(over: Partial<ConstructorParameters<typeof OrderVerifier>[0]> = {}): OrderVerifier {
    return new OrderVerifier({
      gatewayId: 'gw1', keys: [trusted], replay, maxClockSkewS: 60, log: silentLogger,
      alarm: (a) => alarms.push(a), alarmIntervalMs: 60_000, now: () => now, ...over,
    });
  }

  beforeEach(() => {
    alarms = [];
    now = NOW_MS;
    replay = new MemoryReplayStore();
    v = verifier();
  });

  afterEach(() => v.close());

  it('accepts a correctly signed order (user properties), keeping payload and properties', async () => {
    const m = order({ seq: 5 });
    const r = v.verify(m);
    expect(r.ok).to.equal(true);
    if (!r.ok) return;
    expect(r.payload.toString()).to.equal('deliver to dock 4');
    expect(r.properties?.userProperties?.[0]).to.deep.equal(['order', '7']);
    expect(r.seq).to.equal(5);
    await r.durable;
    expect(v.stats()).to.deep.include({ accepted: 1, alarms: 0 });
  });

  it('accepts a correctly signed envelope and delivers the payload unwrapped', () => {
    const r = v.verify(order({ seq: 5, envelope: true, payload: 'cancel order 7' }));
    expect(r.ok && r.payload.toString()).to.equal('cancel order 7');
  });

  it('refuses an unsigned or malformed message (malformed)', () => {
    expect(reason(v.verify({ topic: TOPIC, payload: Buffer.from('deliver to dock 9') }))).to.equal('malformed');
    const m = order();
    m.properties!.userProperties = m.properties!.userProperties!.filter(([k]) => k !== 'seq');
    expect(reason(v.verify(m))).to.equal('malformed');
  });

  it('refuses a key it does not trust (unknown_key), by user property and by envelope', () => {
    expect(reason(v.verify(order({ key: stranger.privateKey })))).to.equal('unknown_key');
    expect(reason(v.verify(order({ key: stranger.privateKey, envelope: true })))).to.equal('unknown_key');
  });

  it('refuses a forgery that claims the trusted key id (bad_signature)', () => {
    const forged = order({ key: stranger.privateKey });
    forged.properties!.userProperties = forged.properties!.userProperties!.map(([k, x]) => [k, k === 'kid' ? trusted.kid : x]);
    expect(reason(v.verify(forged))).to.equal('bad_signature');
  });

  it('refuses an altered payload, topic, sequence or expiry (bad_signature)', () => {
    const m = order({ seq: 3 });
    expect(reason(v.verify({ ...m, payload: Buffer.from('deliver to dock 5') }))).to.equal('bad_signature');
    expect(reason(v.verify({ ...m, topic: 'fleet/gw1/orders/8' }))).to.equal('bad_signature');
    const up = m.properties!.userProperties!;
    expect(reason(v.verify({ ...m, properties: { userProperties: up.map(([k, x]) => [k, k === 'seq' ? '4' : x]) } }))).to.equal('bad_signature');
    expect(reason(v.verify({ ...m, properties: { userProperties: up.map(([k, x]) => [k, k === 'exp' ? String(NOW_S + 9999) : x]) } }))).to.equal('bad_signature');
    const env = order({ seq: 3, envelope: true });
    const tampered = Buffer.from(env.payload);
    tampered[tampered.length - 1] = tampered[tampered.length - 1]! ^ 1;
    expect(reason(v.verify({ topic: env.topic, payload: tampered }))).to.equal('bad_signature');
    // The untouched original is still fine (nothing was recorded by the refusals).
    expect(reason(v.verify(m))).to.equal('accepted');
  });

  it('refuses an order validly signed for another truck (wrong_gateway), with or without the gw property', () => {
    expect(reason(v.verify(order({ gw: 'gw2', topic: TOPIC })))).to.equal('wrong_gateway');
    expect(reason(v.verify(order({ gw: 'gw2', envelope: true })))).to.equal('wrong_gateway');
    const m = order({ gw: 'gw2' });
    m.properties!.userProperties = m.properties!.userProperties!.filter(([k]) => k !== 'gw');
    expect(reason(v.verify(m))).to.equal('bad_signature');
  });

  it('refuses an expired order (expired), with the clock skew tolerance', () => {
    expect(reason(v.verify(order({ seq: 1, exp: NOW_S - 61 })))).to.equal('expired');
    expect(reason(v.verify(order({ seq: 2, exp: NOW_S - 59 })))).to.equal('accepted');
    const strict = verifier({ maxClockSkewS: 0 });
    expect(reason(strict.verify(order({ seq: 3, exp: NOW_S - 1 })))).to.equal('expired');
    strict.close();
  });

  it('refuses a replay or an older sequence (replayed), per key', () => {
    const m = order({ seq: 10 });
    expect(reason(v.verify(m))).to.equal('accepted');
    expect(reason(v.verify(m))).to.equal('replayed');
    expect(reason(v.verify(order({ seq: 9, payload: 'older' })))).to.equal('replayed');
    expect(reason(v.verify(order({ seq: 10, envelope: true })))).to.equal('replayed');
    expect(reason(v.verify(order({ seq: 11 })))).to.equal('accepted');
    // A second trusted key has its own counter.
    const hq2 = generateKeyPairSync('ed25519');
    v.setKeys([trusted, { name: 'hq2', kid: keyId(hq2.publicKey), key: hq2.publicKey, file: '' }]);
    expect(reason(v.verify(order({ seq: 1, key: hq2.privateKey })))).to.equal('accepted');
    expect(v.stats().rejected).to.include({ replayed: 3 });
    expect(v.stats().accepted).to.equal(3);
  });

  it('counts by reason and rate-limits the alarm: one at once, one summary per window', () => {
    for (let i = 0; i < 50; i++) v.verify({ topic: TOPIC, payload: Buffer.from(`forged ${i}`) });
    v.verify(order({ key: stranger.privateKey }));
    expect(alarms).to.have.length(1);
    expect(alarms[0]).to.deep.include({ name: 'orders' });
    expect(alarms[0]!.detail).to.include({ reason: 'malformed', topic: TOPIC });
    now += 61_000; // next window: the summary of the last one goes out, then this refusal's alarm
    v.verify(order({ exp: 1 }));
    expect(alarms).to.have.length(3);
    expect(alarms[1]!.detail).to.include({ suppressed: 50, window_malformed: 49, window_unknown_key: 1 });
    expect(alarms[2]!.detail).to.include({ reason: 'expired', total_malformed: 50, total_unknown_key: 1, total_expired: 1 });
    expect(v.stats()).to.deep.include({ alarms: 3, alarmsSuppressed: 50 });
    expect(v.stats().rejected).to.deep.equal({
      malformed: 50, unknown_key: 1, bad_signature: 0, wrong_gateway: 0, expired: 1, replayed: 0, store_error: 0,
    });
  });

  it('publishes the window summary from a timer when nothing else comes', async () => {
    const fast = verifier({ alarmIntervalMs: 50, now: Date.now });
    for (let i = 0; i < 5; i++) fast.verify({ topic: TOPIC, payload: Buffer.from('x') });
    expect(alarms).to.have.length(1);
    await new Promise((r) => setTimeout(r, 120));
    expect(alarms).to.have.length(2);
    expect(alarms[1]!.detail).to.include({ suppressed: 4 });
    fast.close();
  });

  it('with no trusted key refuses everything (unknown_key)', () => {
    const none = verifier({ keys: [] });
    expect(reason(none.verify(order()))).to.equal('unknown_key');
    none.close();
  });
});

describe('security/order-verifier: replay state in convoy.db', () => {
  let dir: string;
  beforeEach(() => (dir = mkdtempSync(join(tmpdir(), 'convoy-orders-'))));
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  function open(): { store: SqliteStateStore; v: OrderVerifier; replay: SqliteReplayStore } {
    const store = new SqliteStateStore({ path: join(dir, 'convoy.db'), log: silentLogger });
    const replay = new SqliteReplayStore(store);
    const v = new OrderVerifier({ gatewayId: 'gw1', keys: [trusted], replay, maxClockSkewS: 60, log: silentLogger, now: () => NOW_MS });
    return { store, v, replay };
  }

  it('keeps the last accepted sequence across a reopened store', async () => {
    const a = open();
    const r = a.v.verify(order({ seq: 7 }));
    expect(r.ok).to.equal(true);
    if (r.ok) await r.durable;
    expect(a.replay.hasPending).to.equal(false);
    a.v.close();
    a.store.close();

    const b = open();
    expect(b.replay.last(trusted.kid)).to.equal(7);
    expect(reason(b.v.verify(order({ seq: 7 })))).to.equal('replayed');
    expect(reason(b.v.verify(order({ seq: 6 })))).to.equal('replayed');
    const r2 = b.v.verify(order({ seq: 8 }));
    expect(reason(r2)).to.equal('accepted');
    if (r2.ok) await r2.durable;
    b.v.close();
    b.store.close();

    const c = open();
    expect(c.replay.last(trusted.kid)).to.equal(8);
    c.v.close();
    c.store.close();
  });

  it('commits the sequence with the state store (one transaction) and resolves only once it is durable', async () => {
    const a = open();
    const r = a.v.verify(order({ seq: 3 }));
    expect(a.replay.hasPending).to.equal(true);
    // Recorded in memory only: nothing in the table until the grouped commit.
    const peek = (): unknown => a.store.db.prepare('SELECT last_seq FROM signed_order_seq').pluck().get();
    expect(peek()).to.equal(undefined);
    if (r.ok) await r.durable;
    expect(peek()).to.equal(3);
    a.v.close();
    a.store.close();
  });

  it('rejects `durable` when the sequence did not reach the database', async () => {
    const a = open();
    const r = a.v.verify(order({ seq: 3 }));
    a.replay.close(); // detached before the commit: nothing written for it
    let failed = false;
    if (r.ok) await r.durable.catch(() => (failed = true));
    expect(failed).to.equal(true);
    a.store.close();
  });
});

describe('security/keys: key files', () => {
  let dir: string;
  beforeEach(() => (dir = mkdtempSync(join(tmpdir(), 'convoy-keys-'))));
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  const pem = (k: KeyObject): string => k.export({ type: 'spki', format: 'pem' }).toString();

  it('init writes the gateway key pair with mode 0600 and refuses to overwrite it', () => {
    const k = initGatewayKey(dir);
    expect(statSync(join(dir, 'gateway.key')).mode & 0o777).to.equal(0o600);
    expect(statSync(join(dir, 'gateway.pub')).mode & 0o777).to.equal(0o600);
    expect(loadGatewayKey(join(dir, 'gateway.key')).kid).to.equal(k.kid);
    expect(readFileSync(join(dir, 'gateway.pub'), 'utf8')).to.equal(k.publicPem);
    expect(() => initGatewayKey(dir)).to.throw(KeyFileError, /already exists/);
    expect(initGatewayKey(dir, { force: true }).kid).to.not.equal(k.kid);
  });

  it('refuses a gateway key readable by others', () => {
    initGatewayKey(dir);
    chmodSync(join(dir, 'gateway.key'), 0o644);
    expect(() => loadGatewayKey(join(dir, 'gateway.key'))).to.throw(KeyFileError, /chmod 600/);
  });

  it('adds, lists and removes trusted keys; refuses private keys, other algorithms and duplicates', () => {
    const t = join(dir, 'trusted');
    const added = addTrustedKey(t, 'hq-2030', pem(hq.publicKey));
    expect(added.kid).to.equal(trusted.kid);
    expect(statSync(added.file).mode & 0o777).to.equal(0o600);
    expect(() => addTrustedKey(t, 'again', pem(hq.publicKey))).to.throw(KeyFileError, /already trusted as "hq-2030"/);
    expect(() => addTrustedKey(t, 'priv', hq.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString())).to.throw(KeyFileError, /PRIVATE/);
    const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    expect(() => addTrustedKey(t, 'ec', pem(ec.publicKey))).to.throw(KeyFileError, /Ed25519/);
    expect(() => addTrustedKey(t, '../evil', pem(stranger.publicKey))).to.throw(KeyFileError, /invalid key name/);
    addTrustedKey(t, 'backup', pem(stranger.publicKey));
    writeFileSync(join(t, 'junk.pem'), 'not a key');
    const set = loadTrustedKeys(t);
    expect(set.keys.map((k) => k.name)).to.deep.equal(['backup', 'hq-2030']);
    expect(set.problems.map((p) => p.file)).to.deep.equal([join(t, 'junk.pem')]);
    expect(removeTrustedKey(t, 'backup')).to.equal(true);
    expect(removeTrustedKey(t, 'backup')).to.equal(false);
    expect(loadTrustedKeys(t).keys.map((k) => k.name)).to.deep.equal(['hq-2030']);
    expect(loadTrustedKeys(join(dir, 'missing')).keys).to.deep.equal([]);
  });
});
