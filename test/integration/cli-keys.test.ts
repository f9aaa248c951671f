// `convoy keys` end to end: the compiled CLI spawned as an operator would run it; keys made and
// checked with the openssl command and node:crypto.
import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { createPrivateKey, createPublicKey } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { decodeEnvelope, keyId, parseDetached, verifyFields } from '../../src/security/signing.js';

const MAIN = fileURLToPath(new URL('../../src/main.js', import.meta.url));

function run(command: string, args: string[], cwd: string, input?: string) {
  const r = spawnSync(command, args, { cwd, encoding: 'utf8', env: { PATH: process.env.PATH ?? '' }, timeout: 30000, ...(input !== undefined ? { input } : {}) });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('cli: convoy keys', function () {
  this.timeout(60000);
  let cwd: string;
  const convoy = (...args: string[]) => run(process.execPath, [MAIN, ...args], cwd);
  const convoyIn = (input: string, ...args: string[]) => run(process.execPath, [MAIN, ...args], cwd, input);
  const mode = (p: string) => statSync(join(cwd, p)).mode & 0o777;
  const openssl = (...args: string[]) => run('openssl', args, cwd);

  before(() => {
    cwd = mkdtempSync(join(tmpdir(), 'convoy-cli-keys-'));
    // HQ's key pair, made by OpenSSL as HQ would.
    expect(openssl('genpkey', '-algorithm', 'ed25519', '-out', 'hq.key').code).to.equal(0);
    expect(openssl('pkey', '-in', 'hq.key', '-pubout', '-out', 'hq.pub').code).to.equal(0);
    expect(openssl('genpkey', '-algorithm', 'ed25519', '-out', 'hq2.key').code).to.equal(0);
    expect(openssl('pkey', '-in', 'hq2.key', '-pubout', '-out', 'hq2.pub').code).to.equal(0);
    expect(openssl('genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', 'ec.key').code).to.equal(0);
    expect(openssl('pkey', '-in', 'ec.key', '-pubout', '-out', 'ec.pub').code).to.equal(0);
  });
  after(() => rmSync(cwd, { recursive: true, force: true }));

  it('init creates the gateway key pair (0600) in ./keys, and refuses to replace it', () => {
    const r = convoy('keys', 'init');
    expect(r.stderr).to.equal('');
    expect(r.code).to.equal(0);
    expect(r.stdout).to.match(/^created the gateway key pair \(Ed25519\), key id [0-9a-f]{32}\n/);
    expect(mode('keys/gateway.key')).to.equal(0o600);
    expect(mode('keys/gateway.pub')).to.equal(0o600);
    expect(mode('keys')).to.equal(0o700);
    // OpenSSL reads it and derives the same public key.
    const pub = openssl('pkey', '-in', 'keys/gateway.key', '-pubout');
    expect(pub.stdout).to.equal(readFileSync(join(cwd, 'keys/gateway.pub'), 'utf8'));
    const again = convoy('keys', 'init');
    expect(again.code).to.equal(1);
    expect(again.stderr).to.contain('already exists');
  });

  it('show prints the gateway public key PEM on stdout and its key id on stderr', () => {
    const r = convoy('keys', 'show');
    expect(r.code).to.equal(0);
    expect(r.stdout).to.equal(readFileSync(join(cwd, 'keys/gateway.pub'), 'utf8'));
    const kid = keyId(createPublicKey(r.stdout));
    expect(r.stderr).to.equal(`key id ${kid}\n`);
    expect(convoy('keys', 'show', '--dir', 'nowhere').code).to.equal(1);
  });

  it('add trusts an HQ public key (0600), list shows it with its key id, remove drops it', () => {
    const kid = keyId(createPublicKey(readFileSync(join(cwd, 'hq.pub'))));
    const add = convoy('keys', 'add', 'hq-main', 'hq.pub');
    expect(add.stderr).to.equal('');
    expect(add.code).to.equal(0);
    expect(add.stdout).to.contain(`key id ${kid}`);
    expect(mode('keys/trusted/hq-main.pem')).to.equal(0o600);
    expect(mode('keys/trusted')).to.equal(0o700);
    expect(convoy('keys', 'add', 'hq-backup', 'hq2.pub').code).to.equal(0);
    const list = convoy('keys', 'list');
    expect(list.code).to.equal(0);
    const lines = list.stdout.trim().split('\n');
    expect(lines[0]).to.match(/^NAME\s+KEY ID\s+FILE$/);
    expect(lines.slice(1).map((l) => l.split(/\s+/).slice(0, 2))).to.deep.equal([
      ['hq-backup', keyId(createPublicKey(readFileSync(join(cwd, 'hq2.pub'))))],
      ['hq-main', kid],
    ]);
    const rm = convoy('keys', 'remove', 'hq-backup');
    expect(rm.code).to.equal(0);
    expect(existsSync(join(cwd, 'keys/trusted/hq-backup.pem'))).to.equal(false);
    const rm2 = convoy('keys', 'remove', 'hq-backup');
    expect(rm2.code).to.equal(1);
    expect(rm2.stderr).to.contain('no trusted key named "hq-backup"');
  });

  it('add refuses private keys, non-Ed25519 keys, duplicates and bad names (exit 1)', () => {
    const cases: Array<[string[], RegExp]> = [
      [['hq-priv', 'hq.key'], /PRIVATE key/],
      [['ec', 'ec.pub'], /Ed25519/],
      [['again', 'hq.pub'], /already trusted as "hq-main"/],
      [['../up', 'hq2.pub'], /invalid key name/],
      [['missing', 'nope.pub'], /nope\.pub/],
    ];
    for (const [args, msg] of cases) {
      const r = convoy('keys', 'add', ...args);
      expect(r.code, args.join(' ')).to.equal(1);
      expect(r.stderr, args.join(' ')).to.match(msg);
    }
    expect(existsSync(join(cwd, 'keys/trusted/hq-priv.pem'))).to.equal(false);
  });

  it('usage errors exit 2; help keys documents every subcommand', () => {
    expect(convoy('keys').code).to.equal(2);
    expect(convoy('keys', 'frobnicate').code).to.equal(2);
    expect(convoy('keys', 'add', 'only-name').code).to.equal(2);
    expect(convoy('keys', 'list', '--bogus').code).to.equal(2);
    const help = convoy('help', 'keys');
    expect(help.code).to.equal(0);
    for (const sub of ['init', 'show', 'add', 'list', 'remove', 'sign']) expect(help.stdout).to.contain(`convoy keys ${sub}`);
  });

  it('sign (HQ helper) produces user properties and an envelope that verify with HQ\'s public key', () => {
    const hqPub = createPublicKey(readFileSync(join(cwd, 'hq.pub')));
    const args = ['keys', 'sign', '--key', 'hq.key', '--gateway', 'gw7', '--topic', 'fleet/gw7/orders/1', '--seq', '12', '--exp', '2000000000'];
    const props = convoyIn('deliver to dock 4', ...args);
    expect(props.stderr).to.equal('');
    expect(props.code).to.equal(0);
    const pairs = props.stdout.trim().split('\n').map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)] as [string, string]);
    expect(pairs.map(([k]) => k)).to.deep.equal(['sig', 'kid', 'seq', 'exp', 'gw']);
    const d = parseDetached('fleet/gw7/orders/1', Buffer.from('deliver to dock 4'), { userProperties: pairs });
    expect(d).to.deep.include({ kid: keyId(hqPub), seq: 12, exp: 2_000_000_000, gatewayId: 'gw7' });
    expect(verifyFields(d, d.signature, hqPub)).to.equal(true);

    writeFileSync(join(cwd, 'order.bin'), 'cancel parcel 17');
    const env = convoy(...args, '--envelope', 'order.bin');
    expect(env.code).to.equal(0);
    const e = decodeEnvelope('fleet/gw7/orders/1', Buffer.from(env.stdout.trim(), 'base64'));
    expect(e.payload.toString()).to.equal('cancel parcel 17');
    expect(verifyFields(e, e.signature, hqPub)).to.equal(true);
    expect(verifyFields(e, e.signature, createPublicKey(createPrivateKey(readFileSync(join(cwd, 'hq2.key')))))).to.equal(false);

    expect(convoy('keys', 'sign', '--key', 'hq.key', '--gateway', 'g', '--topic', 't', '--seq', 'x', 'order.bin').code).to.equal(2);
    expect(convoy('keys', 'sign', '--key', 'hq.pub', '--gateway', 'g', '--topic', 't', '--seq', '1', 'order.bin').code).to.equal(1);
  });
});
