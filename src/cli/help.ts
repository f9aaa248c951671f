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
