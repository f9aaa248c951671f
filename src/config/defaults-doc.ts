// Renders the complete default configuration as commented TOML (`convoy config defaults`),
// generated from the schema so the documentation cannot drift from what is validated.
import type * as z from 'zod';
import { configSchema, constraintNote, descriptionOf, elementOf, shapeOf } from './schema.js';
import { defaultConfig } from './load.js';

const HEADER = [
  '# Convoy configuration: every key with its default value.',
  '# Missing keys and sections take these defaults, so a real file only needs what differs.',
  '# String values may use environment variables: ${NAME}, ${NAME:-default} (if unset or empty),',
  '# ${NAME-default} (if unset); numbers and booleans may too, as strings: port = "${PORT:-1883}".',
  '# Write $${ for a literal ${.',
];

export function renderDefaultsToml(): string {
  const out = [...HEADER];
  renderTable(configSchema, defaultConfig(), '', out);
  return out.join('\n') + '\n';
}

type Kind = 'value' | 'table' | 'array-of-tables';

function kindOf(s: z.ZodType): Kind {
  if (shapeOf(s)) return 'table';
  const el = elementOf(s);
  if (el && shapeOf(el)) return 'array-of-tables';
  return 'value';
}

function comment(s: z.ZodType, out: string[]): void {
  const desc = descriptionOf(s) ?? '';
  const note = constraintNote(s);
  const text = note ? `${desc} (${note})` : desc;
  for (const line of text.split('\n')) out.push(line ? `# ${line}` : '#');
}

// TOML requires a table's plain keys before its sub-tables, so render in two passes.
function renderTable(schema: z.ZodType, value: Record<string, unknown>, prefix: string, out: string[]): void {
  const shape = shapeOf(schema) ?? {};
  const entries = Object.entries(shape);
  for (const [k, s] of entries) {
    if (kindOf(s) !== 'value') continue;
    const v = value[k];
    out.push('');
    comment(s, out);
    out.push(v === undefined ? `# ${tomlKey(k)} = (not set by default)` : `${tomlKey(k)} = ${tomlValue(v)}`);
  }
  // Tables and arrays of tables may interleave freely: keep the schema's order.
  for (const [k, s] of entries) {
    const kind = kindOf(s);
    const name = prefix + tomlKey(k);
    if (kind === 'table') {
      out.push('');
      comment(s, out);
      out.push(`[${name}]`);
      renderTable(s, asRecord(value[k]), `${name}.`, out);
    } else if (kind === 'array-of-tables') {
      const items = asArray(value[k]);
      const el = elementOf(s);
      out.push('');
      comment(s, out);
      if (items.length === 0) out.push(`# (none by default; add [[${name}]] sections)`);
      for (const item of items) {
        out.push(`[[${name}]]`);
        if (el) renderTable(el, asRecord(item), `${name}.`, out);
      }
    }
  }
}

function asArray(v: unknown): unknown[] {
  return Array.isArray(v) ? (v as unknown[]) : [];
}

function asRecord(v: unknown): Record<string, unknown> {
  return typeof v === 'object' && v !== null ? (v as Record<string, unknown>) : {};
}

function tomlKey(k: string): string {
  return /^[A-Za-z0-9_-]+$/.test(k) ? k : tomlString(k);
}

/** A TOML basic string. `${` is escaped so that reading the output back does not interpolate. */
function tomlString(s: string): string {
  // JSON escapes are valid TOML escapes; DEL must be escaped in TOML but not in JSON.
  return JSON.stringify(s.replace(/\$\{/g, '$${')).replace(/\x7f/g, '\\u007f');
}

export function tomlValue(v: unknown): string {
  if (typeof v === 'string') return tomlString(v);
  if (typeof v === 'boolean') return String(v);
  if (typeof v === 'number') {
    if (Number.isInteger(v)) return String(v);
    if (Number.isNaN(v)) return 'nan';
    if (!Number.isFinite(v)) return v > 0 ? 'inf' : '-inf';
    return String(v);
  }
  if (Array.isArray(v)) return `[${v.map(tomlValue).join(', ')}]`;
  if (typeof v === 'object' && v !== null) {
    const parts = Object.entries(v).map(([k, x]) => `${tomlKey(k)} = ${tomlValue(x)}`);
    return parts.length ? `{ ${parts.join(', ')} }` : '{}';
  }
  throw new Error(`cannot render ${typeof v} as TOML`);
}
