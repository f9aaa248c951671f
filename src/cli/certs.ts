// `convoy certs`: the local PKI (CA, server and client certificates, list, revoke, CRL).
import { readFileSync } from 'node:fs';
import type { CliIo } from './config.js';
import { processIo } from './config.js';
import { findCommand } from './help.js';
import { option, parseOptions, UsageError, type OptionSpec, type ParsedOptions } from './options.js';
import * as pki from '../security/pki.js';

const USAGE = `Usage: ${(findCommand('certs')?.usage ?? []).map((u) => `convoy ${u}`).join('\n       ')}\n`;

const SPECS: Record<string, OptionSpec> = {
  init: { values: ['--dir', '--cn', '--days', '--crl-days'], flags: ['--rsa'], positional: [0, 0] },
  server: { values: ['--dir', '--host', '--ip', '--dns', '--days'], flags: ['--rsa'], positional: [0, 0], repeatable: new Set(['--ip', '--dns']) },
  client: { values: ['--dir', '--days', '--csr', '--name'], flags: ['--rsa'], positional: [0, 1] },
  list: { values: ['--dir', '--warn-days'], flags: [], positional: [0, 0] },
  revoke: { values: ['--dir', '--crl-days'], flags: [], positional: [1, 1] },
  crl: { values: ['--dir', '--crl-days'], flags: [], positional: [0, 0] },
};

function intOption(p: ParsedOptions, name: string): number | undefined {
  const v = option(p, name);
  if (v === undefined) return undefined;
  if (!/^\d+$/.test(v)) throw new UsageError(`${name} needs a whole number of days, not "${v}"`);
  return Number(v);
}


const day = (iso: string | Date): string => (typeof iso === 'string' ? iso : iso.toISOString()).slice(0, 10);
const minute = (iso: string): string => `${iso.slice(0, 16).replace('T', ' ')}Z`;

/** Returns the exit code: 0 ok, 1 the operation failed, 2 usage error. */
export async function certsCommand(args: readonly string[], io: CliIo = processIo, now?: Date): Promise<number> {
  const [sub, ...rest] = args;
  if (sub === undefined) {
    io.stderr(`convoy certs: missing subcommand\n${USAGE}`);
    return 2;
  }
  const spec = SPECS[sub];
  if (!spec) {
    io.stderr(`convoy certs: unknown subcommand "${sub}"\n${USAGE}`);
    return 2;
  }
  let p: ParsedOptions;
  try {
    p = parseOptions(spec, rest);
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    io.stderr(`convoy certs ${sub}: ${e.message}\n${USAGE}`);
    return 2;
  }
  const dir = option(p, '--dir') ?? pki.DEFAULT_PKI_DIR;
  const algorithm: pki.KeyAlgorithm = p.flags.has('--rsa') ? 'rsa' : 'ec';
  const keyDesc = algorithm === 'rsa' ? `RSA ${pki.RSA_BITS}` : 'ECDSA P-256';
  const at = now === undefined ? {} : { now };
  try {
    const days = intOption(p, '--days');
    const crlDays = intOption(p, '--crl-days');
    const common = { algorithm, ...at, ...(days === undefined ? {} : { days }) };
    switch (sub) {
      case 'init': {
        const cn = option(p, '--cn');
        const r = await pki.initCa(dir, { ...common, ...(cn === undefined ? {} : { cn }), ...(crlDays === undefined ? {} : { crlDays }) });
        const paths = pki.pkiPaths(dir);
        io.stdout(
          [
            `created CA "${r.entry.cn}" (${keyDesc}), serial ${r.entry.serial}, expires ${day(r.entry.notAfter)}`,
            `  ${paths.caCert}  CA certificate: the trust anchor for clients and listeners (cafile)`,
            `  ${paths.caKey}  CA private key (mode 0600): keep it safe, it signs every certificate`,
            `  ${paths.crl}  revocation list for TLS listeners (crl)`,
            '',
          ].join('\n'),
        );
        return 0;
      }
      case 'server': {
        const host = option(p, '--host');
        if (host === undefined) throw new UsageError('--host NAME is required');
        const r = await pki.issueServer(dir, { ...common, host, dns: p.values.get('--dns') ?? [], ips: p.values.get('--ip') ?? [] });
        io.stdout(issuedText('server', r, keyDesc));
        return 0;
      }
      case 'client': {
        const csr = option(p, '--csr');
        const [name] = p.positional;
        if (csr !== undefined) {
          if (name !== undefined) throw new UsageError('give either NAME or --csr FILE (with --name to override its CN), not both');
          if (p.flags.has('--rsa')) throw new UsageError('--rsa does not apply to --csr: the request brings its own key');
          const override = option(p, '--name');
          const { algorithm: _ignored, ...csrOpts } = common;
          const r = await pki.signClientCsr(dir, readFileSync(csr), { ...csrOpts, ...(override === undefined ? {} : { name: override }) });
          io.stdout(issuedText('client', r, 'key from the request'));
          return 0;
        }
        if (option(p, '--name') !== undefined) throw new UsageError('--name only goes with --csr');
        if (name === undefined) throw new UsageError('missing NAME (or --csr FILE)');
        const r = await pki.issueClient(dir, { ...common, name });
        io.stdout(issuedText('client', r, keyDesc));
        return 0;
      }
      case 'list': {
        const warnDays = intOption(p, '--warn-days');
        io.stdout(listText(pki.listCerts(dir, now, warnDays)));
        return 0;
      }
      case 'revoke': {
        const target = p.positional[0] ?? '';
        const revoked = await pki.revoke(dir, target, { ...at, ...(crlDays === undefined ? {} : { crlDays }) });
        const list = pki.listCerts(dir, now).filter((e) => e.status === 'revoked').length;
        for (const e of revoked) io.stdout(`revoked ${e.kind} certificate "${e.cn}", serial ${e.serial}\n`);
        io.stdout(`${pki.pkiPaths(dir).crl} now lists ${list} revoked ${list === 1 ? 'certificate' : 'certificates'}: reload the broker (SIGHUP) to apply it\n`);
        return 0;
      }
      case 'crl': {
        const r = await pki.writeCrl(dir, { ...at, ...(crlDays === undefined ? {} : { crlDays }) });
        io.stdout(`${r.path}: CRL number ${r.number}, ${r.revoked} revoked, next update ${day(r.nextUpdate)}\n`);
        return 0;
      }
      default:
        throw new UsageError(`unknown subcommand "${sub}"`);
    }
  } catch (e) {
    if (e instanceof UsageError) {
      io.stderr(`convoy certs ${sub}: ${e.message}\n${USAGE}`);
      return 2;
    }
    if (e instanceof pki.PkiError) {
      io.stderr(`convoy certs ${sub}: ${e.message}\n`);
      return 1;
    }
    const err = e as NodeJS.ErrnoException;
    if (typeof err.code === 'string' && typeof err.path === 'string') {
      io.stderr(`convoy certs ${sub}: ${err.path}: ${err.message}\n`);
      return 1;
    }
    throw e;
  }
}

function issuedText(kind: string, r: pki.Issued, keyDesc: string): string {
  const lines = [`issued ${kind} certificate "${r.entry.cn}" (${keyDesc}), serial ${r.entry.serial}, expires ${day(r.entry.notAfter)}`];
  if (r.entry.san) lines.push(`  names: ${r.entry.san}`);
  lines.push(`  ${r.certPath}`);
  if (r.keyPath) lines.push(`  ${r.keyPath}  (mode 0600)`);
  return lines.join('\n') + '\n';
}

export function listText(certs: readonly pki.CertStatus[]): string {
  const rows = [['SERIAL', 'KIND', 'NAME', 'NOT AFTER', 'DAYS LEFT', 'STATUS']];
  for (const c of certs) rows.push([c.serial, c.kind, c.cn, minute(c.notAfter), String(c.daysLeft), c.status]);
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i] ?? 0))).join('  ')).join('\n') + '\n';
}
