import { expect } from 'chai';
import fc from 'fast-check';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AclError, allowAll, filterCovers, filtersOverlap, loadAcl, parseAcl, substitutePattern } from '../../src/security/acl.js';
import { topicMatchesFilter } from '../../src/mqtt/topic.js';
import type { ClientIdentity } from '../../src/security/types.js';

const who = (username: string | undefined, clientId = 'c1'): ClientIdentity => ({ clientId, username });

function parseErr(text: string): string {
  try {
    parseAcl(text, 'acl.conf');
  } catch (e) {
    expect(e).to.be.instanceOf(AclError);
    return (e as Error).message;
  }
  throw new Error('expected an AclError');
}

describe('acl: parsing', () => {
  it('reads user sections, topic and pattern rules, comments and blank lines', () => {
    const acl = parseAcl(
      [
        '# anonymous',
        'topic read public/#',
        '',
        'user alice',
        'topic readwrite truck/alice/#',
        '  # indented comment',
        'topic deny truck/alice/secret',
        'user bob smith',
        'topic write in/bob',
        'topic plain/readwrite/default',
        'pattern read devices/%u/%c/#',
      ].join('\n'),
      'acl.conf',
    );
    expect(acl.anonymous.map((r) => [r.access, r.filter])).to.deep.equal([['read', 'public/#']]);
    expect(acl.users.get('alice')!.map((r) => [r.access, r.filter, r.line])).to.deep.equal([
      ['readwrite', 'truck/alice/#', 5],
      ['deny', 'truck/alice/secret', 7],
    ]);
    expect(acl.users.get('bob smith')!.map((r) => [r.access, r.filter])).to.deep.equal([
      ['write', 'in/bob'],
      ['readwrite', 'plain/readwrite/default'],
    ]);
    expect(acl.patterns.map((r) => [r.access, r.filter])).to.deep.equal([['read', 'devices/%u/%c/#']]);
    expect(acl.ruleCount).to.equal(6);
  });

  it('a topic filter may contain spaces (the rest of the line)', () => {
    const acl = parseAcl('user a\ntopic read a b/c d\n', 'f');
    expect(acl.canReceive(who('a'), 'a b/c d')).to.equal(true);
  });

  it('merges repeated sections for the same user', () => {
    const acl = parseAcl('user a\ntopic read x\nuser b\ntopic read y\nuser a\ntopic read z\n', 'f');
    expect(acl.users.get('a')!.map((r) => r.filter)).to.deep.equal(['x', 'z']);
  });

  it('reports every bad line as FILE:LINE', () => {
    const msg = parseErr(['user', 'topic', 'topic read', 'topic read a/#/b', 'bogus x', 'pattern write +x', 'topic read $share/g/a', 'topic read ok/#'].join('\n'));
    const lines = msg.split('\n');
    expect(lines).to.have.length(7);
    expect(lines[0]).to.match(/^acl\.conf:1: "user" needs a user name/);
    expect(lines[1]).to.match(/^acl\.conf:2: "topic" needs a topic filter/);
    expect(lines[2]).to.match(/^acl\.conf:3: "topic read" needs a topic filter/);
    expect(lines[3]).to.match(/^acl\.conf:4: invalid topic filter "a\/#\/b": '#' must be the last level/);
    expect(lines[4]).to.match(/^acl\.conf:5: unknown keyword "bogus": expected user, topic or pattern/);
    expect(lines[5]).to.match(/^acl\.conf:6: invalid topic filter "\+x"/);
    expect(lines[6]).to.match(/^acl\.conf:7: .*without \$share/);
  });

  it('loadAcl reads a file; a missing file is an AclError', () => {
    const dir = mkdtempSync(join(tmpdir(), 'convoy-acl-'));
    try {
      const f = join(dir, 'acl');
      writeFileSync(f, 'user u\ntopic read a\n');
      expect(loadAcl(f).canReceive(who('u'), 'a')).to.equal(true);
      expect(() => loadAcl(join(dir, 'none'))).to.throw(AclError, /none: cannot read the ACL file \(ENOENT\)/);
      writeFileSync(f, 'user u\ntopic read a/#/b\n');
      expect(() => loadAcl(f)).to.throw(AclError, new RegExp(`${f.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:2:`));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('acl: decisions', () => {
  it('an empty ACL file denies everything', () => {
    for (const text of ['', '# only a comment\n\n']) {
      const acl = parseAcl(text, 'f');
      for (const w of [who(undefined), who('alice'), who('admin', 'admin')]) {
        expect(acl.canPublish(w, 'a')).to.equal(false);
        expect(acl.canReceive(w, 'a')).to.equal(false);
        expect(acl.canSubscribe(w, '#')).to.equal(false);
        expect(acl.canSubscribe(w, 'a')).to.equal(false);
      }
    }
  });

  it('deny by default; read, write and readwrite grant what they say', () => {
    const acl = parseAcl('user u\ntopic read r/#\ntopic write w/#\ntopic readwrite rw/#\n', 'f');
    const u = who('u');
    expect(acl.canReceive(u, 'r/1')).to.equal(true);
    expect(acl.canPublish(u, 'r/1')).to.equal(false);
    expect(acl.canPublish(u, 'w/1')).to.equal(true);
    expect(acl.canReceive(u, 'w/1')).to.equal(false);
    expect(acl.canSubscribe(u, 'w/#')).to.equal(false);
    expect(acl.canPublish(u, 'rw/1')).to.equal(true);
    expect(acl.canReceive(u, 'rw/1')).to.equal(true);
    expect(acl.canPublish(u, 'other')).to.equal(false);
    expect(acl.canReceive(u, 'other')).to.equal(false);
  });

  it('user rules apply to that user only; rules before the first user line to anonymous clients only', () => {
    const acl = parseAcl('topic read public/#\nuser alice\ntopic readwrite alice/#\n', 'f');
    expect(acl.canReceive(who(undefined), 'public/x')).to.equal(true);
    expect(acl.canReceive(who('alice'), 'public/x')).to.equal(false);
    expect(acl.canReceive(who('alice'), 'alice/x')).to.equal(true);
    expect(acl.canReceive(who('bob'), 'alice/x')).to.equal(false);
    expect(acl.canReceive(who(undefined), 'alice/x')).to.equal(false);
    // A client id equal to a user name gives nothing.
    expect(acl.canReceive(who(undefined, 'alice'), 'alice/x')).to.equal(false);
  });

  it('deny wins over any grant, for publish, receive and subscribe', () => {
    const acl = parseAcl('user u\ntopic readwrite a/#\ntopic deny a/secret/#\npattern deny a/%c\n', 'f');
    const u = who('u', 'dev');
    expect(acl.canPublish(u, 'a/x')).to.equal(true);
    expect(acl.canPublish(u, 'a/secret')).to.equal(false);
    expect(acl.canReceive(u, 'a/secret/k')).to.equal(false);
    expect(acl.canPublish(u, 'a/dev')).to.equal(false);
    expect(acl.canSubscribe(u, 'a/x/#')).to.equal(true);
    expect(acl.canSubscribe(u, 'a/#')).to.equal(false); // overlaps a/secret/#
    expect(acl.canSubscribe(u, 'a/+')).to.equal(false); // overlaps a/secret and a/dev
    expect(acl.canSubscribe(u, 'a/+/k')).to.equal(false); // overlaps a/secret/k
    expect(acl.canSubscribe(u, 'a/x/+')).to.equal(true);
  });

  it('deny in a user section and a grant from a pattern: deny still wins', () => {
    const acl = parseAcl('user u\ntopic deny d/u/private\npattern readwrite d/%u/#\n', 'f');
    expect(acl.canPublish(who('u'), 'd/u/x')).to.equal(true);
    expect(acl.canPublish(who('u'), 'd/u/private')).to.equal(false);
  });

  it('wildcard rules do not reach $ topics; explicit $SYS rules do', () => {
    const acl = parseAcl('user u\ntopic read #\nuser admin\ntopic read $SYS/#\n', 'f');
    expect(acl.canReceive(who('u'), '$SYS/broker/uptime')).to.equal(false);
    expect(acl.canSubscribe(who('u'), '$SYS/#')).to.equal(false);
    expect(acl.canSubscribe(who('u'), '#')).to.equal(true);
    expect(acl.canReceive(who('admin'), '$SYS/broker/uptime')).to.equal(true);
    expect(acl.canSubscribe(who('admin'), '$SYS/broker/+')).to.equal(true);
  });

  it('checks shared subscriptions against the plain filter', () => {
    const acl = parseAcl('user u\ntopic read jobs/#\n', 'f');
    expect(acl.canSubscribe(who('u'), '$share/workers/jobs/+')).to.equal(true);
    expect(acl.canSubscribe(who('u'), '$share/workers/#')).to.equal(false);
  });

  it('refuses an invalid filter', () => {
    const acl = parseAcl('user u\ntopic read #\n', 'f');
    expect(acl.canSubscribe(who('u'), 'a/#/b')).to.equal(false);
    expect(acl.canSubscribe(who('u'), '')).to.equal(false);
  });

  it('allowAll allows everything', () => {
    expect(allowAll.canPublish(who(undefined), 'x')).to.equal(true);
    expect(allowAll.canSubscribe(who(undefined), '#')).to.equal(true);
    expect(allowAll.canReceive(who(undefined), '$SYS/x')).to.equal(true);
  });
});

describe('acl: patterns and %u / %c injection', () => {
  const acl = parseAcl(
    [
      'pattern readwrite devices/%u/#',
      'pattern write telemetry/%c',
      'pattern read cmd/%u/%c/+',
      'pattern deny devices/%u/locked/#',
      'pattern deny blocked/%c/#',
    ].join('\n'),
    'f',
  );

  it('substitutes %u and %c for every client', () => {
    expect(acl.canPublish(who('truck7', 'gps'), 'devices/truck7/pos')).to.equal(true);
    expect(acl.canPublish(who('truck7', 'gps'), 'devices/truck8/pos')).to.equal(false);
    expect(acl.canPublish(who('truck7', 'gps'), 'telemetry/gps')).to.equal(true);
    expect(acl.canPublish(who('truck7', 'gps'), 'telemetry/other')).to.equal(false);
    expect(acl.canSubscribe(who('truck7', 'gps'), 'cmd/truck7/gps/+')).to.equal(true);
    expect(acl.canSubscribe(who('truck7', 'gps'), 'cmd/truck7/+/+')).to.equal(false);
    expect(acl.canPublish(who('truck7', 'gps'), 'devices/truck7/locked/x')).to.equal(false);
  });

  it('a user name "a/+/b" does not widen a grant', () => {
    const w = who('a/+/b', 'c');
    expect(acl.canPublish(w, 'devices/a/x/b/y')).to.equal(false);
    expect(acl.canPublish(w, 'devices/a/+/b/y')).to.equal(false);
    expect(acl.canSubscribe(w, 'devices/a/+/b/#')).to.equal(false);
    expect(acl.canSubscribe(w, 'cmd/a/+/b/c/+')).to.equal(false);
  });

  it('a client id "#" does not widen a grant', () => {
    const w = who('u', '#');
    expect(acl.canPublish(w, 'telemetry/anything')).to.equal(false);
    expect(acl.canPublish(w, 'telemetry/#')).to.equal(false);
    expect(acl.canSubscribe(w, 'cmd/u/#')).to.equal(false);
    // ...while the patterns that don't use %c still apply.
    expect(acl.canPublish(w, 'devices/u/x')).to.equal(true);
  });

  it('a user name "#" or "+" does not widen a grant', () => {
    for (const name of ['#', '+', 'x+', 'a#']) {
      expect(acl.canPublish(who(name), 'devices/other/x'), name).to.equal(false);
      expect(acl.canSubscribe(who(name), 'devices/#'), name).to.equal(false);
    }
  });

  it('an unsafe value widens a deny pattern instead of escaping it', () => {
    // blocked/%c/# with client id "x/y" denies all of blocked/#.
    const a2 = parseAcl('user u\ntopic readwrite blocked/#\npattern deny blocked/%c/#\n', 'f');
    expect(a2.canPublish(who('u', 'ok'), 'blocked/other')).to.equal(true);
    expect(a2.canPublish(who('u', 'ok'), 'blocked/ok/1')).to.equal(false);
    expect(a2.canPublish(who('u', 'x/y'), 'blocked/x/y/1')).to.equal(false);
    expect(a2.canPublish(who('u', 'x/y'), 'blocked/other')).to.equal(false);
    expect(a2.canPublish(who('u', '+'), 'blocked/z')).to.equal(false);
  });

  it('patterns with %u grant nothing to anonymous clients', () => {
    expect(acl.canPublish(who(undefined, 'c'), 'devices//x')).to.equal(false);
    expect(acl.canPublish(who(undefined, 'c'), 'telemetry/c')).to.equal(true);
  });

  it('substitutePattern', () => {
    expect(substitutePattern('a/%u/%c', who('u', 'c'), false)).to.equal('a/u/c');
    expect(substitutePattern('a/x%uy/b', who('u'), false)).to.equal('a/xuy/b');
    expect(substitutePattern('a/%u/b', who('a/b'), false)).to.equal(null);
    expect(substitutePattern('a/%u/b', who(''), false)).to.equal(null);
    expect(substitutePattern('a/%u/b', who(undefined), false)).to.equal(null);
    expect(substitutePattern('a/%u/b', who('x#'), true)).to.equal('a/#');
    expect(substitutePattern('%c/b', who('u', '+'), true)).to.equal('#');
    expect(substitutePattern('no/placeholders', who('+'), false)).to.equal('no/placeholders');
  });
});

describe('acl: filter subsumption', () => {
  const covers: Array<[string, string, boolean]> = [
    ['#', '#', true],
    ['#', 'a/b', true],
    ['#', 'a/+/#', true],
    ['a/#', 'a', true], // a/# matches the parent level
    ['a/#', 'a/#', true],
    ['a/#', 'a/+', true],
    ['a/#', 'a/b/c', true],
    ['a/#', 'b/#', false],
    ['a/#', '#', false],
    ['a/+', 'a/b', true],
    ['a/+', 'a/+', true],
    ['a/+', 'a/#', false], // a/# also matches a and a/b/c
    ['a/+', 'a', false],
    ['a/+', 'a/b/c', false],
    ['a/b', 'a/+', false],
    ['a/b', 'a/b', true],
    ['a/b', 'a/b/c', false],
    ['a/b/c', 'a/b', false],
    ['+/b', 'a/b', true],
    ['+/+', '+/b', true],
    ['+/b', '+/+', false],
    ['a/+/c', 'a/+/c', true],
    ['a/+/c', 'a/b/#', false],
    ['+', '$SYS', false], // wildcards do not match $ topics
    ['#', '$SYS/#', false],
    ['$SYS/#', '$SYS/a', true],
    ['+/#', '+/x', true],
    ['a//b', 'a//b', true],
    ['a/+/b', 'a//b', true],
  ];
  for (const [g, s, want] of covers) {
    it(`"${g}" ${want ? 'covers' : 'does not cover'} "${s}"`, () => {
      expect(filterCovers(g, s)).to.equal(want);
    });
  }

  const overlaps: Array<[string, string, boolean]> = [
    ['#', 'a', true],
    ['a/#', 'a', true],
    ['a', 'a/#', true],
    ['a/+', 'a', false],
    ['a/+', '+/b', true],
    ['a/b', 'a/c', false],
    ['a/+/c', 'a/b/+', true],
    ['a/+/c', 'a/b', false],
    ['a/secret/#', 'a/+', true],
    ['a/secret/#', 'a/x/#', false],
    ['#', '$SYS/#', false],
    ['+/x', '$SYS/x', false],
    ['$SYS/#', '$SYS/+', true],
  ];
  for (const [a, b, want] of overlaps) {
    it(`"${a}" and "${b}" ${want ? 'overlap' : 'do not overlap'}`, () => {
      expect(filtersOverlap(a, b)).to.equal(want);
      expect(filtersOverlap(b, a)).to.equal(want);
    });
  }

  // Property checks against brute force over a small universe of topics.
  const filterArb = fc
    .tuple(fc.array(fc.constantFrom('a', 'b', '$x', '', '+'), { minLength: 0, maxLength: 4 }), fc.boolean())
    .map(([l, hash]) => (hash || l.length === 0 ? [...l, '#'] : l).join('/'))
    .map((f) => (f === '' ? '#' : f));
  const universe: string[] = [];
  {
    const levels = ['a', 'b', '$x', '', 'c'];
    let frontier = [''];
    for (let depth = 1; depth <= 5; depth++) {
      const next: string[] = [];
      for (const p of frontier) for (const l of levels) next.push(depth === 1 ? l : `${p}/${l}`);
      universe.push(...next);
      frontier = next;
    }
  }

  it('filterCovers never claims coverage that brute force refutes (and finds it when filters are equal)', () => {
    fc.assert(
      fc.property(filterArb, filterArb, (g, s) => {
        if (filterCovers(g, s)) {
          for (const t of universe) if (topicMatchesFilter(s, t)) expect(topicMatchesFilter(g, t), `${g} ⊇ ${s} fails on ${t}`).to.equal(true);
        }
        expect(filterCovers(s, s)).to.equal(true);
      }),
      { numRuns: 200 },
    );
  });

  it('filtersOverlap agrees with brute force', () => {
    fc.assert(
      fc.property(filterArb, filterArb, (a, b) => {
        const brute = universe.some((t) => topicMatchesFilter(a, t) && topicMatchesFilter(b, t));
        expect(filtersOverlap(a, b), `${a} ∩ ${b}`).to.equal(brute);
      }),
      { numRuns: 200 },
    );
  });
});
