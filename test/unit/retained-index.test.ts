import { expect } from 'chai';
import fc from 'fast-check';
import { RetainedIndex } from '../../src/broker/retained-index.js';

/** Naive reference matcher: split and compare level by level (loop, no recursion). */
function naiveMatch(filter: string, topic: string): boolean {
  const f = filter.split('/');
  const t = topic.split('/');
  if (topic.startsWith('$') && (f[0] === '+' || f[0] === '#')) return false;
  for (let i = 0; i < f.length; i++) {
    if (f[i] === '#') return true;
    if (i >= t.length) return false;
    if (f[i] !== '+' && f[i] !== t[i]) return false;
  }
  return f.length === t.length;
}

function matches<T>(index: RetainedIndex<T>, filter: string): string[] {
  const found: string[] = [];
  index.match(filter, (topic) => found.push(topic));
  return found.sort();
}

const topicArb = fc
  .array(fc.constantFrom('a', 'b', '', '$x'), { minLength: 1, maxLength: 5 })
  .map((levels) => levels.join('/'))
  .filter((t) => t.length > 0);

const filterArb = fc
  .tuple(fc.array(fc.constantFrom('a', 'b', '', '$x', '+'), { minLength: 0, maxLength: 5 }), fc.boolean())
  .map(([levels, hash]) => (hash || levels.length === 0 ? [...levels, '#'] : levels).join('/'));

describe('RetainedIndex', () => {
  it('stores, replaces, reads and deletes by topic', () => {
    const index = new RetainedIndex<number>();
    index.set('a/b', 1);
    index.set('a', 2);
    index.set('a/b', 3);
    expect(index.size).to.equal(2);
    expect(index.get('a/b')).to.equal(3);
    expect(index.has('a')).to.equal(true);
    expect(index.get('a/c')).to.equal(undefined);
    expect(index.delete('a/c')).to.equal(false);
    expect(index.delete('a/b')).to.equal(true);
    expect(index.delete('a/b')).to.equal(false);
    expect([...index]).to.deep.equal([['a', 2]]);
    expect(index.delete('a')).to.equal(true);
    expect(index.size).to.equal(0);
    expect(index.nodeCount).to.equal(0);
  });

  it('keeps a parent topic when a child is deleted and vice versa', () => {
    const index = new RetainedIndex<string>();
    index.set('a', 'p');
    index.set('a/b/c', 'c');
    expect(index.delete('a')).to.equal(true);
    expect(index.get('a/b/c')).to.equal('c');
    expect(matches(index, 'a/#')).to.deep.equal(['a/b/c']);
    index.set('a', 'p');
    expect(index.delete('a/b/c')).to.equal(true);
    expect(index.nodeCount).to.equal(1);
    expect(matches(index, 'a/#')).to.deep.equal(['a']);
  });

  it('matches literal, +, # and empty levels', () => {
    const index = new RetainedIndex<number>();
    const topics = ['a', 'a/b', 'a/c', 'a/b/c', 'a//b', '/a', 'a/', 'b', '/'];
    topics.forEach((t, i) => index.set(t, i));
    expect(matches(index, 'a/b')).to.deep.equal(['a/b']);
    expect(matches(index, 'a/+')).to.deep.equal(['a/', 'a/b', 'a/c']);
    expect(matches(index, 'a/#')).to.deep.equal(['a', 'a/', 'a//b', 'a/b', 'a/b/c', 'a/c']);
    expect(matches(index, '+')).to.deep.equal(['a', 'b']);
    expect(matches(index, '/+')).to.deep.equal(['/', '/a']);
    expect(matches(index, '+/+')).to.deep.equal(['/', '/a', 'a/', 'a/b', 'a/c']);
    expect(matches(index, '#')).to.deep.equal([...topics].sort());
    expect(matches(index, 'a/+/c')).to.deep.equal(['a/b/c']);
    expect(matches(index, 'x/#')).to.deep.equal([]);
  });

  it('passes values to visit', () => {
    const index = new RetainedIndex<{ payload: string }>();
    const v = { payload: 'x' };
    index.set('a/b', v);
    const seen: unknown[] = [];
    index.match('a/+', (topic, value) => seen.push([topic, value]));
    expect(seen).to.deep.equal([['a/b', v]]);
    expect((seen[0] as [string, unknown])[1]).to.equal(v);
  });

  it("[MQTT-4.7.1-2] '#' matches the parent level", () => {
    const index = new RetainedIndex<number>();
    index.set('sport/tennis/player1', 1);
    index.set('sport/tennis/player1/ranking', 2);
    expect(matches(index, 'sport/tennis/player1/#')).to.deep.equal(['sport/tennis/player1', 'sport/tennis/player1/ranking']);
    expect(matches(index, 'sport/tennis/+/#')).to.deep.equal(['sport/tennis/player1', 'sport/tennis/player1/ranking']);
  });

  it('[MQTT-4.7.2-1] $ topics are not matched by a leading wildcard', () => {
    const index = new RetainedIndex<number>();
    index.set('$SYS/uptime', 1);
    index.set('$SYS', 2);
    index.set('a/$b', 3);
    expect(matches(index, '#')).to.deep.equal(['a/$b']);
    expect(matches(index, '+/uptime')).to.deep.equal([]);
    expect(matches(index, '+')).to.deep.equal([]);
    expect(matches(index, '$SYS/#')).to.deep.equal(['$SYS', '$SYS/uptime']);
    expect(matches(index, '$SYS/+')).to.deep.equal(['$SYS/uptime']);
    expect(matches(index, 'a/+')).to.deep.equal(['a/$b']);
  });

  it('lets visit delete and set entries while matching', () => {
    const index = new RetainedIndex<number>();
    for (let i = 0; i < 20; i++) index.set(`t/${i}`, i);
    const seen: string[] = [];
    index.match('t/#', (topic) => {
      seen.push(topic);
      // Deleting every other topic from the callback: those not yet visited must be skipped.
      for (let i = 0; i < 20; i += 2) index.delete(`t/${i}`);
      index.set('t/new', 99);
    });
    expect(seen.length).to.be.greaterThan(0);
    expect(seen.length).to.be.lessThan(21);
    expect(seen.slice(1).every((t) => Number(t.slice(2)) % 2 === 1)).to.equal(true);
    expect(index.size).to.equal(11);
  });

  it('agrees with a naive scan over random sets of topics (property)', () => {
    const opArb = fc.record({ set: fc.boolean(), topic: topicArb, value: fc.integer() });
    fc.assert(
      fc.property(fc.array(opArb, { maxLength: 60 }), fc.array(filterArb, { minLength: 1, maxLength: 8 }), (ops, filters) => {
        const index = new RetainedIndex<number>();
        const model = new Map<string, number>();
        for (const op of ops) {
          if (op.set) {
            index.set(op.topic, op.value);
            model.set(op.topic, op.value);
          } else {
            expect(index.delete(op.topic)).to.equal(model.delete(op.topic));
          }
          expect(index.size).to.equal(model.size);
        }
        for (const filter of filters) {
          const got: [string, number][] = [];
          index.match(filter, (t, v) => got.push([t, v]));
          const expected = [...model].filter(([t]) => naiveMatch(filter, t));
          const byTopic = (x: [string, number], y: [string, number]) => (x[0] < y[0] ? -1 : x[0] > y[0] ? 1 : 0);
          expect(got.sort(byTopic), filter).to.deep.equal(expected.sort(byTopic));
        }
        for (const topic of model.keys()) {
          expect(matches(index, topic)).to.deep.equal([topic]);
          expect(index.get(topic)).to.equal(model.get(topic));
        }
        expect(new Map(index)).to.deep.equal(model);
        for (const topic of model.keys()) index.delete(topic);
        expect(index.size).to.equal(0);
        expect(index.nodeCount).to.equal(0);
      }),
      { numRuns: 500 },
    );
  });

  it('handles 65,000-level topics and filters without RangeError', () => {
    const n = 65000;
    const levels = Array.from({ length: n }, (_, i) => `l${i % 3}`);
    const topic = levels.join('/');
    const parent = levels.slice(0, n - 1).join('/');
    const plus = Array.from({ length: n }, () => '+').join('/');
    const index = new RetainedIndex<number>();
    index.set(topic, 1);
    index.set(parent, 2);
    index.set('short', 3);
    expect(index.nodeCount).to.equal(n + 1);
    expect(matches(index, topic)).to.deep.equal([topic]);
    expect(matches(index, plus)).to.deep.equal([topic]);
    expect(matches(index, plus + '/#')).to.deep.equal([topic]);
    expect(matches(index, parent + '/#').length).to.equal(2);
    expect(matches(index, '#').length).to.equal(3);
    expect(matches(index, 'l0/#').length).to.equal(2);
    expect(matches(index, plus + '/+')).to.deep.equal([]);
    expect(index.delete(parent)).to.equal(true);
    expect(index.nodeCount).to.equal(n + 1);
    expect(index.delete(topic)).to.equal(true);
    expect(index.nodeCount).to.equal(1);
    index.clear();
    expect(index.size).to.equal(0);
    expect(index.nodeCount).to.equal(0);
  });

  it('churn: many sets and deletes leave no nodes behind', () => {
    const index = new RetainedIndex<number>();
    const topics = fc.sample(topicArb, { numRuns: 5000, seed: 7 });
    for (let round = 0; round < 3; round++) {
      topics.forEach((t, i) => index.set(t, i));
      for (let i = 0; i < 2000; i++) index.set(`fleet/truck${i}/gps`, i);
      expect(matches(index, 'fleet/+/gps')).to.have.length(2000);
      expect(matches(index, 'fleet/truck42/#')).to.deep.equal(['fleet/truck42/gps']);
      for (const [t] of [...index]) expect(index.delete(t)).to.equal(true);
      expect(index.size).to.equal(0);
      expect(index.nodeCount).to.equal(0);
      expect(matches(index, '#')).to.deep.equal([]);
    }
  });
});
