import { expect } from 'chai';
import fc from 'fast-check';
import { OutgoingTopicAliases } from '../../src/bridge/topic-aliases.js';

/** What to send for a topic: an alias HQ knows (topic left out), a new one (topic and alias), or none. */
type AliasUse = { kind: 'known'; alias: number } | { kind: 'new'; alias: number } | { kind: 'none' };

/** aliasFor's packed answer, spelled out. */
function aliasUse(code: number): AliasUse {
  if (code > 0) return { kind: 'known', alias: code };
  if (code < 0) return { kind: 'new', alias: -code };
  return { kind: 'none' };
}

function use(a: OutgoingTopicAliases, topic: string): AliasUse {
  const b = Buffer.from(`xx${topic}yy`);
  return aliasUse(a.aliasFor(b, 2, b.length - 2));
}

describe('outgoing topic aliases (towards HQ, one connection)', () => {
  it('gives aliases 1, 2, ... in first-use order; a topic sent again uses its alias without its name', () => {
    const a = new OutgoingTopicAliases();
    a.reset(10);
    expect(use(a, 'fleet/gw1/gps')).to.deep.equal({ kind: 'new', alias: 1 });
    expect(use(a, 'fleet/gw1/obd')).to.deep.equal({ kind: 'new', alias: 2 });
    expect(use(a, 'fleet/gw1/gps')).to.deep.equal({ kind: 'known', alias: 1 });
    expect(use(a, 'fleet/gw1/obd')).to.deep.equal({ kind: 'known', alias: 2 });
    expect(a.size).to.equal(2);
  });

  it('never gives more than the maximum: later topics go with their name, earlier ones keep their alias', () => {
    const a = new OutgoingTopicAliases();
    a.reset(2);
    expect(use(a, 'a')).to.deep.equal({ kind: 'new', alias: 1 });
    expect(use(a, 'b')).to.deep.equal({ kind: 'new', alias: 2 });
    expect(use(a, 'c')).to.deep.equal({ kind: 'none' });
    expect(use(a, 'c')).to.deep.equal({ kind: 'none' });
    expect(use(a, 'a')).to.deep.equal({ kind: 'known', alias: 1 });
    expect(a.size).to.equal(2);
  });

  it('uses none with a maximum of 0 (HQ allows none, MQTT 3.1.1, or turned off), and none for an empty topic', () => {
    const a = new OutgoingTopicAliases();
    expect(use(a, 'a')).to.deep.equal({ kind: 'none' });
    a.reset(0);
    expect(use(a, 'a')).to.deep.equal({ kind: 'none' });
    a.reset(5);
    expect(use(a, '')).to.deep.equal({ kind: 'none' });
  });

  it('forgets every alias on reset (a new connection: HQ knows none of them)', () => {
    const a = new OutgoingTopicAliases();
    a.reset(4);
    use(a, 'a');
    use(a, 'b');
    a.reset(4);
    expect(use(a, 'b')).to.deep.equal({ kind: 'new', alias: 1 });
    expect(use(a, 'a')).to.deep.equal({ kind: 'new', alias: 2 });
  });

  it('maps every topic to one alias and no two topics to the same one, up to the maximum (property)', () => {
    fc.assert(fc.property(
      fc.array(fc.string({ unit: 'grapheme', minLength: 1, maxLength: 12 }), { maxLength: 300 }), fc.integer({ min: 0, max: 40 }),
      (topics, max) => {
        const a = new OutgoingTopicAliases();
        a.reset(max);
        const seen = new Map<string, number>();
        for (const t of topics) {
          const u = use(a, t);
          const known = seen.get(t);
          if (known !== undefined) {
            expect(u).to.deep.equal({ kind: 'known', alias: known });
          } else if (u.kind === 'new') {
            expect(u.alias).to.equal(seen.size + 1);
            seen.set(t, u.alias);
          } else {
            expect(u.kind).to.equal('none');
            expect(seen.size).to.equal(max);
          }
        }
        expect(a.size).to.equal(seen.size);
      },
    ), { numRuns: 200 });
  });
});
