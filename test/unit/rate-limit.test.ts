import { expect } from 'chai';
import { PublishRate, TokenBucket } from '../../src/security/rate-limit.js';

describe('rate limits (pure)', () => {
  it('a token bucket allows its burst, then its rate', () => {
    const b = new TokenBucket(10, 10, 0);
    for (let i = 0; i < 10; i++) expect(b.take(1, 0)).to.equal(true);
    expect(b.take(1, 0)).to.equal(false);
    expect(b.take(1, 100)).to.equal(true); // 100 ms at 10/s = one token
    expect(b.take(1, 100)).to.equal(false);
  });

  it('charges messages and bytes, and says how long to wait when over', () => {
    const r = new PublishRate(2, 1000, 0);
    expect(r.charge(100, 0)).to.equal(0);
    expect(r.charge(100, 0)).to.equal(0);
    expect(r.charge(100, 0)).to.equal(500); // third message in the same instant: 1 token short at 2/s
    const bytes = new PublishRate(0, 1000, 0);
    expect(bytes.charge(3000, 0)).to.equal(2000);
  });
});
