import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  DEFAULT_SCRYPT_PARAMS,
  HashLimiter,
  HashQueueFullError,
  dummyHashLike,
  encodeHash,
  hashPassword,
  parseHash,
  verifyPassword,
} from '../../src/security/passwords.js';
import {
  PasswordFileError,
  checkUserName,
  loadPasswordFile,
  parsePasswordFile,
  removeUserFromText,
  setUserInText,
  writeFileAtomic,
} from '../../src/security/password-file.js';

const CHEAP = { ln: 4, r: 8, p: 1 };

// Produced by `mosquitto_passwd -b -c FILE alice secret` (Mosquitto 2.x) and
// `mosquitto_passwd -H sha512 -b -c FILE bob pw6`.
const MOSQ_7 = '$7$101$YMt3WzMCR/I//SgQ$gRiaqg4bDO1LMqtK5n413XalE/H+EnOigqgG7vTaVj9kSwhoeH8bLGAye3Uk0A0n9pEDpAxuCrlxWpcsjeFciQ==';
const MOSQ_6 = '$6$y6wxaLlr/jnygAMy$q9LR4/zoSEREblYpXi7lS6Cts71TSLIca23CxTr9G5tcezn3ojyZfweP1X0jrun43jRWVj/Nd+LeY0YHb78RlQ==';

const hasMosquittoPasswd = spawnSync('mosquitto_passwd', ['-h'], { encoding: 'utf8' }).error === undefined;

describe('passwords: scrypt format', () => {
  it('hashes to $scrypt$ln=..,r=..,p=..$SALT$HASH with unpadded base64 (16-byte salt, 32-byte hash)', async () => {
    const h = await hashPassword('hunter2', CHEAP);
    expect(h).to.match(/^\$scrypt\$ln=4,r=8,p=1\$[A-Za-z0-9+/]{22}\$[A-Za-z0-9+/]{43}$/);
    const p = parseHash(h);
    if (typeof p === 'string') throw new Error(p);
    expect(p.scheme).to.equal('scrypt');
    expect(p.salt).to.have.length(16);
    expect(p.hash).to.have.length(32);
    expect(encodeHash(p)).to.equal(h);
  });

  it('uses the documented default cost ln=13, r=8, p=1', async () => {
    expect(DEFAULT_SCRYPT_PARAMS).to.deep.equal({ ln: 13, r: 8, p: 1 });
    const h = await hashPassword('pw');
    expect(h.startsWith('$scrypt$ln=13,r=8,p=1$')).to.equal(true);
    expect(await verifyPassword('pw', h)).to.equal(true);
  });

  it('verifies the right password and refuses a wrong one', async () => {
    const h = await hashPassword('correct horse', CHEAP);
    expect(await verifyPassword('correct horse', h)).to.equal(true);
    expect(await verifyPassword(Buffer.from('correct horse'), h)).to.equal(true);
    expect(await verifyPassword('correct hors', h)).to.equal(false);
    expect(await verifyPassword('', h)).to.equal(false);
  });

  it('salts: the same password hashes differently each time', async () => {
    const [a, b] = await Promise.all([hashPassword('x', CHEAP), hashPassword('x', CHEAP)]);
    expect(a).to.not.equal(b);
  });

  it('hashes binary (non-UTF-8) passwords byte for byte', async () => {
    const pw = Buffer.from([0xff, 0x00, 0xfe]);
    const h = await hashPassword(pw, CHEAP);
    expect(await verifyPassword(pw, h)).to.equal(true);
    expect(await verifyPassword(Buffer.from([0xff, 0x00]), h)).to.equal(false);
  });

  it('accepts base64 with padding on read', async () => {
    const h = await hashPassword('p', CHEAP);
    const parts = h.split('$');
    const padded = `$scrypt$${parts[2]}$${parts[3]}==$${parts[4]}=`;
    expect(await verifyPassword('p', padded)).to.equal(true);
  });

  it('refuses out-of-bounds cost parameters when hashing', async () => {
    let err: unknown;
    try {
      await hashPassword('p', { ln: 30, r: 8, p: 1 });
    } catch (e) {
      err = e;
    }
    expect(err).to.be.instanceOf(RangeError);
  });
});

describe('passwords: Mosquitto formats', () => {
  it('verifies a $7$ PBKDF2-SHA512 hash made by mosquitto_passwd', async () => {
    const p = parseHash(MOSQ_7);
    if (typeof p === 'string') throw new Error(p);
    expect(p.scheme).to.equal('pbkdf2-sha512');
    expect(p.scheme === 'pbkdf2-sha512' && p.iterations).to.equal(101);
    expect(await verifyPassword('secret', MOSQ_7)).to.equal(true);
    expect(await verifyPassword('Secret', MOSQ_7)).to.equal(false);
    expect(encodeHash(p)).to.equal(MOSQ_7);
  });

  it('verifies a $6$ SHA-512 hash made by mosquitto_passwd -H sha512', async () => {
    expect(await verifyPassword('pw6', MOSQ_6)).to.equal(true);
    expect(await verifyPassword('pw7', MOSQ_6)).to.equal(false);
  });

  (hasMosquittoPasswd ? it : it.skip)('verifies a file freshly written by the installed mosquitto_passwd', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'convoy-mosq-'));
    try {
      const f = join(dir, 'pw');
      const r1 = spawnSync('mosquitto_passwd', ['-b', '-c', f, 'dev1', 's3cret with spaces'], { encoding: 'utf8' });
      expect(r1.status, r1.stderr).to.equal(0);
      const r2 = spawnSync('mosquitto_passwd', ['-H', 'sha512', '-b', f, 'old', 'legacy'], { encoding: 'utf8' });
      expect(r2.status, r2.stderr).to.equal(0);
      const users = loadPasswordFile(f);
      const dev1 = users.get('dev1');
      const old = users.get('old');
      expect(dev1?.hash.scheme).to.equal('pbkdf2-sha512');
      expect(old?.hash.scheme).to.equal('sha512');
      expect(await verifyPassword('s3cret with spaces', dev1!.hash)).to.equal(true);
      expect(await verifyPassword('s3cret', dev1!.hash)).to.equal(false);
      expect(await verifyPassword('legacy', old!.hash)).to.equal(true);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('passwords: parseHash rejects malformed hashes', () => {
  const bad: Array<[string, RegExp]> = [
    ['hunter2', /plain-text/],
    ['', /not a password hash/],
    ['$2b$10$abcdefghijklmnopqrstuv', /unknown hash scheme "\$2b\$"/],
    ['$scrypt$ln=4,r=8$c2FsdA$aGFzaGhhc2hoYXNoaGFzaA', /ln=N,r=N,p=N/],
    ['$scrypt$ln=4,r=8,p=1,ln=5$c2FsdA$aGFzaGhhc2hoYXNoaGFzaA', /ln=N,r=N,p=N/],
    ['$scrypt$ln=25,r=8,p=1$c2FsdA$aGFzaGhhc2hoYXNoaGFzaA', /ln must be/],
    ['$scrypt$ln=20,r=64,p=1$c2FsdA$aGFzaGhhc2hoYXNoaGFzaA', /MiB/],
    ['$scrypt$ln=x,r=8,p=1$c2FsdA$aGFzaGhhc2hoYXNoaGFzaA', /ln must be/],
    ['$scrypt$ln=4,r=8,p=1$not base64!$aGFzaGhhc2hoYXNoaGFzaA', /salt is not base64/],
    ['$scrypt$ln=4,r=8,p=1$c2FsdA$aGFzaA', /16 to 64 bytes/],
    ['$scrypt$ln=4,r=8,p=1$c2FsdA', /must be \$scrypt\$/],
    ['$7$0$YMt3WzMCR/I//SgQ$gRiaqg4bDO1LMqtK5n413XalE/H+EnOigqgG7vTaVj8=', /iterations/],
    ['$7$99999999999$YMt3WzMCR/I//SgQ$gRiaqg4bDO1LMqtK5n413XalE/H+EnOigqgG7vTaVj8=', /iterations/],
    ['$7$101$$gRiaqg4bDO1LMqtK5n413XalE/H+EnOigqgG7vTaVj8=', /salt is not base64/],
    ['$6$y6wxaLlr/jnygAMy$q9LR4/zoSEREblYp', /64 bytes/],
  ];
  for (const [h, re] of bad) {
    it(`"${h.slice(0, 40)}" → ${String(re)}`, async () => {
      const p = parseHash(h);
      expect(p).to.be.a('string').that.matches(re);
      expect(await verifyPassword('x', h)).to.equal(false);
    });
  }
});

describe('passwords: dummy hash for unknown users', () => {
  it('has the scheme and cost of the model, never verifies', async () => {
    const model = parseHash(MOSQ_7);
    if (typeof model === 'string') throw new Error(model);
    const d = dummyHashLike(model);
    expect(d.scheme).to.equal('pbkdf2-sha512');
    expect(d.scheme === 'pbkdf2-sha512' && d.iterations).to.equal(101);
    expect(d.hash.equals(model.hash)).to.equal(false);
    expect(await verifyPassword('secret', d)).to.equal(false);
    const def = dummyHashLike(undefined);
    expect(def.scheme === 'scrypt' && def.params).to.deep.equal(DEFAULT_SCRYPT_PARAMS);
  });
});

describe('passwords: HashLimiter', () => {
  function deferred() {
    let resolve!: () => void;
    let reject!: (e: Error) => void;
    const promise = new Promise<void>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    return { promise, resolve, reject };
  }

  it('runs at most `concurrency` tasks at once, the rest in FIFO order', async () => {
    const lim = new HashLimiter(2);
    const gates = Array.from({ length: 6 }, () => deferred());
    const started: number[] = [];
    let active = 0;
    let peak = 0;
    const runs = gates.map((g, i) =>
      lim.run(async () => {
        started.push(i);
        peak = Math.max(peak, ++active);
        try {
          await g.promise;
        } finally {
          active--;
        }
        return i;
      }),
    );
    await new Promise((r) => setImmediate(r));
    expect(started).to.deep.equal([0, 1]);
    expect(lim.active).to.equal(2);
    expect(lim.queued).to.equal(4);
    gates[1]!.resolve();
    await new Promise((r) => setImmediate(r));
    expect(started).to.deep.equal([0, 1, 2]);
    gates[0]!.reject(new Error('boom')); // a failing task frees its slot too
    await new Promise((r) => setImmediate(r));
    expect(started).to.deep.equal([0, 1, 2, 3]);
    for (const g of gates) g.resolve();
    const results = await Promise.allSettled(runs);
    expect(results.map((r) => r.status)).to.deep.equal(['rejected', 'fulfilled', 'fulfilled', 'fulfilled', 'fulfilled', 'fulfilled']);
    expect(peak).to.equal(2);
    expect(lim.active).to.equal(0);
    expect(lim.queued).to.equal(0);
  });

  it('refuses at once when maxQueued tasks already wait', async () => {
    const lim = new HashLimiter(1, 2);
    const gate = deferred();
    const runs = [1, 2, 3].map(() => lim.run(() => gate.promise));
    let err: unknown;
    try {
      await lim.run(() => Promise.resolve());
    } catch (e) {
      err = e;
    }
    expect(err).to.be.instanceOf(HashQueueFullError);
    gate.resolve();
    await Promise.all(runs);
    await lim.run(() => Promise.resolve()); // room again
  });

  it('bounds real scrypt verifications: a flood of 20 runs 2 at a time', async () => {
    const h = await hashPassword('pw', { ln: 10, r: 8, p: 1 });
    const lim = new HashLimiter(2);
    let active = 0;
    let peak = 0;
    const results = await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        lim.run(async () => {
          peak = Math.max(peak, ++active);
          try {
            return await verifyPassword(i === 7 ? 'pw' : 'nope', h);
          } finally {
            active--;
          }
        }),
      ),
    );
    expect(peak).to.equal(2);
    expect(results.filter(Boolean)).to.have.length(1);
  });

  it('keeps the event loop free while hashing (scrypt runs on the threadpool)', async () => {
    const h = await hashPassword('pw', { ln: 14, r: 8, p: 1 });
    let ticks = 0;
    const timer = setInterval(() => ticks++, 1);
    const t0 = Date.now();
    await verifyPassword('pw', h);
    clearInterval(timer);
    const elapsed = Date.now() - t0;
    // A blocking hash would let at most one tick through.
    if (elapsed > 20) expect(ticks).to.be.greaterThan(3);
  });
});

describe('password file', () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'convoy-pwfile-'));
  });
  after(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  it('parses user:hash lines, skipping comments and blank lines, tolerating CRLF', async () => {
    const h = await hashPassword('a-pw', CHEAP);
    const text = `# users\n\n  # indented comment\nalice:${h}\r\nbob:${MOSQ_7}\ncarol: ${MOSQ_6} \n`;
    const users = parsePasswordFile(text, 'pw.txt');
    expect([...users.keys()]).to.deep.equal(['alice', 'bob', 'carol']);
    expect(users.get('alice')!.line).to.equal(4);
    expect(users.get('carol')!.hash.scheme).to.equal('sha512');
    expect(await verifyPassword('a-pw', users.get('alice')!.hash)).to.equal(true);
  });

  it('an empty file (or only comments) has no users', () => {
    expect(parsePasswordFile('', 'f').size).to.equal(0);
    expect(parsePasswordFile('# nobody\n\n', 'f').size).to.equal(0);
  });

  it('a user name may contain spaces and wildcard characters (the ACL handles those)', () => {
    const users = parsePasswordFile(`a b/+#:${MOSQ_7}\n`, 'f');
    expect(users.has('a b/+#')).to.equal(true);
  });

  it('reports every malformed line as FILE:LINE with what to do, and loads nothing', () => {
    const text = [
      `ok:${MOSQ_7}`,
      'no-colon-here',
      `:${MOSQ_7}`,
      'plain:hunter2',
      `ok:${MOSQ_6}`,
      'x:$1$abc$def',
      ' lead:' + MOSQ_7,
    ].join('\n');
    let err: unknown;
    try {
      parsePasswordFile(text, 'users.pw');
    } catch (e) {
      err = e;
    }
    expect(err).to.be.instanceOf(PasswordFileError);
    const lines = (err as Error).message.split('\n');
    expect(lines).to.have.length(6);
    expect(lines[0]).to.match(/^users\.pw:2: expected "user:hash"; create entries with `convoy passwd users\.pw USER`$/);
    expect(lines[1]).to.match(/^users\.pw:3: user name is empty/);
    expect(lines[2]).to.match(/^users\.pw:4: user "plain": .*plain-text password.*convoy passwd users\.pw plain/);
    expect(lines[3]).to.match(/^users\.pw:5: user "ok" is already defined on line 1/);
    expect(lines[4]).to.match(/^users\.pw:6: user "x": unknown hash scheme/);
    expect(lines[5]).to.match(/^users\.pw:7: user name starts or ends with white space/);
  });

  it('a missing file is an error naming the file and how to create it', () => {
    expect(() => loadPasswordFile(join(dir, 'nope'))).to.throw(PasswordFileError, /nope: cannot read the password file \(ENOENT\); create it with `convoy passwd -c/);
  });

  it('checkUserName refuses what a line cannot hold', () => {
    expect(checkUserName('alice')).to.equal(null);
    expect(checkUserName('')).to.match(/empty/);
    expect(checkUserName('a:b')).to.match(/":"/);
    expect(checkUserName('a\nb')).to.match(/control/);
    expect(checkUserName('#x')).to.match(/comment/);
  });

  it('setUserInText replaces the line in place and keeps comments; appends a new user', () => {
    const text = '# head\nalice:$6$old\n# mid\nbob:$6$b\n';
    expect(setUserInText(text, 'alice', '$scrypt$new')).to.equal('# head\nalice:$scrypt$new\n# mid\nbob:$6$b\n');
    expect(setUserInText(text, 'carol', '$scrypt$c')).to.equal(text + 'carol:$scrypt$c\n');
    expect(setUserInText('', 'a', '$h')).to.equal('a:$h\n');
    expect(setUserInText('x:$h', 'y', '$i')).to.equal('x:$h\ny:$i\n');
    // A commented-out entry is not the user's line.
    expect(setUserInText('#alice:$6$x\n', 'alice', '$n')).to.equal('#alice:$6$x\nalice:$n\n');
    expect(() => setUserInText('', '', '$h')).to.throw(PasswordFileError, /empty/);
  });

  it('removeUserFromText removes only that user; null when absent', () => {
    expect(removeUserFromText('a:$1\nb:$2\n', 'a')).to.equal('b:$2\n');
    expect(removeUserFromText('a:$1\nab:$2\n', 'ab')).to.equal('a:$1\n');
    expect(removeUserFromText('a:$1\n', 'b')).to.equal(null);
  });

  it('writeFileAtomic writes mode 0600 and leaves no temporary file', () => {
    const f = join(dir, 'atomic.pw');
    writeFileSync(f, 'old\n', { mode: 0o644 });
    writeFileAtomic(f, 'new\n');
    expect(readFileSync(f, 'utf8')).to.equal('new\n');
    expect(statSync(f).mode & 0o777).to.equal(0o600);
    expect(readdirSync(dir).filter((n) => n.endsWith('.tmp'))).to.deep.equal([]);
  });

  it('writeFileAtomic leaves the old file intact when the write fails', () => {
    const f = join(dir, 'missing-dir', 'x.pw');
    expect(() => writeFileAtomic(f, 'x')).to.throw();
    expect(existsSync(f)).to.equal(false);
  });
});
