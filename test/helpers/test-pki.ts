// A throw-away PKI made with the real `openssl` CLI (ECDSA P-256): a CA with its database, two
// server certificates (for reload tests), a good, an expired and a revoked client certificate, a
// CRL listing the revoked one, and a second CA with a client certificate of its own (wrong CA).
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** PEM file paths of one certificate and its key. */
export interface CertFiles {
  cert: string;
  key: string;
  /** Common name of the subject. */
  cn: string;
}

export interface TestPki {
  dir: string;
  /** The CA that signs the server and the good/expired/revoked client certificates. */
  ca: string;
  crl: string;
  server: CertFiles;
  /** Another server certificate of the same CA (different CN and serial), for reload tests. */
  server2: CertFiles;
  client: CertFiles;
  expiredClient: CertFiles;
  revokedClient: CertFiles;
  /** A client certificate from an unrelated CA. */
  wrongCaClient: CertFiles & { ca: string };
  /** Issues another client certificate from the CA. */
  issueClient(cn: string): CertFiles;
  /** Revokes a certificate of the CA and rewrites the CRL file (`crl`) in place. */
  revoke(cert: string): void;
  /** File contents, for clients that take PEM data rather than paths. */
  read(path: string): Buffer;
  cleanup(): void;
}

function openssl(dir: string, args: string[]): string {
  try {
    return execFileSync('openssl', args, { cwd: dir, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`openssl ${args.join(' ')} failed: ${e.stderr ?? e.message}`, { cause: err });
  }
}

const CA_CONF = (dir: string): string => `
[ ca ]
default_ca = test_ca

[ test_ca ]
dir = ${dir}
database = $dir/index.txt
new_certs_dir = $dir/newcerts
serial = $dir/serial
crlnumber = $dir/crlnumber
default_md = sha256
default_days = 30
default_crl_days = 30
policy = policy_any
unique_subject = no
copy_extensions = none
email_in_dn = no

[ policy_any ]
commonName = supplied

[ req ]
distinguished_name = req_dn
prompt = no

[ req_dn ]
CN = unused

[ v3_ca ]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash

[ server_ext ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
authorityKeyIdentifier = keyid
subjectKeyIdentifier = hash

[ client_ext ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
authorityKeyIdentifier = keyid
subjectKeyIdentifier = hash
`;

/** A CA directory (database, serial, CRL number) with a self-signed P-256 certificate. */
function makeCa(root: string, name: string, cn: string): { dir: string; conf: string; cert: string; key: string } {
  const dir = join(root, name);
  mkdirSync(join(dir, 'newcerts'), { recursive: true });
  writeFileSync(join(dir, 'index.txt'), '');
  writeFileSync(join(dir, 'serial'), '1000\n');
  writeFileSync(join(dir, 'crlnumber'), '01\n');
  const conf = join(dir, 'ca.cnf');
  writeFileSync(conf, CA_CONF(dir));
  const key = join(dir, 'ca.key');
  const cert = join(dir, 'ca.crt');
  openssl(dir, ['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', key]);
  openssl(dir, ['req', '-config', conf, '-new', '-x509', '-key', key, '-out', cert, '-days', '30',
    '-subj', `/CN=${cn}`, '-extensions', 'v3_ca', '-sha256']);
  return { dir, conf, cert, key };
}

function issue(
  ca: { dir: string; conf: string; cert: string; key: string },
  out: string, cn: string, ext: 'server_ext' | 'client_ext', dates?: { start: string; end: string },
): CertFiles {
  const key = join(out, `${cn}.key`);
  const csr = join(out, `${cn}.csr`);
  const cert = join(out, `${cn}.crt`);
  openssl(out, ['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', key]);
  openssl(out, ['req', '-config', ca.conf, '-new', '-key', key, '-out', csr, '-subj', `/CN=${cn}`]);
  const validity = dates ? ['-startdate', dates.start, '-enddate', dates.end] : ['-days', '30'];
  openssl(out, ['ca', '-batch', '-config', ca.conf, '-notext', '-in', csr, '-out', cert, '-extensions', ext,
    '-cert', ca.cert, '-keyfile', ca.key, ...validity]);
  return { cert, key, cn };
}

/** Makes the whole PKI in a fresh temporary directory (about a second of openssl runs). */
export function createTestPki(): TestPki {
  const dir = mkdtempSync(join(tmpdir(), 'convoy-pki-'));
  const ca = makeCa(dir, 'ca', 'Convoy Test CA');
  const other = makeCa(dir, 'other-ca', 'Some Other CA');
  const server = issue(ca, dir, 'convoy-test-server', 'server_ext');
  const server2 = issue(ca, dir, 'convoy-test-server-2', 'server_ext');
  const client = issue(ca, dir, 'truck-sensor-1', 'client_ext');
  const expiredClient = issue(ca, dir, 'truck-expired', 'client_ext', { start: '20200101000000Z', end: '20200201000000Z' });
  const revokedClient = issue(ca, dir, 'truck-revoked', 'client_ext');
  const wrong = issue(other, dir, 'truck-foreign', 'client_ext');
  const crl = join(dir, 'crl.pem');
  const revoke = (cert: string): void => {
    openssl(dir, ['ca', '-batch', '-config', ca.conf, '-cert', ca.cert, '-keyfile', ca.key, '-revoke', cert]);
    openssl(dir, ['ca', '-batch', '-config', ca.conf, '-cert', ca.cert, '-keyfile', ca.key, '-gencrl', '-out', crl]);
  };
  revoke(revokedClient.cert);
  return {
    dir,
    ca: ca.cert,
    crl,
    server,
    server2,
    client,
    expiredClient,
    revokedClient,
    wrongCaClient: { ...wrong, ca: other.cert },
    issueClient: (cn) => issue(ca, dir, cn, 'client_ext'),
    revoke,
    read: (path) => readFileSync(path),
    cleanup: () => rmSync(dir, { recursive: true, force: true }),
  };
}
