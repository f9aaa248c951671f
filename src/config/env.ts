// Environment interpolation in configuration string values (never in keys).
//
//   ${NAME}           value of NAME; an error if NAME is not set (set but empty gives "")
//   ${NAME:-default}  value of NAME, or `default` if NAME is unset or empty
//   ${NAME-default}   value of NAME, or `default` only if NAME is unset
//   $${               a literal "${" (so "$${HOME}" stays "${HOME}")
//
// A "$" not followed by "{" is kept as is. Defaults are literal text up to the first "}"; there is
// no nesting. Interpolation happens after TOML parsing, so a value can never inject TOML syntax.

export type Env = Readonly<Record<string, string | undefined>>;

export interface Interpolated {
  value: string;
  /** Human-readable problems; empty when the value is fully resolved. */
  errors: string[];
}

export function interpolateEnv(input: string, env: Env): Interpolated {
  const errors: string[] = [];
  let out = '';
  let i = 0;
  while (i < input.length) {
    const dollar = input.indexOf('$', i);
    if (dollar < 0) {
      out += input.slice(i);
      break;
    }
    out += input.slice(i, dollar);
    if (input.startsWith('$${', dollar)) {
      out += '${';
      i = dollar + 3;
      continue;
    }
    if (input[dollar + 1] !== '{') {
      out += '$';
      i = dollar + 1;
      continue;
    }
    const close = input.indexOf('}', dollar + 2);
    if (close < 0) {
      errors.push(`unterminated "\${" at character ${dollar + 1}: close it with "}" or write "$\${" for a literal "\${"`);
      out += input.slice(dollar);
      break;
    }
    const body = input.slice(dollar + 2, close);
    i = close + 1;
    const r = resolve(body, env);
    if (typeof r === 'string') out += r;
    else errors.push(r.error);
  }
  return { value: out, errors };
}

const REFERENCE = /^([A-Za-z_][A-Za-z0-9_]*)(?:(:-|-)([\s\S]*))?$/;

function resolve(body: string, env: Env): string | { error: string } {
  const m = REFERENCE.exec(body);
  if (!m?.[1]) {
    return {
      error: `invalid variable reference "\${${body}}": write \${NAME} or \${NAME:-default}; names use letters, digits and "_" and do not start with a digit`,
    };
  }
  const name = m[1];
  const op = m[2];
  const fallback = m[3] ?? '';
  const v = env[name];
  if (op === ':-') return v === undefined || v === '' ? fallback : v;
  if (op === '-') return v ?? fallback;
  if (v === undefined) {
    return { error: `environment variable ${name} is not set: set it, or give a default with "\${${name}:-value}"` };
  }
  return v;
}

export interface TreeIssue {
  path: (string | number)[];
  message: string;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  if (typeof v !== 'object' || v === null) return false;
  const proto = Object.getPrototypeOf(v) as unknown;
  return proto === Object.prototype || proto === null;
}

/** Interpolates every string in a parsed document (plain objects and arrays); other values pass through. */
export function interpolateTree(value: unknown, env: Env): { value: unknown; issues: TreeIssue[] } {
  const issues: TreeIssue[] = [];
  const walk = (v: unknown, path: (string | number)[]): unknown => {
    if (typeof v === 'string') {
      const r = interpolateEnv(v, env);
      for (const message of r.errors) issues.push({ path, message });
      return r.value;
    }
    if (Array.isArray(v)) return v.map((x, i) => walk(x, [...path, i]));
    if (isPlainObject(v)) {
      const out: Record<string, unknown> = {};
      for (const [k, x] of Object.entries(v)) out[k] = walk(x, [...path, k]);
      return out;
    }
    return v;
  };
  return { value: walk(value, []), issues };
}
