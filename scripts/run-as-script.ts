// Runs a script's main() when the file is the one node was started with (not when a test imports
// it), and exits with its code: 0 fine, 1 problems found, 2 the run itself failed.
import { pathToFileURL } from 'node:url';

export function runAsScript(moduleUrl: string, main: (argv: string[]) => Promise<number>): void {
  if (!process.argv[1] || moduleUrl !== pathToFileURL(process.argv[1]).href) return;
  main(process.argv.slice(2)).then((code) => process.exit(code), (err: unknown) => {
    console.error(err);
    process.exit(2);
  });
}
