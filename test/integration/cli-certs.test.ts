// `convoy certs` end to end: the compiled CLI spawned as an operator would run it, checked with the
// openssl command and node:crypto.
import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

// Compiled to dist/test/integration/, next to dist/src/.
const MAIN = fileURLToPath(new URL('../../src/main.js', import.meta.url));

function run(command: string, args: string[], cwd: string) {
  const r = spawnSync(command, args, { cwd, encoding: 'utf8', env: { PATH: process.env.PATH ?? '' }, timeout: 30000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('cli: convoy certs', function () {
  this.timeout(60000);
  let cwd: string;
  const convoy = (...args: string[]) => run(process.execPath, [MAIN, ...args], cwd);
  const openssl = (...args: string[]) => {
    const r = run('openssl', args, cwd);
    return { code: r.code, out: r.stdout + r.stderr };
  };
  const mode = (p: string) => statSync(join(cwd, p)).mode & 0o777;

  before(() => {
    cwd = mkdtempSync(join(tmpdir(), 'convoy-cli-certs-'));
  });
  after(() => rmSync(cwd, { recursive: true, force: true }));

  it('init creates the CA, its key (0600) and an empty CRL in --dir', () => {
    const r = convoy('certs', 'init', '--dir', 'tmp', '--cn', 'Truck 42 CA', '--days', '400');
    expect(r.stderr).to.equal('');
    expect(r.code).to.equal(0);
    expect(r.stdout).to.match(/^created CA "Truck 42 CA" \(ECDSA P-256\), serial [0-9A-F]+, expires \d{4}-\d\d-\d\d\n/);
    expect(mode('tmp/ca.key')).to.equal(0o600);
    expect(mode('tmp/ca.crt')).to.equal(0o644);
    const ca = new X509Certificate(readFileSync(join(cwd, 'tmp/ca.crt')));
    expect(ca.ca).to.equal(true);
    expect(Date.parse(ca.validTo) - Date.now()).to.be.closeTo(400 * 86_400_000, 3_600_000);
    const crl = openssl('crl', '-in', 'tmp/crl.pem', '-noout', '-text', '-CAfile', 'tmp/ca.crt');
    expect(crl.out).to.contain('verify OK');
    expect(crl.out).to.contain('No Revoked Certificates');
  });

  it('init refuses to overwrite an existing CA (exit 1)', () => {
    const r = convoy('certs', 'init', '--dir', 'tmp');
    expect(r.code).to.equal(1);
    expect(r.stderr).to.match(/already holds a CA/);
  });

  it('defaults to ./pki', () => {
    const r = convoy('certs', 'init');
    expect(r.code, r.stderr).to.equal(0);
    expect(existsSync(join(cwd, 'pki', 'ca.crt'))).to.equal(true);
  });

  it('server issues the gateway certificate with SANs that OpenSSL accepts for the host and addresses', () => {
    const r = convoy('certs', 'server', '--dir', 'tmp', '--host', 'gw.truck42', '--ip', '127.0.0.1', '--ip=10.0.0.1', '--dns', 'localhost');
    expect(r.code, r.stderr).to.equal(0);
    expect(r.stdout).to.contain('names: DNS:gw.truck42, DNS:localhost, IP Address:127.0.0.1, IP Address:10.0.0.1');
    expect(mode('tmp/server.key')).to.equal(0o600);
    for (const check of [['-verify_hostname', 'gw.truck42'], ['-verify_hostname', 'localhost'], ['-verify_ip', '10.0.0.1']]) {
      const v = openssl('verify', '-CAfile', 'tmp/ca.crt', '-purpose', 'sslserver', ...check, 'tmp/server.crt');
      expect(v.out, check.join(' ')).to.contain('tmp/server.crt: OK');
    }
    expect(openssl('verify', '-CAfile', 'tmp/ca.crt', '-verify_hostname', 'evil.test', 'tmp/server.crt').code).to.not.equal(0);
  });

  it('client NAME issues a client certificate and key', () => {
    const r = convoy('certs', 'client', 'scanner-1', '--dir', 'tmp', '--days', '20');
    expect(r.code, r.stderr).to.equal(0);
    expect(mode('tmp/clients/scanner-1.key')).to.equal(0o600);
    const v = openssl('verify', '-CAfile', 'tmp/ca.crt', '-purpose', 'sslclient', 'tmp/clients/scanner-1.crt');
    expect(v.out).to.contain(': OK');
    expect(new X509Certificate(readFileSync(join(cwd, 'tmp/clients/scanner-1.crt'))).subject).to.equal('CN=scanner-1');
  });

  it('client --csr signs a request made with openssl, and refuses an altered one', () => {
    const req = openssl('req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'door.key', '-subj', '/CN=door-sensor', '-out', 'door.csr');
    expect(req.code, req.out).to.equal(0);
    const r = convoy('certs', 'client', '--csr', 'door.csr', '--dir', 'tmp');
    expect(r.code, r.stderr).to.equal(0);
    expect(r.stdout).to.contain('tmp/clients/door-sensor.crt');
    expect(existsSync(join(cwd, 'tmp/clients/door-sensor.key'))).to.equal(false);
    const pair = openssl('x509', '-in', 'tmp/clients/door-sensor.crt', '-noout', '-pubkey');
    const keyPub = openssl('pkey', '-in', 'door.key', '-pubout');
    expect(pair.out).to.equal(keyPub.out);

    const der = Buffer.from(readFileSync(join(cwd, 'door.csr'), 'utf8').replace(/-----[^-]+-----|\s/g, ''), 'base64');
    der.write('door-sensoX', der.indexOf(Buffer.from('door-sensor')), 'latin1');
    writeFileSync(join(cwd, 'forged.csr'), `-----BEGIN CERTIFICATE REQUEST-----\n${der.toString('base64')}\n-----END CERTIFICATE REQUEST-----\n`);
    const bad = convoy('certs', 'client', '--csr', 'forged.csr', '--dir', 'tmp');
    expect(bad.code).to.equal(1);
    expect(bad.stderr).to.match(/signature does not verify/);
    expect(existsSync(join(cwd, 'tmp/clients/door-sensoX.crt'))).to.equal(false);
  });

  it('list prints every certificate with expiry, days left and status', () => {
    const r = convoy('certs', 'list', '--dir', 'tmp');
    expect(r.code, r.stderr).to.equal(0);
    const lines = r.stdout.trimEnd().split('\n');
    expect(lines[0]).to.match(/^SERIAL +KIND +NAME +NOT AFTER +DAYS LEFT +STATUS$/);
    const rows = lines.slice(1).map((l) => l.split(/ {2,}/));
    expect(rows.map((c) => [c[1], c[2], c[5]])).to.deep.equal([
      ['ca', 'Truck 42 CA', 'valid'],
      ['server', 'gw.truck42', 'valid'],
      ['client', 'scanner-1', 'expiring'],
      ['client', 'door-sensor', 'valid'],
    ]);
    expect(rows[2]?.[4]).to.be.oneOf(['19', '20']);
    expect(rows[1]?.[3]).to.match(/^\d{4}-\d\d-\d\d \d\d:\d\dZ$/);
  });

  it('revoke NAME rewrites the CRL so openssl verify -crl_check says "certificate revoked"', () => {
    const r = convoy('certs', 'revoke', 'scanner-1', '--dir', 'tmp');
    expect(r.code, r.stderr).to.equal(0);
    expect(r.stdout).to.match(/^revoked client certificate "scanner-1", serial [0-9A-F]+\n/);
    const v = openssl('verify', '-crl_check', '-CRLfile', 'tmp/crl.pem', '-CAfile', 'tmp/ca.crt', 'tmp/clients/scanner-1.crt');
    expect(v.code).to.not.equal(0);
    expect(v.out).to.contain('certificate revoked');
    expect(openssl('verify', '-crl_check', '-CRLfile', 'tmp/crl.pem', '-CAfile', 'tmp/ca.crt', 'tmp/clients/door-sensor.crt').code).to.equal(0);
    expect(convoy('certs', 'list', '--dir', 'tmp').stdout).to.match(/scanner-1 .* revoked\n/);
  });

  it('revoke SERIAL works with the serial from list; a second revoke fails', () => {
    const serial = new X509Certificate(readFileSync(join(cwd, 'tmp/clients/door-sensor.crt'))).serialNumber;
    expect(convoy('certs', 'revoke', serial.toLowerCase(), '--dir', 'tmp').code).to.equal(0);
    expect(openssl('crl', '-in', 'tmp/crl.pem', '-noout', '-text').out).to.contain(`Serial Number: ${serial}`);
    const again = convoy('certs', 'revoke', serial, '--dir', 'tmp');
    expect(again.code).to.equal(1);
    expect(again.stderr).to.match(/already revoked/);
  });

  it('crl re-signs the CRL with a new number and next update', () => {
    const r = convoy('certs', 'crl', '--dir', 'tmp', '--crl-days', '90');
    expect(r.code, r.stderr).to.equal(0);
    expect(r.stdout).to.match(/tmp\/crl.pem: CRL number \d+, 2 revoked, next update \d{4}-\d\d-\d\d\n/);
    const next = openssl('crl', '-in', 'tmp/crl.pem', '-noout', '-nextupdate').out.trim().replace(/^nextUpdate=/, '');
    expect(Date.parse(next) - Date.now()).to.be.closeTo(90 * 86_400_000, 3_600_000);
  });

  it('usage errors exit 2, operation errors exit 1, help describes the command', () => {
    for (const args of [['certs'], ['certs', 'bogus'], ['certs', 'server', '--dir', 'tmp'], ['certs', 'client', '--dir', 'tmp'], ['certs', 'list', '--nope'], ['certs', 'init', '--days', 'ten']]) {
      const r = convoy(...args);
      expect(r.code, args.join(' ')).to.equal(2);
      expect(r.stderr).to.match(/Usage: convoy certs init/);
    }
    expect(convoy('certs', 'client', 'a/b', '--dir', 'tmp').code).to.equal(1);
    expect(convoy('certs', 'list', '--dir', 'nowhere').stderr).to.match(/no PKI in nowhere/);
    expect(convoy('certs', 'client', '--csr', 'missing.csr', '--dir', 'tmp').stderr).to.match(/missing\.csr/);
    const h = convoy('help', 'certs');
    expect(h.code).to.equal(0);
    expect(h.stdout).to.match(/^Usage: convoy certs init/);
    expect(convoy('--help').stdout).to.match(/ certs +local PKI/);
  });
});
