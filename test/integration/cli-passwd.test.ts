import { expect } from 'chai';
import { spawn, spawnSync } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parsePasswdArgs, readHiddenLine, type PromptInput } from '../../src/cli/passwd.js';
import { loadPasswordFile } from '../../src/security/password-file.js';
import { verifyPassword } from '../../src/security/passwords.js';
import { createLoginChecker } from '../../src/security/login.js';

// Compiled to dist/test/integration/, next to dist/src/.
const MAIN = fileURLToPath(new URL('../../src/main.js', import.meta.url));

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function convoy(args: string[]): Run {
  const r = spawnSync(process.execPath, [MAIN, ...args], { encoding: 'utf8', env: { PATH: process.env.PATH ?? '' }, timeout: 15000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Runs convoy with `input` piped to its stdin (not a TTY). */
function convoyWithInput(args: string[], input: string): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [MAIN, ...args], { env: { PATH: process.env.PATH ?? '' }, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => child.kill(), 15000);
    child.once('error', reject);
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
    child.stdin.end(input);
  });
}

const hasMosquittoPasswd = spawnSync('mosquitto_passwd', ['-h'], { encoding: 'utf8' }).error === undefined;

describe('cli: convoy passwd', () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'convoy-passwd-'));
  });
  after(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  it('-c -b creates the file with one scrypt line, mode 0600, silently', async () => {
    const f = join(dir, 'create.pw');
    const r = convoy(['passwd', '-c', '-b', f, 'alice', 'alice-pw']);
    expect(r).to.deep.include({ code: 0, stdout: '', stderr: '' });
    const text = readFileSync(f, 'utf8');
    expect(text).to.match(/^alice:\$scrypt\$ln=13,r=8,p=1\$[A-Za-z0-9+/]{22}\$[A-Za-z0-9+/]{43}\n$/);
    expect(statSync(f).mode & 0o777).to.equal(0o600);
    expect(await verifyPassword('alice-pw', loadPasswordFile(f).get('alice')!.hash)).to.equal(true);
  });

  it('-b adds a user and replaces an existing one in place, keeping comments', async () => {
    const f = join(dir, 'update.pw');
    writeFileSync(f, '# fleet users\nbob:$6$y6wxaLlr/jnygAMy$q9LR4/zoSEREblYpXi7lS6Cts71TSLIca23CxTr9G5tcezn3ojyZfweP1X0jrun43jRWVj/Nd+LeY0YHb78RlQ==\n# end\n', { mode: 0o644 });
    expect(convoy(['passwd', '-b', f, 'carol', 'c-pw']).code).to.equal(0);
    expect(convoy(['passwd', '-b', f, 'bob', 'new-bob']).code).to.equal(0);
    const lines = readFileSync(f, 'utf8').split('\n');
    expect(lines[0]).to.equal('# fleet users');
    expect(lines[1]).to.match(/^bob:\$scrypt\$/);
    expect(lines[2]).to.equal('# end');
    expect(lines[3]).to.match(/^carol:\$scrypt\$/);
    expect(statSync(f).mode & 0o777).to.equal(0o600);
    const users = loadPasswordFile(f);
    expect(await verifyPassword('new-bob', users.get('bob')!.hash)).to.equal(true);
    expect(await verifyPassword('c-pw', users.get('carol')!.hash)).to.equal(true);
  });

  it('-c overwrites an existing file', () => {
    const f = join(dir, 'overwrite.pw');
    writeFileSync(f, 'x:$6$abc$def\n');
    expect(convoy(['passwd', '-c', '-b', f, 'only', 'pw']).code).to.equal(0);
    expect([...loadPasswordFile(f).keys()]).to.deep.equal(['only']);
  });

  it('-D deletes a user; an unknown user or missing file is an error', () => {
    const f = join(dir, 'delete.pw');
    expect(convoy(['passwd', '-c', '-b', f, 'a', 'pw']).code).to.equal(0);
    expect(convoy(['passwd', '-b', f, 'b', 'pw']).code).to.equal(0);
    expect(convoy(['passwd', '-D', f, 'a'])).to.deep.include({ code: 0, stderr: '' });
    expect([...loadPasswordFile(f).keys()]).to.deep.equal(['b']);
    const r = convoy(['passwd', '-D', f, 'a']);
    expect(r.code).to.equal(1);
    expect(r.stderr).to.equal(`convoy passwd: user "a" is not in ${f}\n`);
    expect(convoy(['passwd', '-D', join(dir, 'none'), 'a']).code).to.equal(1);
  });

  it('without -c the file must exist', () => {
    const f = join(dir, 'absent.pw');
    const r = convoy(['passwd', '-b', f, 'a', 'pw']);
    expect(r.code).to.equal(1);
    expect(r.stderr).to.equal(`convoy passwd: ${f} does not exist; use -c to create it\n`);
    expect(existsSync(f)).to.equal(false);
  });

  it('refuses bad user names and empty passwords', () => {
    const f = join(dir, 'bad.pw');
    expect(convoy(['passwd', '-c', '-b', f, 'a:b', 'pw'])).to.deep.include({ code: 1, stderr: 'convoy passwd: user name contains ":"\n' });
    expect(convoy(['passwd', '-c', '-b', f, 'a', ''])).to.deep.include({ code: 1, stderr: 'convoy passwd: the password is empty\n' });
    expect(existsSync(f)).to.equal(false);
  });

  it('usage errors exit 2 with the usage', () => {
    for (const args of [[], ['f'], ['-b', 'f', 'u'], ['-x', 'f', 'u'], ['-D', '-c', 'f', 'u'], ['f', 'u', 'extra']]) {
      const r = convoy(['passwd', ...args]);
      expect(r.code, args.join(' ')).to.equal(2);
      expect(r.stderr).to.match(/^convoy passwd: .*\nUsage: convoy passwd \[-c\] FILE USER\n/);
    }
  });

  it('reads the password from the first line of a piped stdin', async () => {
    const f = join(dir, 'stdin.pw');
    const r = await convoyWithInput(['passwd', '-c', f, 'piped'], 'from-pipe\nignored\n');
    expect(r).to.deep.include({ code: 0, stdout: '' });
    expect(await verifyPassword('from-pipe', loadPasswordFile(f).get('piped')!.hash)).to.equal(true);
    const empty = await convoyWithInput(['passwd', '-c', join(dir, 'stdin2.pw'), 'piped'], '');
    expect(empty.code).to.equal(1);
    expect(empty.stderr).to.match(/no password on standard input/);
  });

  it('convoy help passwd describes it; convoy help lists it', () => {
    const r = convoy(['help', 'passwd']);
    expect(r.code).to.equal(0);
    expect(r.stdout).to.match(/^Usage: convoy passwd \[-c\] FILE USER\n {7}convoy passwd \[-c\] -b FILE USER PASSWORD\n {7}convoy passwd -D FILE USER\n/);
    expect(convoy(['help']).stdout).to.match(/\n {2}passwd +add, change or delete a user in a password file\n/);
  });

  (hasMosquittoPasswd ? it : it.skip)('migrates a mosquitto_passwd file as is: both kinds of lines log in', async () => {
    const f = join(dir, 'mosq.pw');
    expect(spawnSync('mosquitto_passwd', ['-b', '-c', f, 'old', 'old-pw']).status).to.equal(0);
    expect(convoy(['passwd', '-b', f, 'new', 'new-pw']).code).to.equal(0);
    const lc = createLoginChecker({ passwordFile: f, banAfterFailures: 0, banWindowS: 60, banDurationS: 60, hashConcurrency: 2 });
    const base = { clientId: 'c', address: '127.0.0.1', certificateIdentity: undefined, listener: { name: 't', allowAnonymous: false, useIdentityAsUsername: false } };
    expect(await lc.check({ ...base, username: 'old', password: Buffer.from('old-pw') })).to.equal('old');
    expect(await lc.check({ ...base, username: 'new', password: Buffer.from('new-pw') })).to.equal('new');
    // And mosquitto_passwd can still manage the file convoy wrote to.
    expect(spawnSync('mosquitto_passwd', ['-D', f, 'old']).status).to.equal(0);
    expect([...loadPasswordFile(f).keys()]).to.deep.equal(['new']);
  });
});

describe('cli: passwd argument parsing and the hidden prompt', () => {
  it('parsePasswdArgs', () => {
    expect(parsePasswdArgs(['f', 'u'])).to.deep.equal({ mode: 'set', create: false, batch: false, file: 'f', user: 'u' });
    expect(parsePasswdArgs(['-c', '-b', 'f', 'u', 'p'])).to.deep.equal({ mode: 'set', create: true, batch: true, file: 'f', user: 'u', password: 'p' });
    expect(parsePasswdArgs(['-D', 'f', 'u'])).to.deep.equal({ mode: 'delete', create: false, batch: false, file: 'f', user: 'u' });
    expect(parsePasswdArgs(['-b', '--', 'f', '-u', '-p'])).to.deep.include({ user: '-u', password: '-p' });
    expect(parsePasswdArgs(['-D', '-b', 'f', 'u'])).to.be.a('string');
  });

  class FakeTty extends EventEmitter implements PromptInput {
    isTTY = true;
    raw: boolean[] = [];
    setRawMode(b: boolean) {
      this.raw.push(b);
    }
    setEncoding() {}
    resume() {}
    pause() {}
  }

  it('reads without echo in raw mode, handles backspace, restores the terminal', async () => {
    const tty = new FakeTty();
    const out: string[] = [];
    const p = readHiddenLine(tty, (t) => out.push(t), 'Password: ');
    tty.emit('data', 'sec');
    tty.emit('data', 'rx\u007fet\r');
    expect(await p).to.equal('secret');
    expect(out).to.deep.equal(['Password: ', '\n']); // nothing echoed
    expect(tty.raw).to.deep.equal([true, false]);
    expect(tty.listenerCount('data')).to.equal(0);
  });

  it('Ctrl-C aborts the prompt', async () => {
    const tty = new FakeTty();
    const p = readHiddenLine(tty, () => undefined, 'Password: ');
    tty.emit('data', 'abc\u0003');
    let err: unknown;
    try {
      await p;
    } catch (e) {
      err = e;
    }
    expect((err as Error).message).to.equal('interrupted');
    expect(tty.raw).to.deep.equal([true, false]);
  });

  it('the TTY path asks twice and refuses a mismatch', async () => {
    const { passwdCommand } = await import('../../src/cli/passwd.js');
    const dir = mkdtempSync(join(tmpdir(), 'convoy-passwd-tty-'));
    try {
      const f = join(dir, 'pw');
      const feed = (answers: string[]) => {
        const tty = new FakeTty();
        tty.on('newListener', (ev: string) => {
          if (ev === 'data') setImmediate(() => tty.emit('data', `${answers.shift() ?? ''}\r`));
        });
        return tty;
      };
      const err: string[] = [];
      const io = { stdout: () => undefined, stderr: (t: string) => void err.push(t) };
      const prompts: string[] = [];
      const params = { ln: 4, r: 8, p: 1 };
      expect(await passwdCommand(['-c', f, 'u'], io, { input: feed(['one', 'two']), prompt: (t) => prompts.push(t), scryptParams: params })).to.equal(1);
      expect(err.join('')).to.equal('convoy passwd: passwords do not match\n');
      expect(existsSync(f)).to.equal(false);
      expect(await passwdCommand(['-c', f, 'u'], io, { input: feed(['same', 'same']), prompt: (t) => prompts.push(t), scryptParams: params })).to.equal(0);
      expect(prompts.filter((t) => t !== '\n')).to.deep.equal(['Password: ', 'Reenter password: ', 'Password: ', 'Reenter password: ']);
      expect(await verifyPassword('same', loadPasswordFile(f).get('u')!.hash)).to.equal(true);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
