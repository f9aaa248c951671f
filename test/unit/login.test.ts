import { expect } from 'chai';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ProtocolError } from '../../src/mqtt/errors.js';
import { Reason } from '../../src/mqtt/reason-codes.js';
import { createLoginChecker, type LoginCheckerOptions, type LoginFailureEvent } from '../../src/security/login.js';
import { PasswordFileError } from '../../src/security/password-file.js';
import { hashPassword } from '../../src/security/passwords.js';
import type { ListenerPolicy, LoginAttempt } from '../../src/security/types.js';

const CHEAP = { ln: 4, r: 8, p: 1 };
const MOSQ_7 = '$7$101$YMt3WzMCR/I//SgQ$gRiaqg4bDO1LMqtK5n413XalE/H+EnOigqgG7vTaVj9kSwhoeH8bLGAye3Uk0A0n9pEDpAxuCrlxWpcsjeFciQ==';

const closed: ListenerPolicy = { name: 'tcp://0.0.0.0:1883', allowAnonymous: false, useIdentityAsUsername: false };
const open: ListenerPolicy = { name: 'tcp://127.0.0.1:1883', allowAnonymous: true, useIdentityAsUsername: false };
const mtls: ListenerPolicy = { name: 'tls://0.0.0.0:8883', allowAnonymous: false, useIdentityAsUsername: true };

function attempt(over: Partial<LoginAttempt> = {}): LoginAttempt {
  return { clientId: 'c1', username: undefined, password: undefined, address: '10.0.0.5', listener: closed, certificateIdentity: undefined, ...over };
}

async function refusal(p: Promise<unknown>): Promise<ProtocolError> {
  try {
    await p;
  } catch (e) {
    expect(e).to.be.instanceOf(ProtocolError);
    return e as ProtocolError;
  }
  throw new Error('expected a refusal');
}

describe('login checker', () => {
  let dir: string;
  let pwFile: string;
  let t: number;
  let slept: number[];
  let events: LoginFailureEvent[];

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'convoy-login-'));
    pwFile = join(dir, 'passwd');
    writeFileSync(pwFile, `# users\nalice:${await hashPassword('alice-pw', CHEAP)}\nmosq:${MOSQ_7}\n`);
  });
  after(() => {
    rmSync(dir, { recursive: true, force: true });
  });
  beforeEach(() => {
    t = 1_000_000;
    slept = [];
    events = [];
  });

  const make = (over: Partial<LoginCheckerOptions> = {}) =>
    createLoginChecker({
      passwordFile: pwFile,
      banAfterFailures: 5,
      banWindowS: 60,
      banDurationS: 300,
      hashConcurrency: 2,
      now: () => t,
      sleep: (ms) => {
        slept.push(ms);
        return Promise.resolve();
      },
      onFailure: (e) => events.push(e),
      ...over,
    });

  it('accepts a correct password (scrypt and Mosquitto $7$) and returns the user name', async () => {
    const lc = make();
    expect(lc.userCount).to.equal(2);
    expect(await lc.check(attempt({ username: 'alice', password: Buffer.from('alice-pw') }))).to.equal('alice');
    expect(await lc.check(attempt({ username: 'mosq', password: Buffer.from('secret') }))).to.equal('mosq');
    expect(slept).to.deep.equal([]);
  });

  it('refuses a wrong password, an unknown user and a missing password with 0x86, and the same message', async () => {
    const lc = make();
    const wrong = await refusal(lc.check(attempt({ username: 'alice', password: Buffer.from('nope') })));
    const unknown = await refusal(lc.check(attempt({ username: 'mallory', password: Buffer.from('x') })));
    const none = await refusal(lc.check(attempt({ username: 'alice' })));
    for (const e of [wrong, unknown, none]) {
      expect(e.reason).to.equal(Reason.BadUserNameOrPassword);
      expect(e.message).to.equal('tcp://0.0.0.0:1883: login refused: bad user name or password');
    }
    expect(events.map((e) => e.detail)).to.deep.equal(['wrong password', 'unknown user', 'no password']);
    expect(events.every((e) => e.reason === 'BadUserNameOrPassword')).to.equal(true);
  });

  it('spends a hash on unknown users too (timing does not reveal who exists)', async () => {
    const lc = make();
    const before = lc.limiter.active;
    const p = lc.check(attempt({ username: 'ghost', password: Buffer.from('x') }));
    expect(lc.limiter.active).to.equal(before + 1);
    await refusal(p);
  });

  it('anonymous: allowed only where the listener allows it', async () => {
    const lc = make();
    expect(await lc.check(attempt({ listener: open }))).to.equal(undefined);
    const e = await refusal(lc.check(attempt({ listener: closed })));
    expect(e.reason).to.equal(Reason.NotAuthorized);
    expect(events[0]).to.include({ reason: 'NotAuthorized', detail: 'anonymous clients are not allowed', failures: 1 });
  });

  it('credentials given on an anonymous listener are still checked', async () => {
    const lc = make();
    expect(await lc.check(attempt({ listener: open, username: 'alice', password: Buffer.from('alice-pw') }))).to.equal('alice');
    const e = await refusal(lc.check(attempt({ listener: open, username: 'alice', password: Buffer.from('bad') })));
    expect(e.reason).to.equal(Reason.BadUserNameOrPassword);
  });

  it('without a password file: a claimed user name is treated as anonymous where allowed, refused elsewhere', async () => {
    const lc = make({ passwordFile: '' });
    expect(lc.userCount).to.equal(0);
    expect(await lc.check(attempt({ listener: open, username: 'admin', password: Buffer.from('x') }))).to.equal(undefined);
    const e = await refusal(lc.check(attempt({ listener: closed, username: 'admin', password: Buffer.from('x') })));
    expect(e.reason).to.equal(Reason.BadUserNameOrPassword);
  });

  it('certificate identity as user name: the CN, no password needed', async () => {
    const lc = make();
    expect(await lc.check(attempt({ listener: mtls, certificateIdentity: 'truck-7-gps' }))).to.equal('truck-7-gps');
    // CONNECT's user name is ignored in favour of the certificate.
    expect(await lc.check(attempt({ listener: mtls, certificateIdentity: 'truck-7-gps', username: 'alice', password: Buffer.from('bad') }))).to.equal('truck-7-gps');
    const e = await refusal(lc.check(attempt({ listener: mtls, username: 'alice', password: Buffer.from('alice-pw') })));
    expect(e.reason).to.equal(Reason.NotAuthorized);
  });

  it('slows failures down with a growing delay before refusing', async () => {
    const lc = make({ banAfterFailures: 0, slowdownBaseMs: 50, slowdownMaxMs: 400 });
    for (let i = 0; i < 5; i++) await refusal(lc.check(attempt({ username: 'alice', password: Buffer.from('bad') })));
    expect(slept).to.deep.equal([50, 100, 200, 400, 400]);
  });

  it('bans the address after ban_after_failures failures in the window, then refuses with 0x8A', async () => {
    const lc = make({ banAfterFailures: 3 });
    for (let i = 0; i < 3; i++) {
      const e = await refusal(lc.check(attempt({ username: `u${i}`, password: Buffer.from('bad') })));
      expect(e.reason).to.equal(Reason.BadUserNameOrPassword);
      t += 1000;
    }
    expect(events[2]!.bannedNow).to.equal(true);
    // Even the right password is refused while banned, without hashing.
    const banned = await refusal(lc.check(attempt({ username: 'alice', password: Buffer.from('alice-pw') })));
    expect(banned.reason).to.equal(Reason.Banned);
    expect(banned.message).to.match(/address 10\.0\.0\.5 is banned/);
    // Another address is fine.
    expect(await lc.check(attempt({ address: '10.0.0.6', username: 'alice', password: Buffer.from('alice-pw') }))).to.equal('alice');
    t += 300_000;
    expect(await lc.check(attempt({ username: 'alice', password: Buffer.from('alice-pw') }))).to.equal('alice');
  });

  it('bans a user name attacked from many addresses', async () => {
    const lc = make({ banAfterFailures: 3 });
    for (let i = 0; i < 3; i++) await refusal(lc.check(attempt({ address: `10.1.0.${i}`, username: 'alice', password: Buffer.from('bad') })));
    const e = await refusal(lc.check(attempt({ address: '10.9.9.9', username: 'alice', password: Buffer.from('alice-pw') })));
    expect(e.reason).to.equal(Reason.Banned);
    expect(await lc.check(attempt({ address: '10.9.9.9', username: 'mosq', password: Buffer.from('secret') }))).to.equal('mosq');
  });

  it('failures outside the window do not add up', async () => {
    const lc = make({ banAfterFailures: 3 });
    for (let i = 0; i < 6; i++) {
      await refusal(lc.check(attempt({ username: 'alice', password: Buffer.from('bad') })));
      t += 31_000;
    }
    expect(events.some((e) => e.bannedNow)).to.equal(false);
  });

  it('bounds concurrent hashing; beyond the queue limit answers 0x89 ServerBusy', async () => {
    const lc = make({ hashConcurrency: 1, maxQueuedHashes: 3, banAfterFailures: 0 });
    const ok = attempt({ username: 'alice', password: Buffer.from('alice-pw') });
    const runs = Array.from({ length: 4 }, () => lc.check(ok));
    expect(lc.limiter.active).to.equal(1);
    expect(lc.limiter.queued).to.equal(3);
    const busy = await refusal(lc.check(ok));
    expect(busy.reason).to.equal(Reason.ServerBusy);
    expect(events.at(-1)!.reason).to.equal('ServerBusy');
    expect(await Promise.all(runs)).to.deep.equal(['alice', 'alice', 'alice', 'alice']);
  });

  it('a malformed password file fails at creation with FILE:LINE', () => {
    const bad = join(dir, 'bad');
    writeFileSync(bad, `alice:${MOSQ_7}\n:${MOSQ_7}\n`);
    expect(() => make({ passwordFile: bad })).to.throw(PasswordFileError, /bad:2: user name is empty/);
    expect(() => make({ passwordFile: join(dir, 'missing') })).to.throw(PasswordFileError, /ENOENT/);
  });

  it('reload() picks up changes; a broken file keeps the previous users and throws', async () => {
    const f = join(dir, 'reload');
    writeFileSync(f, `alice:${MOSQ_7}\n`);
    const lc = make({ passwordFile: f });
    expect(await lc.check(attempt({ username: 'alice', password: Buffer.from('secret') }))).to.equal('alice');
    writeFileSync(f, `bob:${MOSQ_7}\n`);
    lc.reload();
    expect(await lc.check(attempt({ username: 'bob', password: Buffer.from('secret') }))).to.equal('bob');
    expect((await refusal(lc.check(attempt({ username: 'alice', password: Buffer.from('secret') })))).reason).to.equal(Reason.BadUserNameOrPassword);
    writeFileSync(f, 'garbage\n');
    expect(() => lc.reload()).to.throw(PasswordFileError, /reload:1:/);
    expect(await lc.check(attempt({ username: 'bob', password: Buffer.from('secret') }))).to.equal('bob');
  });
});
