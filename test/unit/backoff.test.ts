import { expect } from 'chai';
import { Backoff, backoffCeiling, fullJitterDelay } from '../../src/bridge/backoff.js';

describe('uplink backoff (exponential, full jitter)', () => {
  it('doubles the bound per attempt up to the cap', () => {
    expect([0, 1, 2, 3, 4, 5, 6].map((a) => backoffCeiling(a, 100, 2000))).to.deep.equal([100, 200, 400, 800, 1600, 2000, 2000]);
  });

  it('stays finite and at the cap for huge attempt counts', () => {
    expect(backoffCeiling(10_000, 1000, 60_000)).to.equal(60_000);
    expect(fullJitterDelay(10_000, 1000, 60_000, () => 0.5)).to.equal(30_000);
  });

  it('draws the delay uniformly between 0 and the bound', () => {
    expect(fullJitterDelay(3, 100, 10_000, () => 0)).to.equal(0);
    expect(fullJitterDelay(3, 100, 10_000, () => 0.5)).to.equal(400);
    expect(fullJitterDelay(3, 100, 10_000, () => 0.999999)).to.equal(799);
  });

  it('treats a random source outside [0, 1) as 0 rather than exceeding the bound', () => {
    expect(fullJitterDelay(2, 100, 1000, () => 1)).to.equal(0);
    expect(fullJitterDelay(2, 100, 1000, () => Number.NaN)).to.equal(0);
  });

  it('spreads real random delays over the whole window', () => {
    const ds = Array.from({ length: 2000 }, () => fullJitterDelay(4, 100, 60_000));
    expect(Math.min(...ds)).to.be.at.least(0);
    expect(Math.max(...ds)).to.be.below(1600);
    // Full jitter: both halves of the window are used.
    expect(ds.filter((d) => d < 800).length).to.be.within(800, 1200);
  });

  it('counts attempts and grows the bound with each next()', () => {
    const b = new Backoff({ initialMs: 100, maxMs: 1000, resetAfterMs: 5000, random: () => 0.5 });
    expect([b.next(), b.next(), b.next(), b.next(), b.next()]).to.deep.equal([50, 100, 200, 400, 500]);
    expect(b.attempts).to.equal(5);
  });

  it('resets after a link stayed up for the stable period', () => {
    let now = 1000;
    const b = new Backoff({ initialMs: 100, maxMs: 10_000, resetAfterMs: 5000, random: () => 0.5, now: () => now });
    b.next();
    b.next();
    b.next();
    b.connected();
    now += 5000;
    b.disconnected();
    expect(b.attempts).to.equal(0);
    expect(b.next()).to.equal(50);
  });

  it('keeps backing off when HQ accepts and drops quickly (flapping)', () => {
    let now = 0;
    const b = new Backoff({ initialMs: 100, maxMs: 10_000, resetAfterMs: 5000, random: () => 0.5, now: () => now });
    for (let i = 0; i < 4; i++) {
      b.next();
      b.connected();
      now += 1000;
      b.disconnected();
    }
    expect(b.attempts).to.equal(4);
    expect(b.next()).to.equal(800);
  });

  it('checkStable resets while still up; reset() resets at once', () => {
    let now = 0;
    const b = new Backoff({ initialMs: 100, maxMs: 10_000, resetAfterMs: 1000, random: () => 0.5, now: () => now });
    b.next();
    b.next();
    b.connected();
    b.checkStable();
    expect(b.attempts).to.equal(2);
    now = 1000;
    b.checkStable();
    expect(b.attempts).to.equal(0);
    b.next();
    b.reset();
    expect(b.attempts).to.equal(0);
  });
});
