// Topic names and topic filters (MQTT 3.1.1 §4.7, MQTT 5 §4.7 and §4.8.2).
//
// Everything here is a plain loop over char codes: no recursion (a topic may have 65,000 levels)
// and, on the matching path, no substrings or arrays.

const SLASH = 0x2f; // '/'
const PLUS = 0x2b; // '+'
const HASH = 0x23; // '#'
const DOLLAR = 0x24; // '$'

const SHARE_PREFIX = '$share/';

/**
 * Returns the UTF-8 byte length of `s`, or -1 when it holds a lone surrogate (such a string has
 * no UTF-8 encoding) [MQTT-1.5.3-1] (MQTT 5: [MQTT-1.5.4-1]).
 */
export function utf8Length(s: string): number {
  let bytes = 0;
  const n = s.length;
  for (let i = 0; i < n; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) bytes += 1;
    else if (c < 0x800) bytes += 2;
    else if (c >= 0xd800 && c <= 0xdbff) {
      const d = i + 1 < n ? s.charCodeAt(i + 1) : 0;
      if (d < 0xdc00 || d > 0xdfff) return -1;
      bytes += 4;
      i++;
    } else if (c >= 0xdc00 && c <= 0xdfff) return -1;
    else bytes += 3;
  }
  return bytes;
}

/** Number of levels in a topic or filter: one more than the number of '/' (`''` has one level). */
export function countLevels(s: string, start = 0): number {
  let levels = 1;
  for (let i = s.indexOf('/', start); i !== -1; i = s.indexOf('/', i + 1)) levels++;
  return levels;
}

/** Splits a topic into its levels. Allocates: for tests, tools and cold paths only. */
export function topicLevels(topic: string): string[] {
  return topic.split('/');
}

/** Checks the encoding-level rules shared by names and filters; null when fine. */
function checkString(s: string, what: string, maxLength: number): string | null {
  // Every UTF-16 unit encodes to at least one byte, so a long string fails before counting.
  if (s.length > maxLength) return `${what} longer than ${maxLength} bytes`;
  if (s.indexOf('\u0000') !== -1) return `${what} contains U+0000`; // [MQTT-1.5.3-2] (MQTT 5: [MQTT-1.5.4-2])
  const bytes = utf8Length(s);
  if (bytes < 0) return `${what} contains a lone UTF-16 surrogate`; // [MQTT-1.5.3-1] (MQTT 5: [MQTT-1.5.4-1])
  if (bytes > maxLength) return `${what} longer than ${maxLength} bytes`;
  return null;
}

/**
 * Validates a PUBLISH / Will topic name. Returns null when valid, else a short reason.
 * `maxLength` is in UTF-8 bytes; `maxLevels` bounds the number of '/'-separated levels.
 */
export function validateTopicName(topic: string, maxLength: number, maxLevels: number): string | null {
  if (topic.length === 0) return 'topic name is empty'; // [MQTT-4.7.3-1]
  const bad = checkString(topic, 'topic name', maxLength);
  if (bad !== null) return bad;
  // [MQTT-3.3.2-2] wildcards are not allowed in a topic name.
  if (topic.indexOf('+') !== -1 || topic.indexOf('#') !== -1) return 'topic name contains a wildcard (+ or #)';
  if (countLevels(topic) > maxLevels) return `topic name has more than ${maxLevels} levels`;
  return null;
}

/** Checks wildcard placement in `filter` from `start`; null when fine. */
function checkWildcards(filter: string, start: number): string | null {
  const n = filter.length;
  for (let i = start; i < n; i++) {
    const c = filter.charCodeAt(i);
    if (c !== PLUS && c !== HASH) continue;
    const alone = (i === start || filter.charCodeAt(i - 1) === SLASH) && (i + 1 === n || filter.charCodeAt(i + 1) === SLASH);
    if (c === PLUS) {
      if (!alone) return "'+' must occupy a whole level"; // [MQTT-4.7.1-3]
    } else if (!alone || i + 1 !== n) {
      return "'#' must be the last level and alone in it"; // [MQTT-4.7.1-2]
    }
  }
  return null;
}

/**
 * Validates a SUBSCRIBE / UNSUBSCRIBE topic filter, including MQTT 5 shared subscriptions
 * `$share/GROUP/FILTER` [MQTT-4.8.2-1] [MQTT-4.8.2-2]. The broker passes `allowShared = true` for every
 * protocol version: like Mosquitto, a 3.1.1 client's `$share/...` subscription is a shared one, so
 * 3.1.1 workers can share a queue too. `false` treats it as an ordinary filter. Returns null when
 * valid, else a reason.
 */
export function validateTopicFilter(
  filter: string,
  maxLength: number,
  maxLevels: number,
  allowShared = true,
): string | null {
  if (filter.length === 0) return 'topic filter is empty'; // [MQTT-4.7.3-1]
  const bad = checkString(filter, 'topic filter', maxLength);
  if (bad !== null) return bad;
  let start = 0;
  if (allowShared && filter.startsWith(SHARE_PREFIX)) {
    const slash = filter.indexOf('/', SHARE_PREFIX.length);
    if (slash === -1) return 'shared subscription has no topic filter'; // [MQTT-4.8.2-2]
    if (slash === SHARE_PREFIX.length) return 'shared subscription has an empty group name'; // [MQTT-4.8.2-1]
    for (let i = SHARE_PREFIX.length; i < slash; i++) {
      const c = filter.charCodeAt(i);
      // [MQTT-4.8.2-2] ShareName must not contain '/', '+' or '#' ('/' ends it by construction).
      if (c === PLUS || c === HASH) return 'shared subscription group name contains a wildcard';
    }
    start = slash + 1;
    if (start === filter.length) return 'shared subscription has an empty topic filter';
  }
  const wild = checkWildcards(filter, start);
  if (wild !== null) return wild;
  if (countLevels(filter, start) > maxLevels) return `topic filter has more than ${maxLevels} levels`;
  return null;
}

/** Splits `$share/GROUP/FILTER`; null when `filter` is not a shared subscription. Assumes validated. */
export function parseSharedFilter(filter: string): { group: string; filter: string } | null {
  if (!filter.startsWith(SHARE_PREFIX)) return null;
  const slash = filter.indexOf('/', SHARE_PREFIX.length);
  if (slash === -1) return null;
  return { group: filter.slice(SHARE_PREFIX.length, slash), filter: filter.slice(slash + 1) };
}

/** True when `filter` contains '+' or '#'. */
export function hasWildcard(filter: string): boolean {
  return filter.indexOf('+') !== -1 || filter.indexOf('#') !== -1;
}

/**
 * True when `topic` (a valid topic name) matches `filter` (a valid, non-shared topic filter).
 * `#` also matches the parent level (`a/#` matches `a`) [MQTT-4.7.1-2]; a topic starting with '$'
 * is not matched by a filter whose first level is a wildcard [MQTT-4.7.2-1].
 */
export function topicMatchesFilter(filter: string, topic: string): boolean {
  const fc0 = filter.charCodeAt(0);
  if (topic.charCodeAt(0) === DOLLAR && (fc0 === PLUS || fc0 === HASH)) return false;
  if (!hasWildcard(filter)) return filter === topic;
  const fn = filter.length;
  const tn = topic.length;
  let fi = 0;
  let ti = 0;
  while (true) {
    let fEnd = filter.indexOf('/', fi);
    if (fEnd === -1) fEnd = fn;
    let tEnd = topic.indexOf('/', ti);
    if (tEnd === -1) tEnd = tn;
    const flen = fEnd - fi;
    const first = filter.charCodeAt(fi);
    if (flen === 1 && first === HASH) return true;
    if (!(flen === 1 && first === PLUS)) {
      if (flen !== tEnd - ti) return false;
      for (let k = 0; k < flen; k++) {
        if (filter.charCodeAt(fi + k) !== topic.charCodeAt(ti + k)) return false;
      }
    }
    const fLast = fEnd === fn;
    const tLast = tEnd === tn;
    if (tLast) {
      // Topic used up: match if the filter is too, or only "/#" remains (parent-level match).
      return fLast || (fEnd + 2 === fn && filter.charCodeAt(fEnd + 1) === HASH);
    }
    if (fLast) return false;
    fi = fEnd + 1;
    ti = tEnd + 1;
  }
}
