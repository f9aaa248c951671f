import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  certExpiryAlarm, checkCertificateFiles, crlNextUpdate, crlRevokedSerials, expiryWarnings, normalizeSerial, CERT_EXPIRY_ALARM,
} from '../../src/security/cert-expiry.js';
import { createTestPki } from '../helpers/test-pki.js';
import { X509Certificate } from 'node:crypto';
import * as pki from '../../src/security/pki.js';

const DAY = 86_400_000;
const NOW = new Date('2030-03-01T12:00:00Z');
const at = (days: number): Date => new Date(NOW.getTime() + days * DAY);

describe('security/cert-expiry: expiryWarnings (injected clock)', () => {
  it('warns for what expires within 30 days or has expired, soonest first', () => {
    const w = expiryWarnings(
      [
        { name: 'far', notAfter: at(40) },
        { name: 'edge', notAfter: at(30) },
        { name: 'soon', notAfter: at(10.5) },
        { name: 'gone', notAfter: at(-2) },
        { name: 'today', notAfter: at(0.25) },
        { name: 'tomorrow', notAfter: at(1.5) },
      ],
      NOW,
    );
    expect(w.map((x) => [x.name, x.daysLeft, x.expired])).to.deep.equal([
      ['gone', -2, true],
      ['today', 0, false],
      ['tomorrow', 1, false],
      ['soon', 10, false],
      ['edge', 30, false],
    ]);
    expect(w[0]?.message).to.equal('gone expired on 2030-02-27T12:00:00.000Z');
    expect(w[1]?.message).to.equal('today expires within a day, on 2030-03-01T18:00:00.000Z');
    expect(w[2]?.message).to.equal('tomorrow expires in 1 day, on 2030-03-03T00:00:00.000Z');
    expect(w[3]?.message).to.equal('soon expires in 10 days, on 2030-03-12T00:00:00.000Z');
  });

  it('takes the warning window as a parameter, and returns nothing when all is well', () => {
    const certs = [{ name: 'ca', notAfter: at(45) }];
    expect(expiryWarnings(certs, NOW)).to.deep.equal([]);
    expect(expiryWarnings(certs, NOW, 60).map((w) => w.daysLeft)).to.deep.equal([45]);
    expect(expiryWarnings([], NOW)).to.deep.equal([]);
  });

  it('counts an expiry at exactly now as expired', () => {
    expect(expiryWarnings([{ name: 'x', notAfter: NOW }], NOW)[0]?.expired).to.equal(true);
  });
});

describe('security/cert-expiry: reading certificate files', function () {
  this.timeout(30000);
  let root: string;
  let paths: pki.PkiPaths;
  let uplink: string;

  before(async () => {
    root = mkdtempSync(join(tmpdir(), 'convoy-expiry-'));
    const dir = join(root, 'pki');
    paths = pki.pkiPaths(dir);
    await pki.initCa(dir, { now: NOW, days: 365, crlDays: 20 });
    await pki.issueServer(dir, { host: 'gw.test', now: NOW, days: 12 });
    uplink = (await pki.issueClient(dir, { name: 'truck-42', now: NOW, days: 100 })).certPath;
  });
  after(() => rmSync(root, { recursive: true, force: true }));

  const watched = () => [
    { name: 'server certificate', path: paths.serverCert },
    { name: 'CA', path: paths.caCert },
    { name: 'uplink client certificate', path: uplink },
  ];

  it('reads notAfter with X509Certificate and warns only for the server certificate', () => {
    const w = checkCertificateFiles(watched(), NOW);
    expect(w).to.have.length(1);
    expect(w[0]?.name).to.equal(`server certificate ${paths.serverCert}`);
    expect(w[0]?.daysLeft).to.equal(12);
    expect(w[0]?.message).to.match(/expires in 12 days/);
  });

  it('warns for each of them as time passes', () => {
    const w = checkCertificateFiles(watched(), at(90));
    expect(w.map((x) => [x.name.split(' /')[0], x.daysLeft, x.expired])).to.deep.equal([
      ['server certificate', -78, true],
      ['uplink client certificate', 10, false],
    ]);
    expect(checkCertificateFiles(watched(), at(340)).map((x) => [x.name.split(' /')[0], x.daysLeft])).to.deep.equal([
      ['server certificate', -328],
      ['uplink client certificate', -240],
      ['CA', 25],
    ]);
    const later = checkCertificateFiles(watched(), at(366));
    expect(later.every((x) => x.expired)).to.equal(true);
    expect(later).to.have.length(3);
  });

  it('checks every certificate of a bundle', () => {
    const bundle = join(root, 'bundle.pem');
    writeFileSync(bundle, readFileSync(paths.serverCert, 'utf8') + readFileSync(paths.caCert, 'utf8'));
    const w = checkCertificateFiles([{ name: 'chain', path: bundle }], at(340));
    expect(w.map((x) => x.name)).to.deep.equal([`chain ${bundle} [1: CN=gw.test]`, `chain ${bundle} [2: CN=${pki.DEFAULT_CA_CN}]`]);
  });

  it('warns about a CRL nearing its next update (a listener then refuses every client)', () => {
    const w = checkCertificateFiles([{ name: 'CRL', path: paths.crl, kind: 'crl' }], NOW);
    expect(w.map((x) => x.daysLeft)).to.deep.equal([20]);
    expect(w[0]?.name).to.equal(`CRL ${paths.crl} (next update)`);
  });

  it('crlNextUpdate agrees with openssl crl -nextupdate', () => {
    const r = spawnSync('openssl', ['crl', '-in', paths.crl, '-noout', '-nextupdate'], { encoding: 'utf8' });
    const openssl = new Date(r.stdout.trim().replace(/^nextUpdate=/, ''));
    expect(crlNextUpdate(readFileSync(paths.crl, 'utf8'))?.getTime()).to.equal(openssl.getTime());
    expect(() => crlNextUpdate('nope')).to.throw(/no PEM CRL/);
  });

  it('crlRevokedSerials lists the revoked serials as node prints a peer certificate\'s serial', () => {
    const t = createTestPki();
    try {
      const serialOf = (cert: string): string => normalizeSerial(new X509Certificate(readFileSync(cert)).serialNumber);
      const revoked = crlRevokedSerials(readFileSync(t.crl, 'utf8'));
      expect([...revoked]).to.deep.equal([serialOf(t.revokedClient.cert)]);
      const later = t.issueClient('truck-later');
      t.revoke(later.cert);
      const now = crlRevokedSerials(readFileSync(t.crl, 'utf8'));
      expect(now.has(serialOf(later.cert))).to.equal(true);
      expect(now.has(serialOf(t.revokedClient.cert))).to.equal(true);
      expect(now.has(serialOf(t.client.cert))).to.equal(false);
      // openssl agrees on what is listed.
      const r = spawnSync('openssl', ['crl', '-in', t.crl, '-noout', '-text'], { encoding: 'utf8' });
      const listed = [...r.stdout.matchAll(/Serial Number: ([0-9A-F]+)/gi)].map((m) => normalizeSerial(m[1]!));
      expect(new Set(listed)).to.deep.equal(now);
    } finally {
      t.cleanup();
    }
    expect(() => crlRevokedSerials('nope')).to.throw(/no PEM CRL/);
  });

  it('normalizeSerial drops leading zeros and upper-cases', () => {
    expect(normalizeSerial('00a1b2')).to.equal('A1B2');
    expect(normalizeSerial('0')).to.equal('0');
    expect(normalizeSerial('000')).to.equal('0');
  });

  it('reports a file it cannot read instead of throwing', () => {
    const junk = join(root, 'junk.pem');
    writeFileSync(junk, 'not a certificate\n');
    const broken = join(root, 'broken.pem');
    writeFileSync(broken, '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n');
    const w = checkCertificateFiles(
      [
        { name: 'missing', path: join(root, 'nope.crt') },
        { name: 'junk', path: junk },
        { name: 'broken', path: broken },
      ],
      NOW,
    );
    expect(w.map((x) => x.message)).to.satisfy((m: string[]) => m.every((s) => / cannot be checked: /.test(s)));
    expect(w[0]?.message).to.match(/ENOENT/);
    expect(w[1]?.message).to.match(/no PEM certificate/);
    expect(w.every((x) => x.notAfter === undefined)).to.equal(true);
  });

  it('builds one cert-expiry alarm from the warnings, and none without warnings', () => {
    expect(certExpiryAlarm([])).to.equal(undefined);
    const alarm = certExpiryAlarm(checkCertificateFiles(watched(), at(90)));
    expect(alarm?.name).to.equal(CERT_EXPIRY_ALARM);
    expect(alarm?.message).to.match(/server certificate .* expired on .*; uplink client certificate .* expires in 10 days/);
    expect(alarm?.detail).to.include({ count: 2, expired: true, cert1: `server certificate ${paths.serverCert}` });
  });
});
