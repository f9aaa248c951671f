import { expect } from 'chai';
import fc from 'fast-check';
import { SubscriptionTree, type MatchResult, type SharedGroup, type Subscription } from '../../src/broker/subscriptions.js';

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

function sub(clientId: string, filter: string, extra: Partial<Subscription> = {}): Subscription {
  const m = /^\$share\/([^/]+)\//.exec(filter);
  return {
    clientId,
    filter,
    qos: 0,
    noLocal: false,
    retainAsPublished: false,
    retainHandling: 0,
    ...(m ? { shareGroup: m[1] } : {}),
    ...extra,
  };
}

function newResult(): MatchResult {
  return { direct: [], shared: [] };
}

/** Sorted "clientId|filter" of the direct matches. */
function directOf(tree: SubscriptionTree, topic: string): string[] {
  const out = newResult();
  tree.match(topic, out);
  return out.direct.map((s) => `${s.clientId}|${s.filter}`).sort();
}

function sharedOf(tree: SubscriptionTree, topic: string): SharedGroup[] {
  const out = newResult();
  tree.match(topic, out);
  return out.shared;
}

const topicArb = fc
  .array(fc.constantFrom('a', 'b', '', '$x'), { minLength: 1, maxLength: 5 })
  .map((levels) => levels.join('/'))
  .filter((t) => t.length > 0);

const filterArb = fc
  .tuple(fc.array(fc.constantFrom('a', 'b', '', '$x', '+'), { minLength: 0, maxLength: 4 }), fc.boolean())
  .map(([levels, hash]) => (hash || levels.length === 0 ? [...levels, '#'] : levels).join('/'));

describe('SubscriptionTree', () => {
  it('adds, replaces and removes by (clientId, filter)', () => {
    const tree = new SubscriptionTree();
    expect(tree.size).to.equal(0);
    expect(tree.add(sub('c1', 'a/b'))).to.equal(true);
    expect(tree.add(sub('c2', 'a/b'))).to.equal(true);
    expect(tree.add(sub('c1', 'a/+'))).to.equal(true);
    expect(tree.size).to.equal(3);
    const replacement = sub('c1', 'a/b', { qos: 2 });
    expect(tree.add(replacement)).to.equal(false);
    expect(tree.size).to.equal(3);
    const out = newResult();
    tree.match('a/b', out);
    expect(out.direct.filter((s) => s.clientId === 'c1' && s.filter === 'a/b')).to.deep.equal([replacement]);
    expect(tree.remove('c1', 'a/b')).to.equal(replacement);
    expect(tree.remove('c1', 'a/b')).to.equal(undefined);
    expect(tree.remove('c3', 'a/+')).to.equal(undefined);
    expect(tree.remove('c1', 'x/y/z')).to.equal(undefined);
    expect(tree.size).to.equal(2);
    expect(directOf(tree, 'a/b')).to.deep.equal(['c1|a/+', 'c2|a/b']);
  });

  it('bumps generation on every change and not on a no-op remove', () => {
    const tree = new SubscriptionTree();
    const g0 = tree.generation;
    tree.add(sub('c', 'a'));
    expect(tree.generation).to.be.greaterThan(g0);
    const g1 = tree.generation;
    tree.add(sub('c', 'a', { qos: 1 }));
    expect(tree.generation).to.be.greaterThan(g1);
    const g2 = tree.generation;
    tree.remove('c', 'b');
    tree.remove('other', 'a');
    expect(tree.generation).to.equal(g2);
    tree.remove('c', 'a');
    expect(tree.generation).to.be.greaterThan(g2);
  });

  it('matches literal, +, # and empty levels', () => {
    const tree = new SubscriptionTree();
    for (const f of ['a/b', 'a/+', 'a/#', '#', '+/b', 'a//b', '/a', '+', '/+', 'a/b/#', '+/+/+']) tree.add(sub('c', f));
    expect(directOf(tree, 'a/b')).to.deep.equal(['c|#', 'c|+/b', 'c|a/#', 'c|a/+', 'c|a/b', 'c|a/b/#']);
    expect(directOf(tree, 'a')).to.deep.equal(['c|#', 'c|+', 'c|a/#']);
    expect(directOf(tree, 'a//b')).to.deep.equal(['c|#', 'c|+/+/+', 'c|a/#', 'c|a//b']);
    expect(directOf(tree, '/a')).to.deep.equal(['c|#', 'c|/+', 'c|/a']);
    expect(directOf(tree, 'a/')).to.deep.equal(['c|#', 'c|a/#', 'c|a/+']);
    expect(directOf(tree, 'x/y/z/w')).to.deep.equal(['c|#']);
  });

  it("[MQTT-4.7.1-2] 'a/#' matches the parent level 'a'", () => {
    const tree = new SubscriptionTree();
    tree.add(sub('c', 'sport/tennis/player1/#'));
    expect(directOf(tree, 'sport/tennis/player1')).to.have.length(1);
    expect(directOf(tree, 'sport/tennis/player1/ranking')).to.have.length(1);
    expect(directOf(tree, 'sport/tennis')).to.have.length(0);
  });

  it('[MQTT-4.7.2-1] $ topics are not matched by a leading wildcard', () => {
    const tree = new SubscriptionTree();
    for (const f of ['#', '+/uptime', '+', '$SYS/#', '$SYS/+', '+/#']) tree.add(sub('c', f));
    expect(directOf(tree, '$SYS/uptime')).to.deep.equal(['c|$SYS/#', 'c|$SYS/+']);
    expect(directOf(tree, '$SYS')).to.deep.equal(['c|$SYS/#']);
    expect(directOf(tree, 'a/$SYS')).to.deep.equal(['c|#', 'c|+/#']);
  });

  it('returns one entry per matching filter, even for the same client', () => {
    const tree = new SubscriptionTree();
    tree.add(sub('c', 'a/+'));
    tree.add(sub('c', 'a/#'));
    tree.add(sub('c', '#'));
    expect(directOf(tree, 'a/b')).to.deep.equal(['c|#', 'c|a/#', 'c|a/+']);
  });

  it('clears and refills the caller-provided arrays', () => {
    const tree = new SubscriptionTree();
    tree.add(sub('c', 'a'));
    tree.add(sub('d', '$share/g/a'));
    const out = newResult();
    const { direct, shared } = out;
    tree.match('a', out);
    tree.match('a', out);
    expect(out.direct).to.equal(direct);
    expect(out.shared).to.equal(shared);
    expect(direct).to.have.length(1);
    expect(shared).to.have.length(1);
    tree.match('b', out);
    expect(direct).to.have.length(0);
    expect(shared).to.have.length(0);
  });

  describe('shared subscriptions', () => {
    it('[MQTT-4.8.2-2] groups $share/GROUP/FILTER members under one stable SharedGroup', () => {
      const tree = new SubscriptionTree();
      expect(tree.add(sub('c1', '$share/g/a/+'))).to.equal(true);
      expect(tree.add(sub('c2', '$share/g/a/+'))).to.equal(true);
      expect(tree.add(sub('c3', '$share/h/a/+'))).to.equal(true);
      expect(tree.add(sub('c1', 'a/+'))).to.equal(true);
      expect(tree.add(sub('c1', '$share/g/a/+', { qos: 1 }))).to.equal(false);
      expect(tree.size).to.equal(4);
      const groups = sharedOf(tree, 'a/b');
      expect(groups.map((g) => g.key).sort()).to.deep.equal(['g\u0000a/+', 'h\u0000a/+']);
      const g = groups.find((x) => x.group === 'g')!;
      expect(g.filter).to.equal('a/+');
      expect(g.cursor).to.equal(0);
      expect(g.members.map((m) => m.clientId).sort()).to.deep.equal(['c1', 'c2']);
      expect(g.members.find((m) => m.clientId === 'c1')!.qos).to.equal(1);
      expect(directOf(tree, 'a/b')).to.deep.equal(['c1|a/+']);

      g.cursor = 5;
      tree.add(sub('c4', '$share/g/a/+'));
      tree.remove('c2', '$share/g/a/+');
      const again = sharedOf(tree, 'a/c').find((x) => x.group === 'g')!;
      expect(again).to.equal(g);
      expect(again.cursor).to.equal(5);
      expect(again.members.map((m) => m.clientId).sort()).to.deep.equal(['c1', 'c4']);
    });

    it('removes a group when its last member leaves', () => {
      const tree = new SubscriptionTree();
      tree.add(sub('c1', '$share/g/a'));
      expect(tree.remove('c1', 'a')).to.equal(undefined);
      expect(tree.remove('c1', '$share/h/a')).to.equal(undefined);
      expect(tree.remove('c2', '$share/g/a')).to.equal(undefined);
      expect(tree.remove('c1', '$share/g/a')?.clientId).to.equal('c1');
      expect(sharedOf(tree, 'a')).to.have.length(0);
      expect(tree.size).to.equal(0);
      expect(tree.nodeCount).to.equal(0);
    });

    it('matches shared filters with the same wildcard and $ rules', () => {
      const tree = new SubscriptionTree();
      tree.add(sub('c1', '$share/g/#'));
      tree.add(sub('c1', '$share/g/$SYS/#'));
      expect(sharedOf(tree, 'x/y').map((g) => g.filter)).to.deep.equal(['#']);
      expect(sharedOf(tree, '$SYS/x').map((g) => g.filter)).to.deep.equal(['$SYS/#']);
    });

    it('keeps many members consistent (indexed lists)', () => {
      const tree = new SubscriptionTree();
      for (let i = 0; i < 100; i++) tree.add(sub(`c${i}`, '$share/g/t'));
      for (let i = 0; i < 100; i += 2) expect(tree.remove(`c${i}`, '$share/g/t')?.clientId).to.equal(`c${i}`);
      const g = sharedOf(tree, 't')[0]!;
      expect(g.members.map((m) => m.clientId).sort()).to.deep.equal(
        Array.from({ length: 50 }, (_, k) => `c${2 * k + 1}`).sort(),
      );
      for (let i = 1; i < 100; i += 2) expect(tree.add(sub(`c${i}`, '$share/g/t', { qos: 2 }))).to.equal(false);
      expect(g.members.every((m) => m.qos === 2)).to.equal(true);
      expect(tree.size).to.equal(50);
    });
  });

  it('agrees with a naive model over random add/remove sequences (property)', () => {
    const opArb = fc.record({
      add: fc.boolean(),
      client: fc.constantFrom('c1', 'c2', 'c3'),
      filter: filterArb,
      group: fc.option(fc.constantFrom('g1', 'g2'), { nil: undefined }),
      qos: fc.constantFrom<0 | 1 | 2>(0, 1, 2),
    });
    fc.assert(
      fc.property(fc.array(opArb, { maxLength: 60 }), fc.array(topicArb, { minLength: 1, maxLength: 8 }), (ops, topics) => {
        const tree = new SubscriptionTree();
        const model = new Map<string, Subscription>();
        for (const op of ops) {
          const full = op.group === undefined ? op.filter : `$share/${op.group}/${op.filter}`;
          const key = `${op.client}\u0000${full}`;
          if (op.add) {
            const s = sub(op.client, full, { qos: op.qos });
            expect(tree.add(s)).to.equal(!model.has(key));
            model.set(key, s);
          } else {
            expect(tree.remove(op.client, full)).to.equal(model.get(key));
            model.delete(key);
          }
          expect(tree.size).to.equal(model.size);
        }
        const out = newResult();
        for (const topic of topics) {
          tree.match(topic, out);
          const expectedDirect: string[] = [];
          const expectedShared = new Map<string, string[]>();
          for (const s of model.values()) {
            const inner = s.shareGroup === undefined ? s.filter : s.filter.slice(`$share/${s.shareGroup}/`.length);
            if (!naiveMatch(inner, topic)) continue;
            if (s.shareGroup === undefined) expectedDirect.push(`${s.clientId}|${s.filter}|${s.qos}`);
            else {
              const k = `${s.shareGroup}\u0000${inner}`;
              expectedShared.set(k, [...(expectedShared.get(k) ?? []), `${s.clientId}|${s.qos}`]);
            }
          }
          expect(out.direct.map((s) => `${s.clientId}|${s.filter}|${s.qos}`).sort(), topic).to.deep.equal(expectedDirect.sort());
          expect(out.shared.map((g) => g.key).sort(), topic).to.deep.equal([...expectedShared.keys()].sort());
          for (const g of out.shared) {
            expect(g.members.map((m) => `${m.clientId}|${m.qos}`).sort()).to.deep.equal(expectedShared.get(g.key)!.sort());
          }
        }
        for (const s of model.values()) expect(tree.remove(s.clientId, s.filter)).to.equal(s);
        expect(tree.size).to.equal(0);
        expect(tree.nodeCount).to.equal(0);
      }),
      { numRuns: 500 },
    );
  });

  it('handles 65,000-level filters and topics without RangeError', () => {
    const n = 65000;
    const levels = Array.from({ length: n }, (_, i) => `l${i % 5}`);
    const topic = levels.join('/');
    const plus = Array.from({ length: n }, () => '+').join('/');
    const subs: [string, string][] = [
      ['lit', topic],
      ['plus', plus],
      ['plushash', plus + '/#'],
      ['deep', levels.slice(0, n - 1).join('/') + '/#'],
      ['mixed', levels.map((l, i) => (i % 2 === 0 ? '+' : l)).join('/')],
      ['all', '#'],
      ['miss', plus + '/+'],
    ];
    const tree = new SubscriptionTree();
    for (const [c, f] of subs) tree.add(sub(c, f));
    expect(tree.nodeCount).to.be.greaterThan(3 * n);
    expect(directOf(tree, topic).map((s) => s.split('|')[0]).sort()).to.deep.equal(['all', 'deep', 'lit', 'mixed', 'plus', 'plushash']);
    expect(directOf(tree, levels.slice(0, n - 1).join('/'))).to.have.length(2); // 'all' and 'deep' via parent level
    for (const [c, f] of subs) expect(tree.remove(c, f)?.clientId).to.equal(c);
    expect(tree.size).to.equal(0);
    expect(tree.nodeCount).to.equal(0);
  });

  it('churn: many adds and removes leave no nodes behind', () => {
    const tree = new SubscriptionTree();
    const rnd = fc.sample(fc.tuple(fc.integer({ min: 0, max: 49 }), filterArb), { numRuns: 5000, seed: 42 });
    const live = new Map<string, [string, string]>();
    for (let round = 0; round < 3; round++) {
      for (const [c, f] of rnd) {
        tree.add(sub(`c${c}`, f));
        tree.add(sub(`c${c}`, `$share/g${c % 3}/${f}`));
        live.set(`c${c}\u0000${f}`, [`c${c}`, f]);
        live.set(`c${c}\u0000$share/g${c % 3}/${f}`, [`c${c}`, `$share/g${c % 3}/${f}`]);
      }
      // Wide fan-out: exercise the Map-backed child table and indexed subscriber lists.
      for (let i = 0; i < 300; i++) {
        tree.add(sub(`w${i % 20}`, `$wide/${i}/x`));
        tree.add(sub(`w${i}`, '$wide/+/x'));
        live.set(`w${i % 20}\u0000wide/${i}/x`, [`w${i % 20}`, `$wide/${i}/x`]);
        live.set(`w${i}\u0000wide/+/x`, [`w${i}`, '$wide/+/x']);
      }
      expect(tree.size).to.equal(live.size);
      expect(directOf(tree, '$wide/123/x')).to.have.length(301);
      for (const [c, f] of live.values()) expect(tree.remove(c, f), `${c} ${f}`).to.not.equal(undefined);
      live.clear();
      expect(tree.size).to.equal(0);
      expect(tree.nodeCount).to.equal(0);
      expect(directOf(tree, 'a/b')).to.deep.equal([]);
    }
  });
});
