// `convoy passwd`: manages a password file like mosquitto_passwd.
//
//   convoy passwd [-c] FILE USER              prompt for the password (twice, no echo, on a TTY)
//   convoy passwd [-c] -b FILE USER PASSWORD  batch mode for scripts
//   convoy passwd -D FILE USER                delete USER
//
// -c creates FILE (overwriting an existing one) with only USER in it. Without -c, FILE must exist
// and USER is added or its line replaced in place; other lines and comments are kept. The file is
// replaced atomically with mode 0600. When stdin is not a terminal the password is its first line
// (read once, no confirmation). Exit codes: 0 done, 1 failed, 2 usage error.
import { existsSync, readFileSync } from 'node:fs';
import type { CliIo } from './config.js';
import { processIo } from './config.js';
import { hashPassword, type ScryptParams } from '../security/passwords.js';
import { checkUserName, removeUserFromText, setUserInText, writeFileAtomic } from '../security/password-file.js';

export const PASSWD_USAGE = [
  'Usage: convoy passwd [-c] FILE USER',
  '       convoy passwd [-c] -b FILE USER PASSWORD',
  '       convoy passwd -D FILE USER',
].join('\n') + '\n';

/** The parts of a stdin stream the prompt uses (process.stdin, or a fake in tests). */
export interface PromptInput {
  isTTY?: boolean;
  setRawMode?: (raw: boolean) => unknown;
  setEncoding(enc: BufferEncoding): unknown;
  on(event: 'data', f: (chunk: string) => void): unknown;
  on(event: 'end', f: () => void): unknown;
  removeListener(event: 'data', f: (chunk: string) => void): unknown;
  removeListener(event: 'end', f: () => void): unknown;
  resume(): unknown;
  pause(): unknown;
}

export interface PasswdDeps {
  input?: PromptInput;
  /** Where prompts go (stderr, so stdout stays clean). */
  prompt?: (text: string) => void;
  /** scrypt cost; the documented default when absent. */
  scryptParams?: ScryptParams;
}

export interface PasswdArgs {
  mode: 'set' | 'delete';
  create: boolean;
  batch: boolean;
  file: string;
  user: string;
  password?: string;
}

/** Parses passwd arguments (flags first, as mosquitto_passwd); a string is a usage error. */
export function parsePasswdArgs(args: readonly string[]): PasswdArgs | string {
  let create = false;
  let batch = false;
  let del = false;
  let i = 0;
  for (; i < args.length; i++) {
    const a = args[i] ?? '';
    if (a === '--') {
      i++;
      break;
    }
    if (!a.startsWith('-') || a === '-') break;
    if (a === '-c') create = true;
    else if (a === '-b') batch = true;
    else if (a === '-D') del = true;
    else return `unknown option "${a}"`;
  }
  const rest = args.slice(i);
  if (del && (create || batch)) return '-D cannot be combined with -c or -b';
  const want = batch ? 3 : 2;
  if (rest.length < want) return batch ? 'needs FILE USER PASSWORD' : 'needs FILE USER';
  if (rest.length > want) return `unexpected argument "${rest[want]}"${batch ? '' : ' (use -b to give the password on the command line)'}`;
  const [file = '', user = '', password] = rest;
  if (file === '') return 'FILE is empty';
  const out: PasswdArgs = { mode: del ? 'delete' : 'set', create, batch, file, user };
  if (password !== undefined) out.password = password;
  return out;
}

/**
 * Reads one line from a terminal without echoing it (raw mode). Backspace edits, Enter ends,
 * Ctrl-C and Ctrl-D (on an empty line) reject.
 */
export function readHiddenLine(input: PromptInput, prompt: (t: string) => void, text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    let value = '';
    const finish = (err: Error | null): void => {
      input.removeListener('data', onData);
      input.removeListener('end', onEnd);
      input.setRawMode?.(false);
      input.pause();
      prompt('\n');
      if (err) reject(err);
      else resolve(value);
    };
    const onEnd = (): void => finish(new Error('input ended before the password was entered'));
    const onData = (chunk: string): void => {
      for (const ch of chunk) {
        if (ch === '\r' || ch === '\n') return finish(null);
        if (ch === '\u0003') return finish(new Error('interrupted'));
        if (ch === '\u0004') {
          if (value === '') return finish(new Error('input ended before the password was entered'));
          continue;
        }
        if (ch === '\u007f' || ch === '\b') value = [...value].slice(0, -1).join('');
        else if (ch >= ' ') value += ch;
      }
    };
    prompt(text);
    input.setEncoding('utf8');
    input.setRawMode?.(true);
    input.on('data', onData);
    input.on('end', onEnd);
    input.resume();
  });
}

/** Reads the first line of a non-terminal input (a pipe or file). */
export function readFirstLine(input: PromptInput): Promise<string> {
  return new Promise((resolve, reject) => {
    let buf = '';
    const done = (err: Error | null): void => {
      input.removeListener('data', onData);
      input.removeListener('end', onEnd);
      input.pause();
      if (err) return reject(err);
      const nl = buf.indexOf('\n');
      resolve((nl === -1 ? buf : buf.slice(0, nl)).replace(/\r$/, ''));
    };
    const onData = (chunk: string): void => {
      buf += chunk;
      if (buf.includes('\n')) done(null);
    };
    const onEnd = (): void => (buf === '' ? done(new Error('no password on standard input')) : done(null));
    input.setEncoding('utf8');
    input.on('data', onData);
    input.on('end', onEnd);
    input.resume();
  });
}

async function askPassword(deps: PasswdDeps): Promise<string> {
  const input = deps.input ?? process.stdin;
  const prompt = deps.prompt ?? ((t: string) => void process.stderr.write(t));
  if (!input.isTTY) return readFirstLine(input);
  const first = await readHiddenLine(input, prompt, 'Password: ');
  const second = await readHiddenLine(input, prompt, 'Reenter password: ');
  if (first !== second) throw new Error('passwords do not match');
  return first;
}

function readExisting(file: string): string {
  return readFileSync(file, 'utf8');
}

/** Returns the exit code: 0 done, 1 failed, 2 usage error. */
export async function passwdCommand(args: readonly string[], io: CliIo = processIo, deps: PasswdDeps = {}): Promise<number> {
  const parsed = parsePasswdArgs(args);
  if (typeof parsed === 'string') {
    io.stderr(`convoy passwd: ${parsed}\n${PASSWD_USAGE}`);
    return 2;
  }
  const { file, user } = parsed;
  const badUser = checkUserName(user);
  if (badUser !== null) {
    io.stderr(`convoy passwd: ${badUser}\n`);
    return 1;
  }
  try {
    if (parsed.mode === 'delete') {
      if (!existsSync(file)) {
        io.stderr(`convoy passwd: ${file} does not exist\n`);
        return 1;
      }
      const text = removeUserFromText(readExisting(file), user);
      if (text === null) {
        io.stderr(`convoy passwd: user "${user}" is not in ${file}\n`);
        return 1;
      }
      writeFileAtomic(file, text);
      return 0;
    }
    if (!parsed.create && !existsSync(file)) {
      io.stderr(`convoy passwd: ${file} does not exist; use -c to create it\n`);
      return 1;
    }
    const password = parsed.batch ? (parsed.password ?? '') : await askPassword(deps);
    if (password === '') {
      io.stderr('convoy passwd: the password is empty\n');
      return 1;
    }
    const encoded = await hashPassword(password, deps.scryptParams);
    const before = parsed.create ? '' : readExisting(file);
    writeFileAtomic(file, setUserInText(before, user, encoded));
    return 0;
  } catch (e) {
    io.stderr(`convoy passwd: ${e instanceof Error ? e.message : String(e)}\n`);
    return 1;
  }
}
