// `convoy keys`: the keys of signed orders (layout: security/keys.ts, formats: security/signing.ts).
//
//   keys init [--force] [--dir DIR]      the gateway's own Ed25519 key pair (gateway.key, mode 0600)
//   keys show [--dir DIR]                the gateway's public key (PEM on stdout, for HQ to trust)
//   keys add NAME FILE [--dir DIR]       trust an HQ Ed25519 public key (PEM) as NAME
//   keys list [--dir DIR]                trusted HQ keys: name, key id, file
//   keys remove NAME [--dir DIR]         stop trusting NAME
//   keys sign --key FILE --gateway ID --topic TOPIC --seq N [--exp UNIX | --ttl S] [--envelope] [PAYLOAD_FILE]
//                                        HQ-side helper (tests, tooling): signs an order (payload
//                                        from the file or stdin) and prints the MQTT 5 user
//                                        properties (name=value lines) or, with --envelope, the
//                                        3.1.1 envelope in base64
//
// DIR defaults to ./keys; trusted keys live in DIR/trusted. After add/remove, reload the broker
// (SIGHUP) or restart it. Exit codes: 0 done, 1 failed, 2 usage error.
import { createPrivateKey } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { CliIo } from './config.js';
import { processIo } from './config.js';
import { findCommand } from './help.js';
import { option, parseOptions, UsageError, type OptionSpec, type ParsedOptions } from './options.js';
import * as keys from '../security/keys.js';
import { encodeEnvelope, signatureProperties, signOrder, SigningFormatError } from '../security/signing.js';

const USAGE = `Usage: ${(findCommand('keys')?.usage ?? ['keys ...']).map((u) => `convoy ${u}`).join('\n       ')}\n`;

const SPECS: Record<string, OptionSpec> = {
  init: { values: ['--dir'], flags: ['--force'], positional: [0, 0] },
  show: { values: ['--dir'], flags: [], positional: [0, 0] },
  add: { values: ['--dir'], flags: ['--force'], positional: [2, 2] },
  list: { values: ['--dir'], flags: [], positional: [0, 0] },
  remove: { values: ['--dir'], flags: [], positional: [1, 1] },
  sign: { values: ['--key', '--gateway', '--topic', '--seq', '--exp', '--ttl'], flags: ['--envelope'], positional: [0, 1] },
};

function wholeNumber(p: ParsedOptions, name: string): number | undefined {
  const v = option(p, name);
  if (v === undefined) return undefined;
  if (!/^\d{1,16}$/.test(v) || !Number.isSafeInteger(Number(v))) throw new UsageError(`${name} needs a whole number, not "${v}"`);
  return Number(v);
}

function required(p: ParsedOptions, name: string): string {
  const v = option(p, name);
  if (v === undefined) throw new UsageError(`${name} is required`);
  return v;
}

/** Returns the exit code: 0 ok, 1 the operation failed, 2 usage error. */
export function keysCommand(args: readonly string[], io: CliIo = processIo, nowMs: number = Date.now()): number {
  const [sub, ...rest] = args;
  if (sub === undefined) {
    io.stderr(`convoy keys: missing subcommand\n${USAGE}`);
    return 2;
  }
  const spec = SPECS[sub];
  if (!spec) {
    io.stderr(`convoy keys: unknown subcommand "${sub}"\n${USAGE}`);
    return 2;
  }
  try {
    const p = parseOptions(spec, rest);
    const dir = option(p, '--dir') ?? keys.DEFAULT_KEYS_DIR;
    const trustedDir = join(dir, keys.TRUSTED_DIR);
    switch (sub) {
      case 'init': {
        const k = keys.initGatewayKey(dir, { force: p.flags.has('--force') });
        io.stdout(
          [
            `created the gateway key pair (Ed25519), key id ${k.kid}`,
            `  ${join(dir, keys.GATEWAY_KEY_FILE)}  private key (mode 0600): never leaves the truck`,
            `  ${join(dir, keys.GATEWAY_PUB_FILE)}  public key: give it to HQ ("convoy keys show")`,
            '',
          ].join('\n'),
        );
        return 0;
      }
      case 'show': {
        const k = keys.loadGatewayKey(join(dir, keys.GATEWAY_KEY_FILE));
        io.stdout(k.publicPem);
        io.stderr(`key id ${k.kid}\n`);
        return 0;
      }
      case 'add': {
        const [name = '', file = ''] = p.positional;
        keys.checkKeyName(name);
        const k = keys.addTrustedKey(trustedDir, name, readFileSync(file, 'utf8'), { force: p.flags.has('--force') });
        io.stdout(`trusting "${k.name}" (Ed25519, key id ${k.kid}): ${k.file}\nreload the broker (SIGHUP) or restart it to apply\n`);
        return 0;
      }
      case 'list': {
        const set = keys.loadTrustedKeys(trustedDir);
        const rows = [['NAME', 'KEY ID', 'FILE'], ...set.keys.map((k) => [k.name, k.kid, k.file])];
        const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
        io.stdout(rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i] ?? 0))).join('  ')).join('\n') + '\n');
        for (const pr of set.problems) io.stderr(`${pr.file}: not used: ${pr.problem}\n`);
        return set.problems.length > 0 ? 1 : 0;
      }
      case 'remove': {
        const name = p.positional[0] ?? '';
        if (!keys.removeTrustedKey(trustedDir, name)) {
          io.stderr(`convoy keys remove: no trusted key named "${name}" in ${trustedDir}\n`);
          return 1;
        }
        io.stdout(`no longer trusting "${name}": reload the broker (SIGHUP) or restart it to apply\n`);
        return 0;
      }
      case 'sign': {
        const exp = wholeNumber(p, '--exp');
        const ttl = wholeNumber(p, '--ttl');
        if (exp !== undefined && ttl !== undefined) throw new UsageError('give --exp or --ttl, not both');
        const seq = wholeNumber(p, '--seq');
        if (seq === undefined) throw new UsageError('--seq is required');
        const keyFile = required(p, '--key');
        let privateKey;
        try {
          privateKey = createPrivateKey(readFileSync(keyFile, 'utf8'));
        } catch (err) {
          throw new keys.KeyFileError(`${keyFile}: not a PEM private key: ${(err as Error).message}`);
        }
        const file = p.positional[0];
        const payload = file === undefined || file === '-' ? readFileSync(0) : readFileSync(file);
        const order = signOrder({
          gatewayId: required(p, '--gateway'),
          topic: required(p, '--topic'),
          payload,
          seq,
          exp: exp ?? Math.floor(nowMs / 1000) + (ttl ?? 300),
          privateKey,
        });
        if (p.flags.has('--envelope')) io.stdout(encodeEnvelope(order).toString('base64') + '\n');
        else io.stdout(signatureProperties(order).map(([k, v]) => `${k}=${v}`).join('\n') + '\n');
        return 0;
      }
      default:
        throw new UsageError(`unknown subcommand "${sub}"`);
    }
  } catch (e) {
    if (e instanceof UsageError) {
      io.stderr(`convoy keys ${sub}: ${e.message}\n${USAGE}`);
      return 2;
    }
    if (e instanceof keys.KeyFileError || e instanceof SigningFormatError) {
      io.stderr(`convoy keys ${sub}: ${e.message}\n`);
      return 1;
    }
    const err = e as NodeJS.ErrnoException;
    if (typeof err.code === 'string' && typeof err.path === 'string') {
      io.stderr(`convoy keys ${sub}: ${err.path}: ${err.message}\n`);
      return 1;
    }
    throw e;
  }
}
