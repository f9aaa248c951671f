#!/usr/bin/env node
// CLI entry: parses argv and dispatches to src/cli/<command>.ts, nothing else. Commands are
// imported lazily so `convoy --version` and `convoy help` start fast.
import type { CliIo } from './cli/config.js';

const io: CliIo = {
  stdout: (t) => void process.stdout.write(t),
  stderr: (t) => void process.stderr.write(t),
};

async function usage(): Promise<string> {
  const { usageText } = await import('./cli/help.js');
  return usageText();
}

/** Parses `run` options: --config FILE, --config=FILE, -c FILE. */
function parseRunArgs(args: readonly string[]): { configPath?: string } | string {
  let configPath: string | undefined;
  for (let i = 0; i < args.length; i++) {
    const a = args[i] ?? '';
    if (a === '--config' || a === '-c') {
      const v = args[++i];
      if (v === undefined || v === '') return `${a} needs a FILE`;
      configPath = v;
    } else if (a.startsWith('--config=')) {
      configPath = a.slice('--config='.length);
      if (configPath === '') return '--config needs a FILE';
    } else {
      return `unexpected argument "${a}"`;
    }
  }
  return configPath === undefined ? {} : { configPath };
}

async function main(argv: readonly string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (rest.includes('--help') || rest.includes('-h')) return (await import('./cli/help.js')).helpCommand([command ?? ''], io);
  switch (command) {
    case 'run': {
      const opts = parseRunArgs(rest);
      if (typeof opts === 'string') {
        io.stderr(`convoy run: ${opts}\nUsage: convoy run [--config FILE]\n`);
        return 2;
      }
      const { runCommand } = await import('./cli/run.js');
      await runCommand(opts);
      return 0;
    }
    case 'config':
      return (await import('./cli/config.js')).configCommand(rest, io);
    case 'passwd':
      return (await import('./cli/passwd.js')).passwdCommand(rest, io);
    case 'certs':
      return (await import('./cli/certs.js')).certsCommand(rest, io);
    case 'keys':
      return (await import('./cli/keys.js')).keysCommand(rest, io);
    case 'help':
      return (await import('./cli/help.js')).helpCommand(rest, io);
    case 'version':
    case '--version':
    case '-v':
      io.stdout(`convoy ${(await import('./version.js')).convoyVersion()}\n`);
      return 0;
    case '--help':
    case '-h':
      io.stdout((await usage()) + '\n');
      return 0;
    case undefined:
      io.stderr((await usage()) + '\n');
      return 2;
    default:
      io.stderr(`convoy: unknown command "${command}"\n\n${await usage()}\n`);
      return 2;
  }
}

try {
  process.exitCode = await main(process.argv.slice(2));
} catch (e) {
  // A ConfigError's message is already the list of FILE:LINE problems.
  // Errors about files the user wrote (config, password file, ACL) are printed without a stack.
  if (e instanceof Error && ['ConfigError', 'PasswordFileError', 'AclError'].includes(e.name)) io.stderr(`${e.message}\n`);
  else io.stderr(`convoy: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  process.exitCode = 1;
}
