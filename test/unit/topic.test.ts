import { expect } from 'chai';
import fc from 'fast-check';
import {
  countLevels,
  parseSharedFilter,
  topicLevels,
  topicMatchesFilter,
  utf8Length,
  validateTopicFilter,
  validateTopicName,
} from '../../src/mqtt/topic.js';

const MAX = 65535;

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

const topicArb = fc
  .array(fc.constantFrom('a', 'b', '', '$x', 'ab'), { minLength: 1, maxLength: 5 })
  .map((levels) => levels.join('/'))
  .filter((t) => t.length > 0);

const filterArb = fc
  .tuple(fc.array(fc.constantFrom('a', 'b', '', '$x', '+', 'ab'), { minLength: 0, maxLength: 5 }), fc.boolean())
  .map(([levels, hash]) => (hash || levels.length === 0 ? [...levels, '#'] : levels).join('/'));

describe('topic', () => {
  describe('validateTopicName', () => {
    it('accepts ordinary names, empty levels and $ topics', () => {
      for (const t of ['a', 'a/b/c', '/', '/a', 'a/', 'a//b', '$SYS/broker/uptime', 'sport/tennis/player1', 'é/ü', ' ']) {
        expect(validateTopicName(t, MAX, 128), t).to.equal(null);
      }
    });

    it('[MQTT-4.7.3-1] rejects the empty topic name', () => {
      expect(validateTopicName('', MAX, 128)).to.be.a('string');
    });

    it('[MQTT-3.3.2-2] rejects wildcards in a topic name', () => {
      for (const t of ['+', '#', 'a/+', 'a/#', 'a+b', 'a#', 'sport/tennis/#']) {
        expect(validateTopicName(t, MAX, 128), t).to.match(/wildcard/);
      }
    });

    it('[MQTT-1.5.3-2] rejects U+0000', () => {
      expect(validateTopicName('a\u0000b', MAX, 128)).to.match(/U\+0000/);
    });

    it('[MQTT-1.5.3-1] rejects lone surrogates but accepts surrogate pairs', () => {
      expect(validateTopicName('a\ud800', MAX, 128)).to.match(/surrogate/);
      expect(validateTopicName('\udc00a', MAX, 128)).to.match(/surrogate/);
      expect(validateTopicName('\ud800\ud800', MAX, 128)).to.match(/surrogate/);
      expect(validateTopicName('a/\u{1f69a}', MAX, 128)).to.equal(null);
    });

    it('measures the length limit in UTF-8 bytes', () => {
      expect(validateTopicName('abcd', 4, 128)).to.equal(null);
      expect(validateTopicName('abcde', 4, 128)).to.match(/longer than 4/);
      expect(validateTopicName('éé', 4, 128)).to.equal(null); // 2 bytes each
      expect(validateTopicName('ééa', 4, 128)).to.match(/longer/);
      expect(validateTopicName('\u{1f69a}', 4, 128)).to.equal(null); // 4 bytes
      expect(validateTopicName('\u{1f69a}a', 4, 128)).to.match(/longer/);
      expect(validateTopicName('€', 2, 128)).to.match(/longer/); // 3 bytes
    });

    it('enforces the level limit', () => {
      expect(validateTopicName('a/b/c', MAX, 3)).to.equal(null);
      expect(validateTopicName('a/b/c/d', MAX, 3)).to.match(/levels/);
      expect(validateTopicName('///', MAX, 3)).to.match(/levels/);
    });
  });

  describe('validateTopicFilter', () => {
    it('accepts valid filters', () => {
      const valid = ['#', '+', 'a', 'a/#', 'a/+', '+/+', '+/#', '/+', '/#', 'a/+/b/#', 'sport/tennis/player1/#', '//', '$SYS/#', '+/a/+'];
      for (const f of valid) expect(validateTopicFilter(f, MAX, 128), f).to.equal(null);
    });

    it('[MQTT-4.7.3-1] rejects the empty filter', () => {
      expect(validateTopicFilter('', MAX, 128)).to.be.a('string');
    });

    it("[MQTT-4.7.1-2] '#' must be last and alone in its level", () => {
      for (const f of ['a#', '#a', '#/a', 'a/#/b', 'sport/tennis#', '##', 'a/#/']) {
        expect(validateTopicFilter(f, MAX, 128), f).to.match(/'#'/);
      }
    });

    it("[MQTT-4.7.1-3] '+' must occupy a whole level", () => {
      for (const f of ['a+', '+a', 'a/b+', 'sport+', '++', 'a/+b/c']) {
        expect(validateTopicFilter(f, MAX, 128), f).to.match(/'\+'/);
      }
    });

    it('[MQTT-1.5.3-2] rejects U+0000 and lone surrogates', () => {
      expect(validateTopicFilter('a/\u0000', MAX, 128)).to.match(/U\+0000/);
      expect(validateTopicFilter('a/\udfff', MAX, 128)).to.match(/surrogate/);
    });

    it('enforces length in bytes and the level limit', () => {
      expect(validateTopicFilter('éé', 3, 128)).to.match(/longer/);
      expect(validateTopicFilter('a/+/#', MAX, 3)).to.equal(null);
      expect(validateTopicFilter('a/+/b/#', MAX, 3)).to.match(/levels/);
    });

    it('[MQTT-4.8.2-1] [MQTT-4.8.2-2] validates shared subscriptions', () => {
      for (const f of ['$share/g/a', '$share/g/#', '$share/g/+/b', '$share/g//', '$share/group-1/a/b/c', '$share/g/$share/x']) {
        expect(validateTopicFilter(f, MAX, 128), f).to.equal(null);
      }
      const invalid = ['$share/g', '$share/', '$share//a', '$share/g+/a', '$share/g#/a', '$share/+/a', '$share/g/', '$share/g/a#', '$share/g/#/a'];
      for (const f of invalid) expect(validateTopicFilter(f, MAX, 128), f).to.be.a('string');
    });

    it('counts levels of a shared subscription on its filter part', () => {
      expect(validateTopicFilter('$share/g/a/b', MAX, 2)).to.equal(null);
      expect(validateTopicFilter('$share/g/a/b/c', MAX, 2)).to.match(/levels/);
    });

    it('treats $share as an ordinary filter when shared subscriptions are not allowed (MQTT 3.1.1)', () => {
      expect(validateTopicFilter('$share/g', MAX, 128, false)).to.equal(null);
      expect(validateTopicFilter('$share//a', MAX, 128, false)).to.equal(null);
      expect(validateTopicFilter('$share/g+/a', MAX, 128, false)).to.match(/'\+'/);
    });

    it('agrees with the naive rules on generated filters', () => {
      const level = fc.constantFrom('a', '', '+', '#', 'a+', '#b', '$x');
      fc.assert(
        fc.property(fc.array(level, { minLength: 1, maxLength: 6 }), (levels) => {
          const f = levels.join('/');
          const ok =
            f.length > 0 &&
            levels.every((l, i) => (l.includes('+') ? l === '+' : true) && (l.includes('#') ? l === '#' && i === levels.length - 1 : true));
          expect(validateTopicFilter(f, MAX, 128) === null, f).to.equal(ok);
        }),
      );
    });
  });

  describe('parseSharedFilter', () => {
    it('splits group and filter', () => {
      expect(parseSharedFilter('$share/g/a/b')).to.deep.equal({ group: 'g', filter: 'a/b' });
      expect(parseSharedFilter('$share/consumers/#')).to.deep.equal({ group: 'consumers', filter: '#' });
      expect(parseSharedFilter('$share/g//')).to.deep.equal({ group: 'g', filter: '/' });
    });

    it('returns null for non-shared filters', () => {
      for (const f of ['a/b', '$SYS/#', '$share', '$sharex/g/a', 'share/g/a', '#']) expect(parseSharedFilter(f), f).to.equal(null);
    });
  });

  describe('topicMatchesFilter', () => {
    const cases: [string, string, boolean][] = [
      ['sport/tennis/player1/#', 'sport/tennis/player1', true],
      ['sport/tennis/player1/#', 'sport/tennis/player1/ranking', true],
      ['sport/tennis/player1/#', 'sport/tennis/player1/score/wimbledon', true],
      ['sport/#', 'sport', true],
      ['sport/tennis/+', 'sport/tennis/player1', true],
      ['sport/tennis/+', 'sport/tennis/player1/ranking', false],
      ['sport/+', 'sport', false],
      ['sport/+', 'sport/', true],
      ['+/+', '/finance', true],
      ['/+', '/finance', true],
      ['+', '/finance', false],
      ['#', 'a/b/c', true],
      ['#', '/', true],
      ['+/#', 'a', true],
      ['a/+/#', 'a', false],
      ['a/+/#', 'a/b', true],
      ['a//b', 'a//b', true],
      ['a/+/b', 'a//b', true],
      ['a/b', 'a/b/', false],
      ['a/b/', 'a/b', false],
      ['a', 'A', false],
      ['a/b', 'a/bc', false],
      ['a/bc', 'a/b', false],
      ['+/+/+', 'a/b', false],
    ];
    for (const [filter, topic, expected] of cases) {
      it(`${filter} ${expected ? 'matches' : 'does not match'} ${topic}`, () => {
        expect(topicMatchesFilter(filter, topic)).to.equal(expected);
        expect(naiveMatch(filter, topic)).to.equal(expected);
      });
    }

    it('[MQTT-4.7.2-1] $ topics are not matched by a leading wildcard', () => {
      expect(topicMatchesFilter('#', '$SYS/uptime')).to.equal(false);
      expect(topicMatchesFilter('+/uptime', '$SYS/uptime')).to.equal(false);
      expect(topicMatchesFilter('+', '$SYS')).to.equal(false);
      expect(topicMatchesFilter('$SYS/#', '$SYS/uptime')).to.equal(true);
      expect(topicMatchesFilter('$SYS/+', '$SYS/uptime')).to.equal(true);
      expect(topicMatchesFilter('$SYS/#', '$SYS')).to.equal(true);
      expect(topicMatchesFilter('a/#', 'a/$b')).to.equal(true);
      expect(topicMatchesFilter('a/+', 'a/$b')).to.equal(true);
    });

    it('agrees with the naive matcher (property)', () => {
      fc.assert(
        fc.property(filterArb, topicArb, (filter, topic) => {
          expect(topicMatchesFilter(filter, topic), `${filter} vs ${topic}`).to.equal(naiveMatch(filter, topic));
        }),
        { numRuns: 5000 },
      );
    });

    it('handles 65,000 levels without RangeError', () => {
      const n = 65000;
      const topic = Array.from({ length: n }, (_, i) => `l${i % 7}`).join('/');
      const plus = Array.from({ length: n }, () => '+').join('/');
      expect(topicMatchesFilter(topic, topic)).to.equal(true);
      expect(topicMatchesFilter(plus, topic)).to.equal(true);
      expect(topicMatchesFilter(plus + '/#', topic)).to.equal(true);
      expect(topicMatchesFilter(plus + '/+', topic)).to.equal(false);
      expect(topicMatchesFilter(topic.slice(0, topic.lastIndexOf('/') + 1) + '+', topic)).to.equal(true);
      expect(topicMatchesFilter(topic.slice(0, topic.lastIndexOf('/') + 1) + 'zz', topic)).to.equal(false);
      expect(validateTopicName(topic, 1 << 20, n)).to.equal(null);
      expect(validateTopicName(topic, 1 << 20, n - 1)).to.match(/levels/);
      expect(validateTopicFilter(plus + '/#', 1 << 20, n + 1)).to.equal(null);
    });
  });

  describe('helpers', () => {
    it('utf8Length counts bytes like Buffer.byteLength', () => {
      for (const s of ['', 'a', 'é', '€', '\u{1f69a}', 'aé€\u{1f69a}/x']) expect(utf8Length(s), s).to.equal(Buffer.byteLength(s, 'utf8'));
      expect(utf8Length('\ud800')).to.equal(-1);
    });

    it('countLevels and topicLevels treat empty levels as levels', () => {
      expect(countLevels('a')).to.equal(1);
      expect(countLevels('/')).to.equal(2);
      expect(countLevels('a//b')).to.equal(3);
      expect(topicLevels('/a/')).to.deep.equal(['', 'a', '']);
    });
  });
});
