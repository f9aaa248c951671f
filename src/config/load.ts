// Loads a TOML configuration file, interpolates ${ENV} references, validates it against the one
// schema and reports every problem as `FILE:LINE: key.path: what is wrong, what to do`.
import { readFileSync } from 'node:fs';
import { parse, TomlError } from 'smol-toml';
import type * as z from 'zod';
import { interpolateTree, type Env } from './env.js';
import { configSchema, schemaAt, shapeOf, showValue, type Config } from './schema.js';

export type { Config } from './schema.js';

export interface ConfigIssue {
  file: string;
  /** 1-based line in the file, when it can be located. */
  line: number | undefined;
  /** Dotted key path such as `listeners[0].port`; empty for file-level problems. */
  path: string;
  message: string;
}

export function formatConfigIssue(i: ConfigIssue): string {
  const where = i.line === undefined ? i.file : `${i.file}:${i.line}`;
  return i.path ? `${where}: ${i.path}: ${i.message}` : `${where}: ${i.message}`;
}

export class ConfigError extends Error {
  override readonly name = 'ConfigError';
  readonly code = 'CONFIG_INVALID';
  readonly issues: readonly ConfigIssue[];
  constructor(issues: readonly ConfigIssue[]) {
    super(issues.map(formatConfigIssue).join('\n'));
    this.issues = issues;
  }
}

export type ParseResult = { ok: true; config: Config } | { ok: false; issues: ConfigIssue[] };

/** The configuration used when no file is given: every key at its default. */
export function defaultConfig(): Config {
  return configSchema.parse({});
}

/** Parses and validates configuration text. `fileName` is only used in messages. */
export function parseConfigText(text: string, fileName: string, env: Env = process.env): ParseResult {
  let doc: unknown;
  try {
    doc = parse(text);
  } catch (e) {
    if (e instanceof TomlError) {
      const what = (e.message.split('\n')[0] ?? e.message).replace(/^Invalid TOML document:\s*/, '');
      return {
        ok: false,
        issues: [{ file: fileName, line: e.line, path: '', message: `TOML syntax error at column ${e.column}: ${what}` }],
      };
    }
    throw e;
  }

  const lines = locateKeys(text);
  const issues: ConfigIssue[] = [];
  const at = (path: readonly Seg[], message: string): ConfigIssue => ({
    file: fileName,
    line: lineOf(lines, path),
    path: formatPath(path),
    message,
  });

  const interpolated = interpolateTree(doc, env);
  const envPaths = new Set<string>();
  for (const i of interpolated.issues) {
    envPaths.add(pathKey(i.path));
    issues.push(at(i.path, i.message));
  }

  const result = configSchema.safeParse(interpolated.value, { reportInput: true });
  if (!result.success) {
    for (const zi of result.error.issues) {
      const path = zi.path.filter((s): s is Seg => typeof s === 'string' || typeof s === 'number');
      // A value whose interpolation failed was already reported; its follow-on error is noise.
      if (envPaths.has(pathKey(path))) continue;
      for (const [p, m] of describeIssue(zi, path)) issues.push(at(p, m));
    }
  }

  if (issues.length > 0) {
    // Stable sort: file order first, unlocated issues last.
    issues.sort((a, b) => (a.line ?? Infinity) - (b.line ?? Infinity));
    return { ok: false, issues };
  }
  if (!result.success) throw new Error('unreachable: validation failed without issues');
  return { ok: true, config: result.data };
}

/** Every problem in a configuration file; empty when it is valid. */
export function checkConfigFile(path: string, env: Env = process.env): ConfigIssue[] {
  const text = readConfigText(path);
  if (typeof text !== 'string') return [text];
  const r = parseConfigText(text, path, env);
  return r.ok ? [] : r.issues;
}

/** Loads and validates a configuration file; throws ConfigError listing every problem. */
export function loadConfigFile(path: string, env: Env = process.env): Config {
  const text = readConfigText(path);
  if (typeof text !== 'string') throw new ConfigError([text]);
  const r = parseConfigText(text, path, env);
  if (!r.ok) throw new ConfigError(r.issues);
  return r.config;
}

function readConfigText(path: string): string | ConfigIssue {
  try {
    return readFileSync(path, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const message =
      code === 'ENOENT'
        ? 'file not found: check the path, or run `convoy config defaults > FILE` to create one'
        : code === 'EACCES'
          ? 'permission denied: make the file readable by the user convoy runs as'
          : code === 'EISDIR'
            ? 'is a directory: give the path of a .toml file'
            : `cannot read the file: ${(e as Error).message}`;
    return { file: path, line: undefined, path: '', message };
  }
}

// --- zod issues → messages ---------------------------------------------------------------------

/** Turns one schema issue into one or more (path, message) pairs (one per unknown key). */
function describeIssue(zi: z.core.$ZodIssue, path: Seg[]): [Seg[], string][] {
  if (zi.code === 'unrecognized_keys') {
    const known = Object.keys(shapeOf(schemaAt(path) ?? configSchema) ?? {});
    const input = zi.input;
    return zi.keys.map((k) => [[...path, k], unknownKeyMessage(k, known, input?.[k])]);
  }
  if (zi.code === 'invalid_value') {
    const options = zi.values.filter((v): v is string => typeof v === 'string');
    const near = typeof zi.input === 'string' ? nearest(zi.input, options) : undefined;
    if (near !== undefined) {
      return [[path, `${showValue(zi.input)} is not allowed, did you mean "${near}"? (one of ${options.join(', ')})`]];
    }
  }
  if (zi.code === 'invalid_type' && zi.expected === 'object') {
    return [[path, `expected a table, got ${showValue(zi.input)}: write it as a [${formatPath(path)}] section`]];
  }
  if (zi.code === 'invalid_type' && zi.expected === 'array') {
    return [[path, `expected an array, got ${showValue(zi.input)}: write one [[${formatPath(path)}]] section per entry`]];
  }
  return [[path, zi.message]];
}

function unknownKeyMessage(key: string, known: string[], value: unknown): string {
  const what = isTable(value) ? 'unknown section' : 'unknown key';
  const near = nearest(key, known);
  if (near !== undefined) return `${what}, did you mean ${near}?`;
  if (known.length === 0) return `${what}: remove it`;
  return `${what}: remove it or use one of ${known.join(', ')}`;
}

function isTable(v: unknown): boolean {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Date);
}

// --- suggestions -------------------------------------------------------------------------------

/** Edit distance (insertions, deletions, substitutions) between two strings. */
export function levenshtein(a: string, b: string): number {
  if (a === b) return 0;
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      const sub = (prev[j - 1] ?? 0) + (a[i - 1] === b[j - 1] ? 0 : 1);
      cur.push(Math.min((prev[j] ?? 0) + 1, (cur[j - 1] ?? 0) + 1, sub));
    }
    prev = cur;
  }
  return prev[b.length] ?? 0;
}

/**
 * The candidate closest to `word`, if it is close enough to be a plausible typo. Case and
 * `-` vs `_` are ignored first, since `max-packet-size` is an obvious intent.
 */
export function nearest(word: string, candidates: readonly string[]): string | undefined {
  const norm = (s: string) => s.toLowerCase().replace(/-/g, '_');
  const w = norm(word);
  let best: string | undefined;
  let bestD = Infinity;
  for (const c of candidates) {
    const d = levenshtein(w, norm(c));
    if (d < bestD) {
      best = c;
      bestD = d;
    }
  }
  const limit = Math.max(2, Math.floor(word.length / 3));
  return bestD <= limit ? best : undefined;
}

// --- key paths and line numbers ----------------------------------------------------------------

export type Seg = string | number;

const BARE_KEY = /^[A-Za-z0-9_-]+$/;

/** `listeners[0].port`, with non-bare keys quoted as in TOML. */
export function formatPath(path: readonly Seg[]): string {
  let out = '';
  for (const s of path) {
    if (typeof s === 'number') out += `[${s}]`;
    else {
      const k = BARE_KEY.test(s) ? s : JSON.stringify(s);
      out += out ? `.${k}` : k;
    }
  }
  return out;
}

function pathKey(path: readonly Seg[]): string {
  return JSON.stringify(path);
}

/** The line defining `path`, or of its nearest defined ancestor (a value inside an inline table). */
export function lineOf(index: ReadonlyMap<string, number>, path: readonly Seg[]): number | undefined {
  for (let n = path.length; n > 0; n--) {
    const line = index.get(pathKey(path.slice(0, n)));
    if (line !== undefined) return line;
  }
  return undefined;
}

/**
 * Maps every key path defined in TOML text to the 1-based line that defines it: `[table]` and
 * `[[array]]` headers (array elements get their index: ["listeners", 1]) and `key = value` lines,
 * including dotted keys. A line scanner, not a parser: it is only run on text that smol-toml
 * already accepted, and it is good enough for hand-written files.
 */
export function locateKeys(text: string): Map<string, number> {
  const found = new Map<string, number>();
  const arrayCounts = new Map<string, number>();
  const record = (p: Seg[], line: number) => {
    const k = pathKey(p);
    if (!found.has(k)) found.set(k, line);
  };
  // Header segments that name an array of tables refer to its latest element.
  const resolve = (segs: readonly string[]): Seg[] => {
    const out: Seg[] = [];
    for (const s of segs) {
      out.push(s);
      const n = arrayCounts.get(pathKey(out));
      if (n !== undefined) out.push(n - 1);
    }
    return out;
  };

  let table: Seg[] = [];
  let openString: '"""' | "'''" | undefined;
  let depth = 0; // open [ and { of a value that spans lines
  const lines = text.split(/\r?\n/);
  for (let n = 0; n < lines.length; n++) {
    const raw = lines[n] ?? '';
    const lineNo = n + 1;
    if (openString) {
      if (raw.includes(openString)) openString = undefined;
      continue;
    }
    if (depth > 0) {
      depth += bracketDelta(raw);
      continue;
    }
    const line = raw.trimStart();
    if (line === '' || line.startsWith('#')) continue;

    if (line.startsWith('[[')) {
      const key = parseKey(line, 2);
      if (!key || key.segs.length === 0) continue;
      const parent = resolve(key.segs.slice(0, -1));
      const arr = [...parent, key.segs[key.segs.length - 1] ?? ''];
      const count = (arrayCounts.get(pathKey(arr)) ?? 0) + 1;
      arrayCounts.set(pathKey(arr), count);
      record(arr, lineNo);
      table = [...arr, count - 1];
      record(table, lineNo);
    } else if (line.startsWith('[')) {
      const key = parseKey(line, 1);
      if (!key) continue;
      table = resolve(key.segs);
      for (let i = 1; i <= table.length; i++) record(table.slice(0, i), lineNo);
    } else {
      const key = parseKey(line, 0);
      if (!key || line[key.end] !== '=') continue;
      for (let i = 1; i <= key.segs.length; i++) record([...table, ...key.segs.slice(0, i)], lineNo);
      const value = line.slice(key.end + 1).trimStart();
      for (const q of ['"""', "'''"] as const) {
        if (value.startsWith(q) && !value.slice(3).includes(q)) openString = q;
      }
      if (!openString && (value.startsWith('[') || value.startsWith('{'))) depth = Math.max(0, bracketDelta(value));
    }
  }
  return found;
}

/** Parses a (dotted, possibly quoted) key starting at `pos`; `end` is past trailing whitespace. */
function parseKey(s: string, pos: number): { segs: string[]; end: number } | undefined {
  const segs: string[] = [];
  let i = pos;
  const skipWs = () => {
    while (s[i] === ' ' || s[i] === '\t') i++;
  };
  for (;;) {
    skipWs();
    const c = s[i];
    if (c === '"') {
      let j = i + 1;
      while (j < s.length && s[j] !== '"') j += s[j] === '\\' ? 2 : 1;
      const literal = s.slice(i, j + 1);
      try {
        segs.push(JSON.parse(literal) as string);
      } catch {
        segs.push(literal.slice(1, -1));
      }
      i = j + 1;
    } else if (c === "'") {
      const j = s.indexOf("'", i + 1);
      if (j < 0) return undefined;
      segs.push(s.slice(i + 1, j));
      i = j + 1;
    } else {
      const m = /^[A-Za-z0-9_-]+/.exec(s.slice(i));
      if (!m) return undefined;
      segs.push(m[0]);
      i += m[0].length;
    }
    skipWs();
    if (s[i] !== '.') return { segs, end: i };
    i++;
  }
}

/** Net count of opened `[`/`{` minus closed `]`/`}` outside strings and comments. */
function bracketDelta(s: string): number {
  let d = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s[i];
    if (c === '#') break;
    if (c === '"') {
      i++;
      while (i < s.length && s[i] !== '"') i += s[i] === '\\' ? 2 : 1;
    } else if (c === "'") {
      const j = s.indexOf("'", i + 1);
      i = j < 0 ? s.length : j;
    } else if (c === '[' || c === '{') d++;
    else if (c === ']' || c === '}') d--;
  }
  return d;
}
