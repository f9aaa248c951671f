import { expect } from 'chai';
import { LoginBans, addressKey } from '../../src/security/ban.js';

function clock(start = 1_000_000) {
  const c = { t: start, now: () => c.t, advance: (ms: number) => void (c.t += ms) };
  return c;
}

describe('ban: failures, slow-down and bans', () => {
  it('bans an address when failures reach the limit within the window, for the duration', () => {
    const c = clock();
    const b = new LoginBans({ afterFailures: 3, windowMs: 60_000, durationMs: 300_000, now: c.now });
    expect(b.recordFailure('10.0.0.1', undefined).bannedNow).to.equal(false);
    c.advance(1000);
    expect(b.recordFailure('10.0.0.1', undefined).bannedNow).to.equal(false);
    expect(b.check('10.0.0.1', undefined).banned).to.equal(false);
    c.advance(1000);
    expect(b.recordFailure('10.0.0.1', undefined).bannedNow).to.equal(true);
    const st = b.check('10.0.0.1', undefined);
    expect(st).to.deep.equal({ banned: true, what: 'address 10.0.0.1', untilMs: c.t + 300_000 });
    expect(b.check('10.0.0.2', undefined).banned).to.equal(false);
    c.advance(299_999);
    expect(b.check('10.0.0.1', undefined).banned).to.equal(true);
    c.advance(1);
    expect(b.check('10.0.0.1', undefined).banned).to.equal(false);
    // The count starts again after a ban.
    expect(b.recordFailure('10.0.0.1', undefined).bannedNow).to.equal(false);
  });

  it('counts in a sliding window: old failures fall out', () => {
    const c = clock();
    const b = new LoginBans({ afterFailures: 3, windowMs: 60_000, durationMs: 300_000, now: c.now });
    b.recordFailure('a', undefined);
    c.advance(30_000);
    b.recordFailure('a', undefined);
    c.advance(30_001); // the first is now older than the window
    expect(b.recordFailure('a', undefined).bannedNow).to.equal(false);
    expect(b.failuresForAddress('a')).to.equal(2);
    c.advance(1000);
    expect(b.recordFailure('a', undefined).bannedNow).to.equal(true);
  });

  it('counts per user name across addresses', () => {
    const c = clock();
    const b = new LoginBans({ afterFailures: 3, windowMs: 60_000, durationMs: 60_000, now: c.now });
    b.recordFailure('10.0.0.1', 'alice');
    b.recordFailure('10.0.0.2', 'alice');
    expect(b.failuresForUser('alice')).to.equal(2);
    expect(b.recordFailure('10.0.0.3', 'alice').bannedNow).to.equal(true);
    expect(b.check('10.0.0.9', 'alice')).to.include({ banned: true, what: 'user alice' });
    expect(b.check('10.0.0.1', 'bob').banned).to.equal(false);
    expect(b.check('10.0.0.1', undefined).banned).to.equal(false);
  });

  it('the usual setting: 15 failures a minute ban for 5 minutes', () => {
    const c = clock();
    const b = new LoginBans({ afterFailures: 15, windowMs: 60_000, durationMs: 300_000, now: c.now });
    for (let i = 0; i < 14; i++) {
      expect(b.recordFailure('1.2.3.4', `u${i}`).bannedNow).to.equal(false);
      c.advance(4000);
    }
    expect(b.recordFailure('1.2.3.4', 'u14').bannedNow).to.equal(true);
    expect(b.check('1.2.3.4', 'anyone').banned).to.equal(true);
  });

  it('slows failures down with a growing delay, capped', () => {
    const c = clock();
    const b = new LoginBans({ afterFailures: 0, windowMs: 60_000, durationMs: 1, slowdownBaseMs: 100, slowdownMaxMs: 1000, now: c.now });
    const delays = Array.from({ length: 7 }, () => b.recordFailure('x', 'y').delayMs);
    expect(delays).to.deep.equal([100, 200, 400, 800, 1000, 1000, 1000]);
    c.advance(60_001);
    expect(b.recordFailure('x', 'y').delayMs).to.equal(100);
  });

  it('the delay follows the worse of address and user name', () => {
    const b = new LoginBans({ afterFailures: 0, windowMs: 60_000, durationMs: 1, slowdownBaseMs: 10, now: () => 0 });
    b.recordFailure('1.1.1.1', 'victim');
    b.recordFailure('2.2.2.2', 'victim');
    const out = b.recordFailure('3.3.3.3', 'victim');
    expect(out.failures).to.equal(3);
    expect(out.delayMs).to.equal(40);
  });

  it('afterFailures 0 never bans', () => {
    const b = new LoginBans({ afterFailures: 0, windowMs: 60_000, durationMs: 60_000, now: () => 5 });
    for (let i = 0; i < 100; i++) expect(b.recordFailure('a', 'u').bannedNow).to.equal(false);
    expect(b.check('a', 'u').banned).to.equal(false);
  });

  it('treats an IPv4-mapped IPv6 address as the IPv4 address', () => {
    expect(addressKey('::ffff:10.0.0.7')).to.equal(addressKey('10.0.0.7'));
    expect(addressKey('FE80::1')).to.equal(addressKey('fe80::1'));
    const b = new LoginBans({ afterFailures: 2, windowMs: 60_000, durationMs: 60_000, now: () => 5 });
    b.recordFailure('::ffff:10.0.0.7', undefined);
    b.recordFailure('10.0.0.7', undefined);
    expect(b.check('::ffff:10.0.0.7', undefined).banned).to.equal(true);
  });

  it('bounds memory: tracks at most maxKeys keys, evicting the least recently failed', () => {
    const c = clock();
    const b = new LoginBans({ afterFailures: 0, windowMs: 60_000, durationMs: 60_000, maxKeys: 100, now: c.now });
    for (let i = 0; i < 1000; i++) {
      b.recordFailure(`10.0.${i >> 8}.${i & 255}`, `user${i}`);
      if (i % 20 === 0) b.recordFailure('keep', undefined); // recently active: survives
    }
    expect(b.size.failures).to.equal(100);
    expect(b.failuresForAddress('keep')).to.equal(32); // timestamps per key are bounded too
    expect(b.failuresForAddress('10.0.0.0')).to.equal(0); // evicted long ago
    expect(b.failuresForUser('user999')).to.equal(1);
  });

  it('bounds the ban table, forgetting the oldest ban first', () => {
    const b = new LoginBans({ afterFailures: 3, windowMs: 60_000, durationMs: 60_000, maxKeys: 100, now: () => 5 });
    for (let i = 0; i < 500; i++) for (let k = 0; k < 3; k++) b.recordFailure(`b${i}`, undefined);
    expect(b.size.bans).to.equal(100);
    expect(b.check('b499', undefined).banned).to.equal(true);
    expect(b.check('b400', undefined).banned).to.equal(true);
    expect(b.check('b0', undefined).banned).to.equal(false);
  });

  it('clear() forgets everything', () => {
    const b = new LoginBans({ afterFailures: 1, windowMs: 60_000, durationMs: 60_000, now: () => 5 });
    b.recordFailure('a', 'u');
    expect(b.check('a', undefined).banned).to.equal(true);
    b.clear();
    expect(b.check('a', 'u').banned).to.equal(false);
    expect(b.size).to.deep.equal({ failures: 0, bans: 0 });
  });
});
