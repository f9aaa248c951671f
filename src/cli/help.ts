// `convoy help [command]` and the usage text. Commands are data so adding one is one entry here.
import type { CliIo } from './config.js';

export interface CommandHelp {
  name: string;
  /** One line for the command list. */
  summary: string;
  /** Synopsis lines, without the leading "convoy ". */
  usage: string[];
  details?: string;
}

export const COMMANDS: readonly CommandHelp[] = [
  {
    name: 'run',
    summary: 'start the broker and gateway',
    usage: ['run [--config FILE]'],
    details: 'Without --config every setting takes its default (see `convoy config defaults`).',
  },
  {
    name: 'config',
    summary: 'check a configuration file or print the defaults',
    usage: ['config check FILE...', 'config defaults'],
    details: [
      'check     report every error as FILE:LINE: key: problem; exit 1 if there is any',
      'defaults  print the complete default configuration as commented TOML',
    ].join('\n'),
  },
  {
    name: 'passwd',
    summary: 'add, change or delete a user in a password file',
    usage: ['passwd [-c] FILE USER', 'passwd [-c] -b FILE USER PASSWORD', 'passwd -D FILE USER'],
    details: [
      '-c  create FILE (overwriting an existing one) with only USER in it',
      '-b  batch mode: the password is the last argument (it shows in the process list)',
      '-D  delete USER',
      '',
      'Without -b the password is asked twice without echo on a terminal, or read from the first',
      'line of standard input otherwise. Hashes are scrypt ($scrypt$ln=13,r=8,p=1$SALT$HASH); files',
      'from mosquitto_passwd ($7$ and $6$ lines) are read as they are. FILE is replaced atomically',
      'with mode 0600.',
    ].join('\n'),
  },
  {
    name: 'certs',
    summary: 'local PKI: CA, server and client certificates, list, revoke',
    usage: [
      'certs init [--cn NAME] [--days N] [--rsa] [--dir DIR]',
      'certs server --host NAME [--ip ADDR]... [--dns NAME]... [--days N] [--rsa] [--dir DIR]',
      'certs client NAME [--days N] [--rsa] [--dir DIR]',
      'certs client --csr FILE [--name NAME] [--days N] [--dir DIR]',
      'certs list [--warn-days N] [--dir DIR]',
      'certs revoke NAME|SERIAL [--dir DIR]',
      'certs crl [--crl-days N] [--dir DIR]',
    ],
    details: [
      'init    create a CA (ECDSA P-256, or RSA 3072 with --rsa; 3650 days) and an empty CRL',
      'server  the gateway\'s TLS certificate: CN and SAN --host, plus every --dns and --ip (825 days)',
      'client  a client certificate with CN NAME, or signed from a CSR once its signature verifies',
      'list    every certificate issued, with its expiry, days left and status',
      'revoke  revoke by CN or serial and rewrite the CRL (send SIGHUP to the broker to apply it)',
      'crl     re-sign the CRL: a listener refuses all clients once its next update (365 days) passes',
      '',
      'DIR (default ./pki) holds ca.crt, ca.key, crl.pem, server.crt, server.key, clients/NAME.crt,',
      'clients/NAME.key, issued/SERIAL.crt and index.json. Private keys are written with mode 0600.',
    ].join('\n'),
  },
  {
    name: 'keys',
    summary: 'signed orders: the gateway key pair and trusted HQ keys',
    usage: [
      'keys init [--force] [--dir DIR]',
      'keys show [--dir DIR]',
      'keys add NAME FILE [--force] [--dir DIR]',
      'keys list [--dir DIR]',
      'keys remove NAME [--dir DIR]',
      'keys sign --key FILE --gateway ID --topic TOPIC --seq N [--exp UNIX | --ttl S] [--envelope] [FILE]',
    ],
    details: [
      'init    create the gateway\'s Ed25519 key pair (DIR/gateway.key mode 0600, DIR/gateway.pub)',
      'show    print the gateway\'s public key (PEM) for HQ to trust; its key id goes to stderr',
      'add     trust the Ed25519 public key in FILE (PEM) as NAME: orders it signs are delivered',
      'list    the trusted HQ keys with their key ids',
      'remove  stop trusting NAME',
      'sign    HQ-side helper: sign an order (payload from FILE or stdin; --ttl default 300 s) and',
      '        print its MQTT 5 user properties (sig, kid, seq, exp, gw) or, with --envelope, the',
      '        3.1.1 envelope in base64',
      '',
      'DIR (default ./keys) holds gateway.key, gateway.pub and trusted/NAME.pem, all mode 0600.',
      'Set [uplink.signing] trusted_keys_dir = "DIR/trusted" and verify = true on the downlink',
      'routes to protect; reload the broker (SIGHUP) or restart it after add or remove.',
    ].join('\n'),
  },
  { name: 'help', summary: 'show help for a command', usage: ['help [COMMAND]'] },
  { name: 'version', summary: 'print the version', usage: ['version', '--version'] },
];

export function findCommand(name: string): CommandHelp | undefined {
  return COMMANDS.find((c) => c.name === name);
}

export function usageText(): string {
  const width = Math.max(...COMMANDS.map((c) => c.name.length));
  return [
    'Usage: convoy <command> [options]',
    '',
    'Commands:',
    ...COMMANDS.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`),
    '',
    'Run `convoy help <command>` for details.',
  ].join('\n');
}

export function commandHelpText(c: CommandHelp): string {
  const lines = [`Usage: ${c.usage.map((u) => `convoy ${u}`).join('\n       ')}`, '', c.summary];
  if (c.details) lines.push('', c.details);
  return lines.join('\n');
}

/** Returns the exit code: 0, or 2 for an unknown command. */
export function helpCommand(args: readonly string[], io: CliIo): number {
  const name = args[0];
  if (name === undefined) {
    io.stdout(usageText() + '\n');
    return 0;
  }
  const c = findCommand(name);
  if (!c) {
    io.stderr(`convoy: no help for unknown command "${name}"\n\n${usageText()}\n`);
    return 2;
  }
  io.stdout(commandHelpText(c) + '\n');
  return 0;
}
