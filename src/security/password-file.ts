// The password file: one `user:hash` per line, as Mosquitto's, so an existing file migrates as is.
//
//   # comment (a line whose first non-blank character is '#')
//   alice:$scrypt$ln=13,r=8,p=1$...$...
//   bob:$7$101$...$...            (mosquitto_passwd)
//
// The user name is everything before the first ':' and the hash everything after it; whitespace
// around the hash and a trailing '\r' are ignored. A malformed line (no ':', empty user name,
// unknown or broken hash, a user defined twice) makes the whole file fail to load with FILE:LINE
// and what to do — never an empty or half-read user table. Updates are atomic: a temporary file
// in the same directory, written with mode 0600 and fsynced, renamed over the old one.
import { closeSync, fsyncSync, openSync, readFileSync, renameSync, rmSync, writeSync, fchmodSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { basename, dirname, join } from 'node:path';
import { parseHash, type ParsedHash } from './passwords.js';

export class PasswordFileError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'PasswordFileError';
  }
}

export interface PasswordEntry {
  hash: ParsedHash;
  /** 1-based line number in the file. */
  line: number;
}

/** Null when `user` can be stored in a password file, else why not. */
export function checkUserName(user: string): string | null {
  if (user.length === 0) return 'user name is empty';
  if (user.includes(':')) return 'user name contains ":"';
  for (let i = 0; i < user.length; i++) {
    const c = user.charCodeAt(i);
    if (c < 0x20 || c === 0x7f) return 'user name contains a control character';
  }
  if (user.trim() !== user) return 'user name starts or ends with white space';
  if (user.startsWith('#')) return 'user name starts with "#" (the line would be a comment)';
  if (Buffer.byteLength(user, 'utf8') > 65535) return 'user name is longer than 65535 bytes';
  return null;
}

/**
 * Parses a password file's text. Throws PasswordFileError listing every bad line as
 * `FILE:LINE: problem`; returns the users otherwise.
 */
export function parsePasswordFile(text: string, file: string): Map<string, PasswordEntry> {
  const users = new Map<string, PasswordEntry>();
  const problems: string[] = [];
  const lines = text.split('\n');
  lines.forEach((raw, i) => {
    const line = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
    const trimmed = line.trim();
    if (trimmed === '' || trimmed.startsWith('#')) return;
    const at = `${file}:${i + 1}`;
    const colon = line.indexOf(':');
    if (colon === -1) {
      problems.push(`${at}: expected "user:hash"; create entries with \`convoy passwd ${file} USER\``);
      return;
    }
    const user = line.slice(0, colon);
    const badUser = checkUserName(user);
    if (badUser !== null) {
      problems.push(`${at}: ${badUser}; fix or remove the line`);
      return;
    }
    const hash = parseHash(line.slice(colon + 1).trim());
    if (typeof hash === 'string') {
      problems.push(`${at}: user "${user}": ${hash}; set the password again with \`convoy passwd ${file} ${user}\``);
      return;
    }
    const prev = users.get(user);
    if (prev) {
      problems.push(`${at}: user "${user}" is already defined on line ${prev.line}; remove one of the lines`);
      return;
    }
    users.set(user, { hash, line: i + 1 });
  });
  if (problems.length > 0) throw new PasswordFileError(problems.join('\n'));
  return users;
}

/** Reads and parses a password file; a missing or unreadable file is a PasswordFileError too. */
export function loadPasswordFile(path: string): Map<string, PasswordEntry> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? String(e);
    throw new PasswordFileError(`${path}: cannot read the password file (${code}); create it with \`convoy passwd -c ${path} USER\``);
  }
  return parsePasswordFile(text, path);
}

/** Index of the line defining `user` in `lines`, or -1. Same rules as the parser. */
function findUserLine(lines: readonly string[], user: string): number {
  return lines.findIndex((raw) => {
    const line = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
    if (line.trim().startsWith('#')) return false;
    const colon = line.indexOf(':');
    return colon !== -1 && line.slice(0, colon) === user;
  });
}

/**
 * Returns `text` with `user`'s hash set to `encoded`: the existing line is replaced in place
 * (comments and other lines are kept), or a line is appended. Pure.
 */
export function setUserInText(text: string, user: string, encoded: string): string {
  const badUser = checkUserName(user);
  if (badUser !== null) throw new PasswordFileError(badUser);
  const lines = text === '' ? [] : text.split('\n');
  if (lines.length > 0 && lines[lines.length - 1] === '') lines.pop();
  const entry = `${user}:${encoded}`;
  const i = findUserLine(lines, user);
  if (i === -1) lines.push(entry);
  else lines[i] = entry;
  return lines.join('\n') + '\n';
}

/** Returns `text` without `user`'s line, or null when there is no such user. Pure. */
export function removeUserFromText(text: string, user: string): string | null {
  const lines = text.split('\n');
  const i = findUserLine(lines, user);
  if (i === -1) return null;
  lines.splice(i, 1);
  return lines.join('\n');
}

/** Writes `text` to `path` atomically (temp file + fsync + rename) with mode 0600. */
export function writeFileAtomic(path: string, text: string, mode = 0o600): void {
  const tmp = join(dirname(path), `.${basename(path)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  const fd = openSync(tmp, 'wx', mode);
  try {
    try {
      fchmodSync(fd, mode); // the umask may have cleared bits; never more than `mode` though
      writeSync(fd, text);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, path);
  } catch (e) {
    rmSync(tmp, { force: true });
    throw e;
  }
  try {
    const dfd = openSync(dirname(path), 'r');
    try {
      fsyncSync(dfd);
    } finally {
      closeSync(dfd);
    }
  } catch {
    // Directories cannot be fsynced on every platform; the rename is still atomic.
  }
}
