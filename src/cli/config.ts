// `convoy config check FILE...` and `convoy config defaults`.
import { renderDefaultsToml } from '../config/defaults-doc.js';
import type { Env } from '../config/env.js';
import { checkConfigFile, formatConfigIssue } from '../config/load.js';

/** Where a command writes; injectable so commands can be tested without spawning. */
export interface CliIo {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
}

export const processIo: CliIo = {
  stdout: (t) => void process.stdout.write(t),
  stderr: (t) => void process.stderr.write(t),
};

const USAGE = 'Usage: convoy config check FILE...\n       convoy config defaults\n';

/** Returns the exit code: 0 ok, 1 invalid configuration, 2 usage error. */
export function configCommand(args: readonly string[], io: CliIo = processIo, env: Env = process.env): number {
  const [sub, ...rest] = args;
  switch (sub) {
    case 'check': {
      if (rest.length === 0) {
        io.stderr(`convoy config check: missing FILE\n${USAGE}`);
        return 2;
      }
      let failed = false;
      for (const file of rest) {
        const issues = checkConfigFile(file, env);
        if (issues.length === 0) io.stdout(`${file}: ok\n`);
        else {
          failed = true;
          io.stderr(issues.map((i) => formatConfigIssue(i) + '\n').join(''));
          io.stderr(`${file}: ${issues.length} ${issues.length === 1 ? 'error' : 'errors'}\n`);
        }
      }
      return failed ? 1 : 0;
    }
    case 'defaults':
      if (rest.length > 0) {
        io.stderr(`convoy config defaults: unexpected argument "${rest[0]}"\n${USAGE}`);
        return 2;
      }
      io.stdout(renderDefaultsToml());
      return 0;
    case undefined:
      io.stderr(`convoy config: missing subcommand\n${USAGE}`);
      return 2;
    default:
      io.stderr(`convoy config: unknown subcommand "${sub}"\n${USAGE}`);
      return 2;
  }
}
