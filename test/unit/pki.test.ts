// The local PKI: everything is checked by OpenSSL (node:crypto's X509Certificate, node:tls and the
// openssl command), never by the library that builds the certificates.
import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tls from 'node:tls';
import { crlNextUpdate } from '../../src/security/cert-expiry.js';
import * as pki from '../../src/security/pki.js';

const DAY = 86_400_000;

function openssl(args: string[], input?: string): { code: number | null; out: string } {
  const r = spawnSync('openssl', args, { encoding: 'utf8', timeout: 15000, ...(input === undefined ? {} : { input }) });
  return { code: r.status, out: `${r.stdout}${r.stderr}` };
}

const mode = (path: string): number => statSync(path).mode & 0o777;
const cert = (path: string): X509Certificate => new X509Certificate(readFileSync(path));

async function rejects(p: Promise<unknown>, re: RegExp): Promise<void> {
  try {
    await p;
  } catch (e) {
    expect(e).to.be.instanceOf(pki.PkiError);
    expect((e as Error).message).to.match(re);
    return;
  }
  expect.fail(`expected a PkiError matching ${String(re)}`);
}

/** A CSR made by the openssl command, with its key. */
function opensslCsr(dir: string, cn: string, keyArgs = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256'], extra: string[] = []): { csr: string; keyPath: string } {
  const keyPath = join(dir, `${cn}.csr.key`);
  const csrPath = join(dir, `${cn}.csr`);
  const r = openssl(['req', '-new', ...keyArgs, '-nodes', '-keyout', keyPath, '-subj', `/CN=${cn}`, ...extra, '-out', csrPath]);
  expect(r.code, r.out).to.equal(0);
  return { csr: readFileSync(csrPath, 'utf8'), keyPath };
}

function pemToDer(pem: string): Buffer {
  return Buffer.from(pem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, ''), 'base64');
}

function derToPem(label: string, der: Buffer): string {
  return `-----BEGIN ${label}-----\n${(der.toString('base64').match(/.{1,64}/g) ?? []).join('\n')}\n-----END ${label}-----\n`;
}

describe('security/pki: local CA', function () {
  this.timeout(60000);
  let root: string;
  let dir: string;
  let paths: pki.PkiPaths;
  let ca: X509Certificate;

  before(async () => {
    root = mkdtempSync(join(tmpdir(), 'convoy-pki-'));
    dir = join(root, 'pki');
    paths = pki.pkiPaths(dir);
    await pki.initCa(dir, { cn: 'Test Truck CA' });
    await pki.issueServer(dir, { host: 'gw.test', dns: ['localhost'], ips: ['127.0.0.1', '::1'] });
    await pki.issueClient(dir, { name: 'scanner-1' });
    ca = cert(paths.caCert);
  });
  after(() => rmSync(root, { recursive: true, force: true }));

  describe('init', () => {
    it('creates a self-signed ECDSA P-256 CA with CA:TRUE and keyCertSign/cRLSign', () => {
      expect(ca.ca).to.equal(true);
      expect(ca.subject).to.equal('CN=Test Truck CA');
      expect(ca.checkIssued(ca)).to.equal(true);
      expect(ca.verify(ca.publicKey)).to.equal(true);
      expect(ca.publicKey.asymmetricKeyType).to.equal('ec');
      expect(ca.publicKey.asymmetricKeyDetails?.namedCurve).to.equal('prime256v1');
      const r = openssl(['x509', '-in', paths.caCert, '-noout', '-ext', 'basicConstraints,keyUsage']);
      expect(r.code, r.out).to.equal(0);
      expect(r.out).to.match(/Basic Constraints: critical\s+CA:TRUE/);
      expect(r.out).to.match(/Key Usage: critical\s+.*Certificate Sign, CRL Sign/);
    });

    it('writes the CA key with mode 0600, the CA certificate and CRL with 0644, and the key matches', () => {
      expect(mode(paths.caKey)).to.equal(0o600);
      expect(mode(paths.caCert)).to.equal(0o644);
      expect(mode(paths.crl)).to.equal(0o644);
      expect(ca.checkPrivateKey(createPrivateKey(readFileSync(paths.caKey)))).to.equal(true);
    });

    it('writes an empty CRL signed by the CA, with a next update', () => {
      const fresh = join(root, 'fresh');
      return pki.initCa(fresh, { now: new Date('2030-01-01T00:00:00Z'), crlDays: 30 }).then(() => {
        const crlPath = pki.pkiPaths(fresh).crl;
        const r = openssl(['crl', '-in', crlPath, '-noout', '-text', '-CAfile', pki.pkiPaths(fresh).caCert]);
        expect(r.code, r.out).to.equal(0);
        expect(r.out).to.match(/verify OK/);
        expect(r.out).to.match(/No Revoked Certificates/);
        expect(r.out).to.match(/Next Update: Jan 31 00:00:00 2030 GMT/);
        expect(crlNextUpdate(readFileSync(crlPath, 'utf8'))?.toISOString()).to.equal('2030-01-31T00:00:00.000Z');
      });
    });

    it('refuses to replace an existing CA', async () => {
      const before = readFileSync(paths.caKey, 'utf8');
      await rejects(pki.initCa(dir), /already holds a CA/);
      expect(readFileSync(paths.caKey, 'utf8')).to.equal(before);
    });

    it('creates an RSA CA with --rsa that signs an ECDSA leaf OpenSSL accepts', async () => {
      const d = join(root, 'rsa');
      await pki.initCa(d, { algorithm: 'rsa' });
      const rsaCa = cert(pki.pkiPaths(d).caCert);
      expect(rsaCa.publicKey.asymmetricKeyType).to.equal('rsa');
      expect(rsaCa.publicKey.asymmetricKeyDetails?.modulusLength).to.equal(pki.RSA_BITS);
      const leaf = await pki.issueServer(d, { host: 'gw.test' });
      expect(new X509Certificate(leaf.certPem).verify(rsaCa.publicKey)).to.equal(true);
      const r = openssl(['verify', '-CAfile', pki.pkiPaths(d).caCert, '-purpose', 'sslserver', leaf.certPath]);
      expect(r.out).to.contain(': OK');
    });
  });

  describe('server certificate', () => {
    it('chains to the CA (node:crypto verify and checkIssued) with a key file of mode 0600', () => {
      const server = cert(paths.serverCert);
      expect(server.ca).to.equal(false);
      expect(server.checkIssued(ca)).to.equal(true);
      expect(server.verify(ca.publicKey)).to.equal(true);
      expect(server.checkPrivateKey(createPrivateKey(readFileSync(paths.serverKey)))).to.equal(true);
      expect(mode(paths.serverKey)).to.equal(0o600);
      expect(mode(paths.serverCert)).to.equal(0o644);
    });

    it('has SANs for its host names and addresses, and nothing else (checkHost/checkIP)', () => {
      const server = cert(paths.serverCert);
      expect(server.subject).to.equal('CN=gw.test');
      expect(server.checkHost('gw.test')).to.equal('gw.test');
      expect(server.checkHost('localhost')).to.equal('localhost');
      expect(server.checkIP('127.0.0.1')).to.equal('127.0.0.1');
      expect(server.checkIP('::1')).to.not.equal(undefined);
      expect(server.checkHost('evil.test')).to.equal(undefined);
      expect(server.checkIP('10.0.0.9')).to.equal(undefined);
    });

    it('is for serverAuth only', () => {
      expect(cert(paths.serverCert).keyUsage).to.deep.equal(['1.3.6.1.5.5.7.3.1']);
      expect(openssl(['verify', '-CAfile', paths.caCert, '-purpose', 'sslserver', '-verify_hostname', 'gw.test', paths.serverCert]).out).to.contain(': OK');
      expect(openssl(['verify', '-CAfile', paths.caCert, '-purpose', 'sslclient', paths.serverCert]).out).to.match(/certificate purpose/);
    });

    it('takes an IP address as --host as an IP SAN', async () => {
      const d = join(root, 'ip-host');
      await pki.initCa(d);
      const r = await pki.issueServer(d, { host: '192.168.7.1' });
      const c = new X509Certificate(r.certPem);
      expect(c.checkIP('192.168.7.1')).to.equal('192.168.7.1');
      expect(c.subjectAltName).to.equal('IP Address:192.168.7.1');
    });

    it('rejects bad host names and addresses', async () => {
      await rejects(pki.issueServer(dir, { host: 'bad_host!' }), /not a valid DNS name/);
      await rejects(pki.issueServer(dir, { host: 'gw.test', ips: ['300.1.1.1'] }), /not an IP address/);
      await rejects(pki.issueServer(dir, { host: 'gw.test', days: 0 }), /days must be/);
    });

    it('does not verify against another CA', async () => {
      const other = join(root, 'other');
      await pki.initCa(other);
      expect(cert(paths.serverCert).verify(cert(pki.pkiPaths(other).caCert).publicKey)).to.equal(false);
    });
  });

  describe('client certificates', () => {
    it('has CN = NAME, clientAuth, chains to the CA, key 0600', () => {
      const p = pki.clientPaths(dir, 'scanner-1');
      const c = cert(p.cert);
      expect(c.subject).to.equal('CN=scanner-1');
      expect(c.keyUsage).to.deep.equal(['1.3.6.1.5.5.7.3.2']);
      expect(c.verify(ca.publicKey)).to.equal(true);
      expect(c.checkPrivateKey(createPrivateKey(readFileSync(p.key)))).to.equal(true);
      expect(mode(p.key)).to.equal(0o600);
      expect(openssl(['verify', '-CAfile', paths.caCert, '-purpose', 'sslclient', p.cert]).out).to.contain(': OK');
    });

    it('refuses names that could be paths or widen ACL patterns', async () => {
      for (const bad of ['a/b', 'x+y', 'dev#', '.hidden', '', 'a b', 'x'.repeat(65)]) {
        await rejects(pki.issueClient(dir, { name: bad }), /not a valid certificate name/);
      }
      expect(() => pki.checkClientName('dev@site_2.a-b')).to.not.throw();
    });

    it('refuses a second valid certificate for the same name', async () => {
      await rejects(pki.issueClient(dir, { name: 'scanner-1' }), /already has a valid certificate/);
    });

    it('never outlives the CA', async () => {
      const d = join(root, 'short');
      await pki.initCa(d, { days: 10 });
      const r = await pki.issueClient(d, { name: 'dev', days: 825 });
      expect(Date.parse(r.entry.notAfter)).to.be.at.most(Date.parse(cert(pki.pkiPaths(d).caCert).validTo));
    });

    it('uses the injected clock', async () => {
      const d = join(root, 'clock');
      const now = new Date('2031-06-01T12:00:00Z');
      await pki.initCa(d, { now });
      const r = await pki.issueClient(d, { name: 'dev', days: 90, now });
      expect(r.entry.notAfter).to.equal(new Date(now.getTime() + 90 * DAY).toISOString());
      expect(r.entry.issuedAt).to.equal(now.toISOString());
    });
  });

  describe('signing a CSR', () => {
    it('signs an openssl CSR after verifying it: CN and key from the request, requested extensions ignored', async () => {
      const { csr, keyPath } = opensslCsr(root, 'door-1', undefined, ['-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'subjectAltName=DNS:evil.test']);
      const r = await pki.signClientCsr(dir, csr);
      expect(r.keyPath).to.equal(undefined);
      const c = new X509Certificate(r.certPem);
      expect(c.subject).to.equal('CN=door-1');
      expect(c.ca).to.equal(false);
      expect(c.subjectAltName).to.equal(undefined);
      expect(c.keyUsage).to.deep.equal(['1.3.6.1.5.5.7.3.2']);
      expect(c.verify(ca.publicKey)).to.equal(true);
      expect(c.checkPrivateKey(createPrivateKey(readFileSync(keyPath)))).to.equal(true);
      expect(r.entry.fromCsr).to.equal(true);
    });

    it('accepts an RSA 2048 request and a --name override', async () => {
      const { csr } = opensslCsr(root, 'rsa-dev', ['-newkey', 'rsa:2048']);
      const r = await pki.signClientCsr(dir, csr, { name: 'rsa-device' });
      expect(new X509Certificate(r.certPem).subject).to.equal('CN=rsa-device');
    });

    it('refuses a request whose subject was altered after signing', async () => {
      const { csr } = opensslCsr(root, 'door-7');
      const der = pemToDer(csr);
      const at = der.indexOf(Buffer.from('door-7'));
      expect(at).to.be.greaterThan(0);
      der.write('door-8', at, 'latin1');
      await rejects(pki.signClientCsr(dir, derToPem('CERTIFICATE REQUEST', der)), /signature does not verify/);
    });

    it('refuses a request with a corrupted signature', async () => {
      const { csr } = opensslCsr(root, 'door-9');
      const der = pemToDer(csr);
      der[der.length - 5] = (der[der.length - 5] ?? 0) ^ 0x01;
      await rejects(pki.signClientCsr(dir, derToPem('CERTIFICATE REQUEST', der)), /signature does not verify/);
    });

    it('refuses weak keys, garbage and names that are not certificate names', async () => {
      await rejects(pki.signClientCsr(dir, opensslCsr(root, 'weak', ['-newkey', 'rsa:1024']).csr), /not accepted/);
      await rejects(pki.signClientCsr(dir, 'hello'), /not a PEM certificate request/);
      await rejects(pki.signClientCsr(dir, derToPem('CERTIFICATE REQUEST', Buffer.from([0x30, 0x05, 1, 2]))), /malformed request/);
      await rejects(pki.signClientCsr(dir, opensslCsr(root, 'bad name').csr), /not a valid certificate name/);
    });
  });

  describe('list', () => {
    it('lists every certificate with its kind, expiry and days left', () => {
      const list = pki.listCerts(dir);
      expect(list.map((c) => [c.kind, c.cn])).to.deep.include.members([
        ['ca', 'Test Truck CA'],
        ['server', 'gw.test'],
        ['client', 'scanner-1'],
        ['client', 'door-1'],
      ]);
      const server = list.find((c) => c.kind === 'server')!;
      expect(server.serial).to.equal(cert(paths.serverCert).serialNumber);
      expect(server.daysLeft).to.be.within(pki.DEFAULT_LEAF_DAYS - 1, pki.DEFAULT_LEAF_DAYS);
      expect(server.status).to.equal('valid');
      const later = pki.listCerts(dir, new Date(Date.now() + (pki.DEFAULT_LEAF_DAYS - 10) * DAY));
      expect(later.find((c) => c.kind === 'server')?.status).to.equal('expiring');
      const after = pki.listCerts(dir, new Date(Date.now() + (pki.DEFAULT_LEAF_DAYS + 1) * DAY));
      expect(after.find((c) => c.kind === 'server')?.status).to.equal('expired');
    });
  });

  describe('revoke and the CRL', () => {
    let revokedSerial: string;

    it('revokes by name and puts the serial in a CRL signed by the CA', async () => {
      revokedSerial = cert(pki.clientPaths(dir, 'scanner-1').cert).serialNumber;
      const done = await pki.revoke(dir, 'scanner-1');
      expect(done.map((e) => e.serial)).to.deep.equal([revokedSerial]);
      const r = openssl(['crl', '-in', paths.crl, '-noout', '-text', '-CAfile', paths.caCert]);
      expect(r.code, r.out).to.equal(0);
      expect(r.out).to.match(/verify OK/);
      expect(r.out).to.contain(`Serial Number: ${revokedSerial}`);
      expect(r.out).to.match(/Next Update: /);
      expect(crlNextUpdate(readFileSync(paths.crl, 'utf8'))!.getTime()).to.be.closeTo(Date.now() + pki.DEFAULT_CRL_DAYS * DAY, 60_000);
      expect(pki.listCerts(dir).find((c) => c.serial === revokedSerial)?.status).to.equal('revoked');
    });

    it('openssl verify -crl_check says "certificate revoked" for it and OK for the others', () => {
      const bad = openssl(['verify', '-crl_check', '-CRLfile', paths.crl, '-CAfile', paths.caCert, pki.clientPaths(dir, 'scanner-1').cert]);
      expect(bad.code).to.not.equal(0);
      expect(bad.out).to.contain('certificate revoked');
      const good = openssl(['verify', '-crl_check', '-CRLfile', paths.crl, '-CAfile', paths.caCert, pki.clientPaths(dir, 'door-1').cert, paths.serverCert]);
      expect(good.code, good.out).to.equal(0);
    });

    it('revokes by serial in any case, with or without colons', async () => {
      const serial = cert(pki.clientPaths(dir, 'rsa-device').cert).serialNumber;
      const colons = (serial.toLowerCase().match(/../g) ?? []).join(':');
      await pki.revoke(dir, colons);
      expect(openssl(['crl', '-in', paths.crl, '-noout', '-text']).out).to.contain(`Serial Number: ${serial}`);
      expect(openssl(['crl', '-in', paths.crl, '-noout', '-text']).out).to.contain(`Serial Number: ${revokedSerial}`);
    });

    it('refuses unknown names, the CA and a second revocation', async () => {
      await rejects(pki.revoke(dir, 'nobody'), /no certificate named/);
      await rejects(pki.revoke(dir, ca.serialNumber), /CA cannot revoke itself/);
      await rejects(pki.revoke(dir, 'scanner-1'), /already revoked/);
    });

    it('allows a new certificate for a revoked name', async () => {
      const r = await pki.issueClient(dir, { name: 'scanner-1' });
      expect(r.entry.serial).to.not.equal(revokedSerial);
      // The revoked one is still on file under issued/.
      expect(cert(join(dir, 'issued', `${revokedSerial}.crt`)).serialNumber).to.equal(revokedSerial);
      await pki.revoke(dir, r.entry.serial);
    });
  });
});

describe('security/pki: TLS handshakes with issued certificates', function () {
  this.timeout(60000);
  let root: string;
  let dir: string;
  let paths: pki.PkiPaths;
  let servers: tls.Server[] = [];

  before(async () => {
    root = mkdtempSync(join(tmpdir(), 'convoy-pki-tls-'));
    dir = join(root, 'pki');
    paths = pki.pkiPaths(dir);
    await pki.initCa(dir);
    await pki.issueServer(dir, { host: 'gw.test', ips: ['127.0.0.1'] });
    await pki.issueClient(dir, { name: 'scanner-1' });
    await pki.issueClient(dir, { name: 'scale-2' });
    const other = join(root, 'other');
    await pki.initCa(other);
    await pki.issueClient(other, { name: 'intruder' });
  });
  afterEach(async () => {
    await Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve))));
    servers = [];
  });
  after(() => rmSync(root, { recursive: true, force: true }));

  interface Listener {
    port: number;
    /** Why the server refused handshakes (only known with reject = false: node then reports it). */
    refusals: string[];
  }

  /**
   * A mutual-TLS server greeting each verified client by its certificate CN. With reject (as a
   * listener is configured) node:tls drops an unverified client during the handshake; without it
   * the server sees authorizationError and closes the connection itself.
   */
  async function listen(withCrl: boolean, reject = true): Promise<Listener> {
    const refusals: string[] = [];
    const server = tls.createServer(
      {
        key: readFileSync(paths.serverKey),
        cert: readFileSync(paths.serverCert),
        ca: readFileSync(paths.caCert),
        ...(withCrl ? { crl: readFileSync(paths.crl) } : {}),
        requestCert: true,
        rejectUnauthorized: reject,
        minVersion: 'TLSv1.2',
      },
      (socket) => {
        if (!socket.authorized) {
          refusals.push(String(socket.authorizationError));
          socket.destroy();
          return;
        }
        const peer = socket.getPeerCertificate();
        socket.end(`hello ${String(peer.subject.CN)}`);
      },
    );
    servers.push(server);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return { port: (server.address() as AddressInfo).port, refusals };
  }

  /** Resolves with what the server said, or rejects with the client's error. */
  function connect(port: number, client: { cert: string; key: string } | undefined, servername = 'gw.test'): Promise<string> {
    return new Promise((resolve, reject) => {
      const s = tls.connect({
        host: '127.0.0.1',
        port,
        servername,
        ca: readFileSync(paths.caCert),
        ...(client ? { cert: readFileSync(client.cert), key: readFileSync(client.key) } : {}),
      });
      let data = '';
      s.setEncoding('utf8');
      s.on('data', (d: string) => (data += d));
      s.on('error', reject);
      s.on('close', () => (data ? resolve(data) : reject(new Error('closed without a greeting'))));
    });
  }

  it('completes a mutual TLS handshake: the client verifies the server name, the server sees the client CN', async () => {
    const l = await listen(false);
    expect(await connect(l.port, pki.clientPaths(dir, 'scanner-1'))).to.equal('hello scanner-1');
  });

  it('the client refuses the server under a name not in its SANs', async () => {
    const l = await listen(false);
    try {
      await connect(l.port, pki.clientPaths(dir, 'scanner-1'), 'other.test');
      expect.fail('connected');
    } catch (e) {
      expect((e as NodeJS.ErrnoException).code).to.equal('ERR_TLS_CERT_ALTNAME_INVALID');
    }
  });

  it('the server refuses a client certificate from another CA, and no certificate at all', async () => {
    const l = await listen(false, false);
    await connect(l.port, pki.clientPaths(join(root, 'other'), 'intruder')).then(
      () => expect.fail('connected'),
      () => undefined,
    );
    await connect(l.port, undefined).then(
      () => expect.fail('connected'),
      () => undefined,
    );
    expect(l.refusals).to.deep.equal(['UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'UNABLE_TO_GET_ISSUER_CERT']);
  });

  it('after revoke, a listener with the CRL refuses that client and still accepts the others', async () => {
    await pki.revoke(dir, 'scanner-1');
    const l = await listen(true);
    await connect(l.port, pki.clientPaths(dir, 'scanner-1')).then(
      () => expect.fail('a revoked client connected'),
      () => undefined,
    );
    expect(await connect(l.port, pki.clientPaths(dir, 'scale-2'))).to.equal('hello scale-2');
    // The reason, as OpenSSL gives it.
    const seen = await listen(true, false);
    await connect(seen.port, pki.clientPaths(dir, 'scanner-1')).then(
      () => expect.fail('a revoked client got a greeting'),
      () => undefined,
    );
    expect(seen.refusals).to.deep.equal(['CERT_REVOKED']);
  });

  it('a CRL from another CA does not count: the listener refuses until its own CA\'s CRL is back', async () => {
    const d = join(root, 'empty-crl');
    await pki.initCa(d);
    writeFileSync(paths.crl, readFileSync(pki.pkiPaths(d).crl));
    const l = await listen(true);
    await connect(l.port, pki.clientPaths(dir, 'scale-2')).then(
      () => expect.fail('connected without a CRL from its CA'),
      () => undefined,
    );
    await pki.writeCrl(dir);
    const l2 = await listen(true);
    expect(await connect(l2.port, pki.clientPaths(dir, 'scale-2'))).to.equal('hello scale-2');
  });
});
