// ACL file in Mosquitto's syntax, and the decisions the broker asks for.
//
//   # comment (a line whose first non-blank character is '#')
//   topic read public/#              rules before the first `user` line: clients without a user name
//   user alice                       rules that follow apply to user "alice" (rest of the line)
//   topic readwrite truck/alice/#
//   topic deny truck/alice/secret    deny wins over any grant
//   pattern write devices/%u/%c/#    patterns apply to every client; %u user name, %c client id
//
// ACCESS is read, write, readwrite or deny; without one a rule is readwrite (as Mosquitto).
// Decisions: deny by default — a topic is allowed only if a rule for this client grants it and no
// deny rule applying to this client matches it; an empty ACL denies everything. A filter starting
// with a wildcard does not match '$' topics (MQTT §4.7.2): grant "$SYS/#" explicitly.
//
// Subscribing to FILTER is allowed only when everything FILTER can match is readable: one
// read-granting rule's filter must cover FILTER (every topic FILTER matches, that rule matches)
// and no deny rule may overlap it (no topic matched by both). Coverage by a union of several
// grants is not considered: such a subscription is refused (conservative), subscribe narrower.
//
// Pattern safety: %u and %c are substituted with the client's values. If a value contains '+',
// '#' or '/' it could widen the pattern (user "a/+/b", client id "#"), so:
//   - a read/write/readwrite pattern with such a value grants nothing for that client;
//   - a deny pattern with such a value denies more, never less: from the first level holding the
//     unsafe value, the rest of the filter becomes '#'.
// Patterns using %u grant nothing to clients without a user name (deny patterns then likewise
// widen from the %u level on).
import { readFileSync } from 'node:fs';
import type { Authorizer, ClientIdentity } from './types.js';
import { parseSharedFilter, topicMatchesFilter, validateTopicFilter } from '../mqtt/topic.js';

export type AclAccess = 'read' | 'write' | 'readwrite' | 'deny';

export interface AclRule {
  access: AclAccess;
  filter: string;
  /** Where it was written, for logs. */
  line: number;
}

export class AclError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'AclError';
  }
}

const MAX_FILTER_BYTES = 65535;
const MAX_FILTER_LEVELS = 65535;
const ACCESS = new Set<string>(['read', 'write', 'readwrite', 'deny']);

/** A rule after substitution: ready to match. */
interface Compiled {
  read: string[];
  write: string[];
  deny: string[];
}

const RULE_CACHE_SIZE = 1024;
const HAS_WILD_OR_SLASH = /[+#/]/;

/**
 * Substitutes %u and %c in a pattern's filter. Returns null when the pattern must not grant:
 * a value is missing (no user name) or contains '+', '#' or '/'. With `forDeny`, instead returns
 * the filter truncated to '#' from the first level with such a value (denies at least as much).
 */
export function substitutePattern(filter: string, who: ClientIdentity, forDeny: boolean): string | null {
  if (!filter.includes('%')) return filter;
  const levels = filter.split('/');
  const out: string[] = [];
  for (const level of levels) {
    let unsafe = false;
    const value = level.replace(/%([uc])/g, (_m, k: string) => {
      const v = k === 'u' ? who.username : who.clientId;
      if (v === undefined || v === '' || HAS_WILD_OR_SLASH.test(v)) {
        unsafe = true;
        return '';
      }
      return v;
    });
    if (unsafe) {
      if (!forDeny) return null;
      out.push('#');
      return out.join('/');
    }
    out.push(value);
  }
  return out.join('/');
}

/** True when every topic `sub` matches is matched by `grant` (both valid, non-shared filters). */
export function filterCovers(grant: string, sub: string): boolean {
  const g = grant.split('/');
  const s = sub.split('/');
  for (let i = 0; ; i++) {
    const gl = g[i];
    const sl = s[i];
    if (sl === undefined) {
      // `sub` ends here: `grant` must end too, or continue with only "/#" (parent-level match).
      return gl === undefined || (gl === '#' && i === g.length - 1);
    }
    if (gl === undefined) return false;
    // A wildcard in the first level never matches '$' topics; a literal '$' first level in `sub` does.
    const dollarLiteral = i === 0 && sl.startsWith('$');
    if (gl === '#') return !dollarLiteral;
    if (sl === '#') return false;
    if (gl === '+') {
      if (dollarLiteral) return false;
      continue;
    }
    if (sl === '+' || sl !== gl) return false;
  }
}

/** True when some topic is matched by both filters (both valid, non-shared). */
export function filtersOverlap(a: string, b: string): boolean {
  const x = a.split('/');
  const y = b.split('/');
  for (let i = 0; ; i++) {
    const xl = x[i];
    const yl = y[i];
    if (xl === undefined && yl === undefined) return true;
    if (xl === undefined) return yl === '#' && i === y.length - 1;
    if (yl === undefined) return xl === '#' && i === x.length - 1;
    const xw = xl === '+' || xl === '#';
    const yw = yl === '+' || yl === '#';
    if (i === 0 && ((xw && yl.startsWith('$')) || (yw && xl.startsWith('$')))) return false;
    if (xl === '#' || yl === '#') return true;
    if (xw || yw) continue;
    if (xl !== yl) return false;
  }
}

/**
 * A parsed ACL. Rules: `anonymous` (before the first `user` line), per user, and patterns for
 * every client. Immutable; a reload builds a new one.
 */
export class Acl implements Authorizer {
  /** Compiled rules per (user name, client id), most recently used last; bounded. */
  private readonly cache = new Map<string, Compiled>();

  constructor(
    readonly anonymous: readonly AclRule[],
    readonly users: ReadonlyMap<string, readonly AclRule[]>,
    readonly patterns: readonly AclRule[],
  ) {}

  get ruleCount(): number {
    let n = this.anonymous.length + this.patterns.length;
    for (const r of this.users.values()) n += r.length;
    return n;
  }

  private rulesFor(who: ClientIdentity): Compiled {
    const key = `${who.username === undefined ? '-' : `+${who.username}`}\u0000${who.clientId}`;
    const hit = this.cache.get(key);
    if (hit) {
      this.cache.delete(key);
      this.cache.set(key, hit);
      return hit;
    }
    const c: Compiled = { read: [], write: [], deny: [] };
    const add = (access: AclAccess, filter: string): void => {
      if (access === 'deny') c.deny.push(filter);
      if (access === 'read' || access === 'readwrite') c.read.push(filter);
      if (access === 'write' || access === 'readwrite') c.write.push(filter);
    };
    const own = who.username === undefined ? this.anonymous : (this.users.get(who.username) ?? []);
    for (const r of own) add(r.access, r.filter);
    for (const r of this.patterns) {
      const f = substitutePattern(r.filter, who, r.access === 'deny');
      if (f !== null) add(r.access, f);
    }
    if (this.cache.size >= RULE_CACHE_SIZE) {
      const oldest = this.cache.keys().next();
      if (!oldest.done) this.cache.delete(oldest.value);
    }
    this.cache.set(key, c);
    return c;
  }

  private topicAllowed(grants: readonly string[], deny: readonly string[], topic: string): boolean {
    if (!grants.some((f) => topicMatchesFilter(f, topic))) return false;
    return !deny.some((f) => topicMatchesFilter(f, topic));
  }

  canPublish(who: ClientIdentity, topic: string): boolean {
    const r = this.rulesFor(who);
    return this.topicAllowed(r.write, r.deny, topic);
  }

  canReceive(who: ClientIdentity, topic: string): boolean {
    const r = this.rulesFor(who);
    return this.topicAllowed(r.read, r.deny, topic);
  }

  canSubscribe(who: ClientIdentity, filter: string): boolean {
    const plain = parseSharedFilter(filter)?.filter ?? filter;
    if (validateTopicFilter(plain, MAX_FILTER_BYTES, MAX_FILTER_LEVELS, false) !== null) return false;
    const r = this.rulesFor(who);
    if (!r.read.some((g) => filterCovers(g, plain))) return false;
    return !r.deny.some((d) => filtersOverlap(d, plain));
  }
}

/** Allows everything: the authorizer when no ACL file is configured. */
export const allowAll: Authorizer = {
  canPublish: () => true,
  canSubscribe: () => true,
  canReceive: () => true,
};

/** Parses ACL text. Throws AclError listing every bad line as `FILE:LINE: problem`. */
export function parseAcl(text: string, file: string): Acl {
  const anonymous: AclRule[] = [];
  const users = new Map<string, AclRule[]>();
  const patterns: AclRule[] = [];
  let current: AclRule[] = anonymous;
  const problems: string[] = [];
  text.split('\n').forEach((raw, i) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    const at = `${file}:${i + 1}`;
    const m = /^(\S+)(?:\s+(.*))?$/.exec(line);
    const keyword = m?.[1] ?? '';
    const rest = (m?.[2] ?? '').trim();
    if (keyword === 'user') {
      if (rest === '') {
        problems.push(`${at}: "user" needs a user name: user NAME`);
        return;
      }
      let list = users.get(rest);
      if (!list) users.set(rest, (list = []));
      current = list;
      return;
    }
    if (keyword !== 'topic' && keyword !== 'pattern') {
      problems.push(`${at}: unknown keyword "${keyword.slice(0, 50)}": expected user, topic or pattern`);
      return;
    }
    const am = /^(\S+)(?:\s+(.*))?$/.exec(rest);
    let access: AclAccess = 'readwrite';
    let filter = rest;
    if (am && ACCESS.has(am[1] ?? '') && am[2] !== undefined) {
      access = am[1] as AclAccess;
      filter = am[2].trim();
    } else if (am && ACCESS.has(am[1] ?? '')) {
      problems.push(`${at}: "${keyword} ${am[1]}" needs a topic filter: ${keyword} ${am[1]} FILTER`);
      return;
    }
    if (filter === '') {
      problems.push(`${at}: "${keyword}" needs a topic filter: ${keyword} [read|write|readwrite|deny] FILTER`);
      return;
    }
    // Validate patterns with the placeholders standing for a plain value.
    const probe = keyword === 'pattern' ? filter.replace(/%[uc]/g, 'x') : filter;
    const bad = validateTopicFilter(probe, MAX_FILTER_BYTES, MAX_FILTER_LEVELS, false);
    if (bad !== null) {
      problems.push(`${at}: invalid topic filter "${filter.slice(0, 200)}": ${bad}`);
      return;
    }
    if (filter.startsWith('$share/')) {
      problems.push(`${at}: "${filter.slice(0, 200)}": write the filter without $share/GROUP/ (shared subscriptions are checked against the plain filter)`);
      return;
    }
    const rule: AclRule = { access, filter, line: i + 1 };
    if (keyword === 'pattern') patterns.push(rule);
    else current.push(rule);
  });
  if (problems.length > 0) throw new AclError(problems.join('\n'));
  return new Acl(anonymous, users, patterns);
}

/** Reads and parses an ACL file; an unreadable file is an AclError too. */
export function loadAcl(path: string): Acl {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? String(e);
    throw new AclError(`${path}: cannot read the ACL file (${code})`);
  }
  return parseAcl(text, path);
}
