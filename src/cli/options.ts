// Option parsing shared by the subcommands that take `--name value`, `--name=value`, flags and
// positional arguments (certs, keys). Usage mistakes throw UsageError (exit code 2).

export class UsageError extends Error {}

export interface OptionSpec {
  /** Options taking a value. */
  values: readonly string[];
  flags: readonly string[];
  /** How many positional arguments: [min, max]. */
  positional: [number, number];
  /** Value options that may be given more than once (every value is kept). */
  repeatable?: ReadonlySet<string>;
}

export interface ParsedOptions {
  values: Map<string, string[]>;
  flags: Set<string>;
  positional: string[];
}

export function parseOptions(spec: OptionSpec, args: readonly string[]): ParsedOptions {
  const out: ParsedOptions = { values: new Map(), flags: new Set(), positional: [] };
  for (let i = 0; i < args.length; i++) {
    const a = args[i] ?? '';
    if (!a.startsWith('--')) {
      out.positional.push(a);
      continue;
    }
    const eq = a.indexOf('=');
    const name = eq === -1 ? a : a.slice(0, eq);
    if (spec.flags.includes(name)) {
      if (eq !== -1) throw new UsageError(`${name} takes no value`);
      out.flags.add(name);
    } else if (spec.values.includes(name)) {
      const v = eq === -1 ? args[++i] : a.slice(eq + 1);
      if (v === undefined || v === '') throw new UsageError(`${name} needs a value`);
      const prev = out.values.get(name);
      if (prev && !spec.repeatable?.has(name)) throw new UsageError(`${name} given twice`);
      out.values.set(name, [...(prev ?? []), v]);
    } else {
      throw new UsageError(`unknown option "${name}"`);
    }
  }
  const [min, max] = spec.positional;
  if (out.positional.length < min) throw new UsageError('missing argument');
  if (out.positional.length > max) throw new UsageError(`unexpected argument "${out.positional[max] ?? ''}"`);
  return out;
}

/** The (first) value of an option, if given. */
export function option(p: ParsedOptions, name: string): string | undefined {
  return p.values.get(name)?.[0];
}
