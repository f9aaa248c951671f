import { readFileSync } from 'node:fs';

let cached: string | undefined;

/** The version in package.json (compiled code lives in dist/src, two levels below it). */
export function convoyVersion(): string {
  if (cached === undefined) {
    const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version?: string };
    cached = pkg.version ?? 'unknown';
  }
  return cached;
}
