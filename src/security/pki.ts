// Local PKI for `convoy certs`: a CA, the gateway's server certificate, client certificates for LAN
// devices (from a name or a CSR), an index of everything issued, and a CRL.
//
// Certificates, CSRs and CRLs are *built* with @peculiar/x509 over WebCrypto; everything that is
// *checked* (CSR signatures, the CA key against the CA certificate, every issued certificate against
// the CA) is checked by OpenSSL through node:crypto, never by the JS library.
//
// Layout of a PKI directory (default ./pki):
//   ca.key               CA private key, PKCS#8 PEM, mode 0600
//   ca.crt               CA certificate, mode 0644
//   crl.pem              CRL signed by the CA (regenerated on every revoke), mode 0644
//   index.json           every certificate issued: serial, CN, kind, validity, revocation
//   server.key/.crt      the gateway's server certificate (re-issuing replaces them)
//   clients/NAME.key/.crt  client certificates (no .key when issued from a CSR)
//   issued/SERIAL.crt    a copy of every certificate issued, kept after replacement or revocation
import { createPrivateKey, createPublicKey, randomBytes, verify as cryptoVerify, webcrypto, X509Certificate, type KeyObject } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { dirname, join } from 'node:path';
import type * as X509 from '@peculiar/x509';
import { derChildren, derElement, type DerElement } from './cert-expiry.js';

// @peculiar/x509's dependency tsyringe needs the Reflect metadata API at import time. Only the
// `convoy certs` command loads this module, so the running broker never carries the polyfill.
await import('reflect-metadata');
const x509: typeof X509 = await import('@peculiar/x509');
x509.cryptoProvider.set(webcrypto);

type CryptoKey = webcrypto.CryptoKey;
type CryptoKeyPair = webcrypto.CryptoKeyPair;

const DAY_MS = 86_400_000;
/** Leaf certificates start this much in the past: truck clocks drift. */
const BACKDATE_MS = 3_600_000;

export const DEFAULT_PKI_DIR = './pki';
export const DEFAULT_CA_CN = 'Convoy Local CA';
export const DEFAULT_CA_DAYS = 3650;
export const DEFAULT_LEAF_DAYS = 825;
/**
 * A TLS listener with a CRL refuses every client once the CRL's nextUpdate has passed (OpenSSL:
 * "CRL has expired"), so the CRL is valid for a long time; `convoy certs crl` re-signs it.
 */
export const DEFAULT_CRL_DAYS = 365;
export const RSA_BITS = 3072;

/** A problem the operator must fix (bad name, missing CA, ...): the CLI prints it and exits 1. */
export class PkiError extends Error {
  override name = 'PkiError';
}

export type KeyAlgorithm = 'ec' | 'rsa';
export type CertKind = 'ca' | 'server' | 'client';

export interface IndexEntry {
  /** Upper-case hex, as node's X509Certificate.serialNumber prints it. */
  serial: string;
  cn: string;
  kind: CertKind;
  notBefore: string;
  notAfter: string;
  issuedAt: string;
  /** The copy under issued/, relative to the PKI directory. */
  file: string;
  /** Subject alternative names as node prints them ("DNS:gw, IP Address:10.0.0.1"). */
  san?: string;
  fromCsr?: boolean;
  revokedAt?: string;
}

export interface PkiIndex {
  version: 1;
  /** Number of the last CRL written (the CRL Number extension). */
  crlNumber: number;
  certs: IndexEntry[];
}

export interface PkiPaths {
  dir: string;
  caKey: string;
  caCert: string;
  crl: string;
  index: string;
  serverKey: string;
  serverCert: string;
  clientsDir: string;
  issuedDir: string;
}

export function pkiPaths(dir: string = DEFAULT_PKI_DIR): PkiPaths {
  return {
    dir,
    caKey: join(dir, 'ca.key'),
    caCert: join(dir, 'ca.crt'),
    crl: join(dir, 'crl.pem'),
    index: join(dir, 'index.json'),
    serverKey: join(dir, 'server.key'),
    serverCert: join(dir, 'server.crt'),
    clientsDir: join(dir, 'clients'),
    issuedDir: join(dir, 'issued'),
  };
}

export function clientPaths(dir: string, name: string): { key: string; cert: string } {
  const p = pkiPaths(dir);
  return { key: join(p.clientsDir, `${name}.key`), cert: join(p.clientsDir, `${name}.crt`) };
}

/** What every issuing function returns. */
export interface Issued {
  entry: IndexEntry;
  /** Where the certificate (and the key, when this PKI generated it) was written. */
  certPath: string;
  keyPath?: string;
  certPem: string;
}

export interface CommonOptions {
  days?: number;
  /** Injected clock for tests. */
  now?: Date;
  /** Key type for a generated key pair. Default 'ec' (ECDSA P-256). */
  algorithm?: KeyAlgorithm;
}

// ---------------------------------------------------------------------------------------------
// Names

/**
 * Names that end up as a CN, a file name and (with use_identity_as_username) an MQTT user name:
 * letters, digits and . _ @ - only, so none of them can contain "/", "+" or "#".
 */
const NAME_RE = /^[A-Za-z0-9_@-][A-Za-z0-9._@-]{0,63}$/;

export function checkClientName(name: string): void {
  if (!NAME_RE.test(name)) {
    throw new PkiError(`"${name}" is not a valid certificate name: use 1 to 64 letters, digits, ".", "_", "@" or "-", not starting with "."`);
  }
}

const DNS_LABEL = /^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$/;

export function checkDnsName(name: string): void {
  const labels = name.split('.');
  const ok =
    name.length <= 253 &&
    labels.every((l, i) => DNS_LABEL.test(l) || (i === 0 && l === '*' && labels.length > 2));
  if (!ok) throw new PkiError(`"${name}" is not a valid DNS name`);
}

function checkDays(days: number | undefined, fallback: number): number {
  const d = days ?? fallback;
  if (!Number.isInteger(d) || d < 1 || d > 36500) throw new PkiError(`days must be a whole number from 1 to 36500, not ${String(days)}`);
  return d;
}

// ---------------------------------------------------------------------------------------------
// Files

/** Writes atomically (temporary file + rename) with an exact mode, whatever the umask. */
function writeFileMode(path: string, data: string, mode: number): void {
  mkdirSync(dirname(path), { recursive: true });
  const tmp = `${path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  writeFileSync(tmp, data, { mode, flag: 'wx' });
  chmodSync(tmp, mode);
  renameSync(tmp, path);
}

export const writeKeyFile = (path: string, pem: string): void => writeFileMode(path, pem, 0o600);
export const writeCertFile = (path: string, pem: string): void => writeFileMode(path, pem, 0o644);

export function readIndex(dir: string): PkiIndex {
  const p = pkiPaths(dir).index;
  if (!existsSync(p)) throw new PkiError(`no PKI in ${dir}: run "convoy certs init --dir ${dir}" first`);
  const parsed = JSON.parse(readFileSync(p, 'utf8')) as PkiIndex;
  if (parsed.version !== 1 || !Array.isArray(parsed.certs)) throw new PkiError(`${p}: not a Convoy PKI index`);
  return parsed;
}

function writeIndex(dir: string, index: PkiIndex): void {
  writeFileMode(pkiPaths(dir).index, JSON.stringify(index, null, 2) + '\n', 0o644);
}

// ---------------------------------------------------------------------------------------------
// Keys

interface SignerAlgorithm {
  /** WebCrypto import/generate parameters. */
  key: webcrypto.EcKeyImportParams | webcrypto.RsaHashedImportParams;
  /** Signature algorithm for certificates and CRLs. */
  sign: { name: string; hash: string };
}

const EC_P256: SignerAlgorithm = { key: { name: 'ECDSA', namedCurve: 'P-256' }, sign: { name: 'ECDSA', hash: 'SHA-256' } };
const EC_P384: SignerAlgorithm = { key: { name: 'ECDSA', namedCurve: 'P-384' }, sign: { name: 'ECDSA', hash: 'SHA-384' } };
const RSA_SHA256: SignerAlgorithm = {
  key: { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' },
  sign: { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' },
};

async function generateKeyPair(algorithm: KeyAlgorithm): Promise<{ keys: CryptoKeyPair; signer: SignerAlgorithm; pem: string }> {
  const signer = algorithm === 'rsa' ? RSA_SHA256 : EC_P256;
  const params =
    algorithm === 'rsa'
      ? { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256', modulusLength: RSA_BITS, publicExponent: new Uint8Array([1, 0, 1]) }
      : { name: 'ECDSA', namedCurve: 'P-256' };
  const keys = (await webcrypto.subtle.generateKey(params, true, ['sign', 'verify']));
  const der = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey));
  const pem = createPrivateKey({ key: der, format: 'der', type: 'pkcs8' }).export({ type: 'pkcs8', format: 'pem' }).toString();
  return { keys, signer, pem };
}

function signerFor(key: KeyObject): SignerAlgorithm {
  if (key.asymmetricKeyType === 'rsa') return RSA_SHA256;
  if (key.asymmetricKeyType === 'ec') {
    const curve = key.asymmetricKeyDetails?.namedCurve;
    if (curve === 'prime256v1') return EC_P256;
    if (curve === 'secp384r1') return EC_P384;
  }
  throw new PkiError(`unsupported CA key type ${key.asymmetricKeyType ?? '?'}: use ECDSA P-256/P-384 or RSA`);
}

// ---------------------------------------------------------------------------------------------
// The CA

interface LoadedCa {
  cert: X509Certificate;
  /** Parsed by the builder library, only to copy the subject name into issued certificates. */
  builderCert: X509.X509Certificate;
  key: CryptoKey;
  signer: SignerAlgorithm;
}

async function loadCa(dir: string): Promise<LoadedCa> {
  const p = pkiPaths(dir);
  if (!existsSync(p.caCert) || !existsSync(p.caKey)) throw new PkiError(`no CA in ${dir}: run "convoy certs init --dir ${dir}" first`);
  const pem = readFileSync(p.caCert, 'utf8');
  const cert = new X509Certificate(pem);
  const keyObject = createPrivateKey(readFileSync(p.caKey));
  if (!cert.checkPrivateKey(keyObject)) throw new PkiError(`${p.caKey} does not belong to ${p.caCert}`);
  if (!cert.ca) throw new PkiError(`${p.caCert} is not a CA certificate`);
  const signer = signerFor(keyObject);
  const der = keyObject.export({ type: 'pkcs8', format: 'der' });
  const key = await webcrypto.subtle.importKey('pkcs8', der, signer.key, false, ['sign']);
  return { cert, builderCert: new x509.X509Certificate(pem), key, signer };
}

/** A positive 127-bit random serial (first byte 0x01-0x7f so the DER INTEGER needs no padding). */
function newSerial(): string {
  const b = randomBytes(16);
  b[0] = ((b[0] ?? 0) & 0x7f) | 0x01;
  return b.toString('hex').toUpperCase();
}

function certDates(cert: X509Certificate): { notBefore: Date; notAfter: Date } {
  const notBefore = new Date(cert.validFrom);
  const notAfter = new Date(cert.validTo);
  if (Number.isNaN(notBefore.getTime()) || Number.isNaN(notAfter.getTime())) throw new PkiError('certificate has unreadable validity dates');
  return { notBefore, notAfter };
}

/** Common name of a certificate's subject as node prints it ("CN=name"). */
export function commonName(cert: X509Certificate): string {
  for (const line of cert.subject.split('\n')) if (line.startsWith('CN=')) return line.slice(3);
  return '';
}

export interface InitOptions extends CommonOptions {
  cn?: string;
  crlDays?: number;
}

/** Creates the CA, an empty CRL and the index. Refuses to replace an existing CA. */
export async function initCa(dir: string, opts: InitOptions = {}): Promise<Issued> {
  const p = pkiPaths(dir);
  if (existsSync(p.caKey) || existsSync(p.caCert) || existsSync(p.index)) {
    throw new PkiError(`${dir} already holds a CA: replacing it would invalidate every certificate it issued; remove the directory to start over`);
  }
  const cn = opts.cn ?? DEFAULT_CA_CN;
  if (cn.length < 1 || cn.length > 64) throw new PkiError('the CA name must be 1 to 64 characters');
  const days = checkDays(opts.days, DEFAULT_CA_DAYS);
  const now = opts.now ?? new Date();
  const { keys, signer, pem: keyPem } = await generateKeyPair(opts.algorithm ?? 'ec');
  const serial = newSerial();
  const built = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial,
    name: [{ CN: [cn] }],
    notBefore: new Date(now.getTime() - BACKDATE_MS),
    notAfter: new Date(now.getTime() + days * DAY_MS),
    signingAlgorithm: signer.sign,
    keys,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign | x509.KeyUsageFlags.digitalSignature, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  const certPem = built.toString('pem') + '\n';
  const cert = new X509Certificate(certPem);
  // OpenSSL checks what the library built.
  if (!cert.verify(cert.publicKey) || !cert.checkPrivateKey(createPrivateKey(keyPem))) throw new PkiError('internal error: the new CA certificate does not verify');

  mkdirSync(dir, { recursive: true });
  writeKeyFile(p.caKey, keyPem);
  writeCertFile(p.caCert, certPem);
  const entry = recordEntry(dir, cert, 'ca', certPem, now);
  const index: PkiIndex = { version: 1, crlNumber: 0, certs: [entry] };
  writeIndex(dir, index);
  await writeCrl(dir, { now, ...(opts.crlDays === undefined ? {} : { crlDays: opts.crlDays }) });
  return { entry, certPath: p.caCert, keyPath: p.caKey, certPem };
}

function recordEntry(dir: string, cert: X509Certificate, kind: CertKind, certPem: string, now: Date, extra: Partial<IndexEntry> = {}): IndexEntry {
  const { notBefore, notAfter } = certDates(cert);
  const file = join('issued', `${cert.serialNumber}.crt`);
  writeCertFile(join(dir, file), certPem);
  return {
    serial: cert.serialNumber,
    cn: commonName(cert),
    kind,
    notBefore: notBefore.toISOString(),
    notAfter: notAfter.toISOString(),
    issuedAt: now.toISOString(),
    file,
    ...(cert.subjectAltName === undefined ? {} : { san: cert.subjectAltName }),
    ...extra,
  };
}

// ---------------------------------------------------------------------------------------------
// Issuing

interface LeafRequest {
  kind: 'server' | 'client';
  cn: string;
  publicKey: CryptoKey | ArrayBuffer;
  /** RSA keys also get keyEncipherment (TLS 1.2 RSA key exchange). */
  rsa: boolean;
  san?: X509.JsonGeneralNames;
  days: number;
  now: Date;
}

async function signLeaf(ca: LoadedCa, req: LeafRequest): Promise<{ cert: X509Certificate; pem: string }> {
  const notBefore = new Date(req.now.getTime() - BACKDATE_MS);
  let notAfter = new Date(req.now.getTime() + req.days * DAY_MS);
  // Never outlive the CA: OpenSSL would reject the chain once the CA expires anyway.
  const caNotAfter = certDates(ca.cert).notAfter;
  if (notAfter > caNotAfter) notAfter = caNotAfter;
  if (notAfter <= req.now) throw new PkiError('the CA has expired: create a new PKI');
  let usages = x509.KeyUsageFlags.digitalSignature;
  if (req.rsa) usages |= x509.KeyUsageFlags.keyEncipherment;
  const extensions: X509.Extension[] = [
    new x509.BasicConstraintsExtension(false, undefined, true),
    new x509.KeyUsagesExtension(usages, true),
    new x509.ExtendedKeyUsageExtension([req.kind === 'server' ? x509.ExtendedKeyUsage.serverAuth : x509.ExtendedKeyUsage.clientAuth], false),
    await x509.SubjectKeyIdentifierExtension.create(req.publicKey),
    await x509.AuthorityKeyIdentifierExtension.create(ca.builderCert),
  ];
  if (req.san && req.san.length > 0) extensions.push(new x509.SubjectAlternativeNameExtension(req.san, false));
  const built = await x509.X509CertificateGenerator.create({
    serialNumber: newSerial(),
    subject: [{ CN: [req.cn] }],
    issuer: ca.builderCert.subjectName,
    notBefore,
    notAfter,
    signingAlgorithm: ca.signer.sign,
    publicKey: req.publicKey,
    signingKey: ca.key,
    extensions,
  });
  const pem = built.toString('pem') + '\n';
  const cert = new X509Certificate(pem);
  if (!cert.checkIssued(ca.cert) || !cert.verify(ca.cert.publicKey)) throw new PkiError('internal error: the new certificate does not verify against the CA');
  return { cert, pem };
}

function addToIndex(dir: string, entry: IndexEntry): void {
  const index = readIndex(dir);
  index.certs.push(entry);
  writeIndex(dir, index);
}

export interface ServerOptions extends CommonOptions {
  /** The gateway's host name (CN and first SAN); an IP address becomes an IP SAN. */
  host: string;
  dns?: string[];
  ips?: string[];
}

/** Issues (or re-issues, replacing server.crt/server.key) the gateway's server certificate. */
export async function issueServer(dir: string, opts: ServerOptions): Promise<Issued> {
  const hostIsIp = isIP(opts.host) !== 0;
  if (!hostIsIp) checkDnsName(opts.host);
  const dns = [...new Set([...(hostIsIp ? [] : [opts.host]), ...(opts.dns ?? [])])];
  const ips = [...new Set([...(hostIsIp ? [opts.host] : []), ...(opts.ips ?? [])])];
  dns.forEach(checkDnsName);
  for (const ip of ips) if (isIP(ip) === 0) throw new PkiError(`"${ip}" is not an IP address`);
  const days = checkDays(opts.days, DEFAULT_LEAF_DAYS);
  const now = opts.now ?? new Date();
  const ca = await loadCa(dir);
  const algorithm = opts.algorithm ?? 'ec';
  const { keys, pem: keyPem } = await generateKeyPair(algorithm);
  const san: X509.JsonGeneralNames = [...dns.map((value) => ({ type: 'dns' as const, value })), ...ips.map((value) => ({ type: 'ip' as const, value }))];
  const { cert, pem } = await signLeaf(ca, { kind: 'server', cn: opts.host, publicKey: keys.publicKey, rsa: algorithm === 'rsa', san, days, now });
  const p = pkiPaths(dir);
  writeKeyFile(p.serverKey, keyPem);
  writeCertFile(p.serverCert, pem);
  const entry = recordEntry(dir, cert, 'server', pem, now);
  addToIndex(dir, entry);
  return { entry, certPath: p.serverCert, keyPath: p.serverKey, certPem: pem };
}

function refuseDuplicateClient(dir: string, cn: string, now: Date): void {
  const live = readIndex(dir).certs.find((e) => e.kind === 'client' && e.cn === cn && !e.revokedAt && Date.parse(e.notAfter) > now.getTime());
  if (live) throw new PkiError(`client "${cn}" already has a valid certificate (serial ${live.serial}): revoke it first with "convoy certs revoke ${cn}"`);
}

export interface ClientOptions extends CommonOptions {
  name: string;
}

/** Generates a key pair and a client certificate (CN = name, clientAuth). */
export async function issueClient(dir: string, opts: ClientOptions): Promise<Issued> {
  checkClientName(opts.name);
  const days = checkDays(opts.days, DEFAULT_LEAF_DAYS);
  const now = opts.now ?? new Date();
  const ca = await loadCa(dir);
  refuseDuplicateClient(dir, opts.name, now);
  const algorithm = opts.algorithm ?? 'ec';
  const { keys, pem: keyPem } = await generateKeyPair(algorithm);
  const { cert, pem } = await signLeaf(ca, { kind: 'client', cn: opts.name, publicKey: keys.publicKey, rsa: algorithm === 'rsa', days, now });
  const out = clientPaths(dir, opts.name);
  writeKeyFile(out.key, keyPem);
  writeCertFile(out.cert, pem);
  const entry = recordEntry(dir, cert, 'client', pem, now);
  addToIndex(dir, entry);
  return { entry, certPath: out.cert, keyPath: out.key, certPem: pem };
}

export interface CsrOptions extends CommonOptions {
  /** Overrides the CN of the request. */
  name?: string;
}

/**
 * Signs a PKCS#10 request as a client certificate, after OpenSSL (node:crypto) has verified the
 * request's self-signature. Only the CN and the public key are taken from the request: any
 * extensions it asks for (CA:true, other names, usages) are ignored.
 */
export async function signClientCsr(dir: string, csrPem: string | Buffer, opts: CsrOptions = {}): Promise<Issued> {
  const csr = verifyCsr(csrPem);
  const name = opts.name ?? csr.cn;
  if (name === undefined) throw new PkiError('the request has no CN: give a name');
  checkClientName(name);
  const days = checkDays(opts.days, DEFAULT_LEAF_DAYS);
  const now = opts.now ?? new Date();
  const ca = await loadCa(dir);
  refuseDuplicateClient(dir, name, now);
  const spki = csr.publicKey.export({ type: 'spki', format: 'der' });
  const publicKey = spki.buffer.slice(spki.byteOffset, spki.byteOffset + spki.byteLength);
  const { cert, pem } = await signLeaf(ca, { kind: 'client', cn: name, publicKey, rsa: csr.publicKey.asymmetricKeyType === 'rsa', days, now });
  if (!cert.publicKey.equals(csr.publicKey)) throw new PkiError('internal error: the certificate does not carry the requested key');
  const out = clientPaths(dir, name);
  writeCertFile(out.cert, pem);
  const entry = recordEntry(dir, cert, 'client', pem, now, { fromCsr: true });
  addToIndex(dir, entry);
  return { entry, certPath: out.cert, certPem: pem };
}

// ---------------------------------------------------------------------------------------------
// CSR verification (by OpenSSL via node:crypto; only the DER framing is walked here, with the
// helpers in cert-expiry.ts)

function oidToString(bytes: Buffer): string {
  const parts: number[] = [];
  let v = 0;
  for (const b of bytes) {
    v = v * 128 + (b & 0x7f);
    if (!(b & 0x80)) {
      parts.push(v);
      v = 0;
    }
  }
  const first = parts.shift() ?? 0;
  const head = first < 80 ? [Math.floor(first / 40), first % 40] : [2, first - 80];
  return [...head, ...parts].join('.');
}

/** Signature algorithms accepted in a request, by OID: the digest node:crypto uses (null for EdDSA). */
const CSR_SIGNATURE_ALGORITHMS: Record<string, string | null> = {
  '1.2.840.10045.4.3.2': 'sha256', // ecdsa-with-SHA256
  '1.2.840.10045.4.3.3': 'sha384',
  '1.2.840.10045.4.3.4': 'sha512',
  '1.2.840.113549.1.1.11': 'sha256', // sha256WithRSAEncryption
  '1.2.840.113549.1.1.12': 'sha384',
  '1.2.840.113549.1.1.13': 'sha512',
  '1.3.101.112': null, // Ed25519
};

export interface VerifiedCsr {
  publicKey: KeyObject;
  cn: string | undefined;
}

/** Throws PkiError unless the request is well formed, uses an accepted key and its signature verifies. */
export function verifyCsr(csrPem: string | Buffer): VerifiedCsr {
  const text = csrPem.toString();
  const m = /-----BEGIN (?:NEW )?CERTIFICATE REQUEST-----([\s\S]*?)-----END (?:NEW )?CERTIFICATE REQUEST-----/.exec(text);
  if (!m?.[1]) throw new PkiError('not a PEM certificate request (BEGIN CERTIFICATE REQUEST)');
  const der = Buffer.from(m[1].replace(/\s+/g, ''), 'base64');
  let info: DerElement | undefined, algId: DerElement | undefined, sig: DerElement | undefined;
  let spki: DerElement | undefined, oid: DerElement | undefined;
  try {
    const outer = derElement(der, 0);
    [info, algId, sig] = outer.tag === 0x30 ? derChildren(der, outer) : [];
    if (info?.tag === 0x30) spki = derChildren(der, info)[2];
    if (algId?.tag === 0x30) oid = derChildren(der, algId)[0];
  } catch (e) {
    throw new PkiError(`malformed request: ${e instanceof Error ? e.message : String(e)}`);
  }
  if (!info || !algId || !sig || !spki || !oid || sig.tag !== 0x03 || spki.tag !== 0x30 || oid.tag !== 0x06) throw new PkiError('malformed request');
  const alg = oidToString(der.subarray(oid.contentStart, oid.end));
  const digest = CSR_SIGNATURE_ALGORITHMS[alg];
  if (digest === undefined) throw new PkiError(`unsupported request signature algorithm ${alg}`);
  if (der[sig.contentStart] !== 0) throw new PkiError('malformed request signature');
  const signature = der.subarray(sig.contentStart + 1, sig.end);
  let publicKey: KeyObject;
  try {
    publicKey = createPublicKey({ key: der.subarray(spki.start, spki.end), format: 'der', type: 'spki' });
  } catch (e) {
    throw new PkiError(`unreadable public key in the request: ${e instanceof Error ? e.message : String(e)}`);
  }
  checkKeyStrength(publicKey);
  let ok: boolean;
  try {
    ok = cryptoVerify(digest, der.subarray(info.start, info.end), publicKey, signature);
  } catch {
    ok = false;
  }
  if (!ok) throw new PkiError('the request signature does not verify: it was altered or not signed by its key');
  let cn: string | undefined;
  try {
    cn = new x509.Pkcs10CertificateRequest(der).subjectName.getField('CN')[0];
  } catch (e) {
    throw new PkiError(`unreadable subject in the request: ${e instanceof Error ? e.message : String(e)}`);
  }
  return { publicKey, cn };
}

function checkKeyStrength(key: KeyObject): void {
  const t = key.asymmetricKeyType;
  const d = key.asymmetricKeyDetails;
  if (t === 'rsa' && (d?.modulusLength ?? 0) >= 2048) return;
  if (t === 'ec' && ['prime256v1', 'secp384r1', 'secp521r1'].includes(d?.namedCurve ?? '')) return;
  if (t === 'ed25519') return;
  throw new PkiError(`the request's key (${t ?? '?'}${d?.modulusLength ? ` ${d.modulusLength} bits` : ''}${d?.namedCurve ? ` ${d.namedCurve}` : ''}) is not accepted: use ECDSA P-256/P-384/P-521, Ed25519 or RSA of at least 2048 bits`);
}

// ---------------------------------------------------------------------------------------------
// Listing, revocation and the CRL

export interface CertStatus extends IndexEntry {
  daysLeft: number;
  status: 'valid' | 'expiring' | 'expired' | 'revoked';
}

export function listCerts(dir: string, now: Date = new Date(), warnDays = 30): CertStatus[] {
  return readIndex(dir).certs.map((e) => {
    const left = Date.parse(e.notAfter) - now.getTime();
    const daysLeft = Math.floor(left / DAY_MS);
    const status = e.revokedAt ? 'revoked' : left <= 0 ? 'expired' : left <= warnDays * DAY_MS ? 'expiring' : 'valid';
    return { ...e, daysLeft, status };
  });
}

/** Normalises "0a:1B:..." or "0a1b..." to node's upper-case hex without leading zero bytes. */
function normaliseSerial(s: string): string | undefined {
  const hex = s.replace(/:/g, '').toUpperCase();
  if (!/^[0-9A-F]+$/.test(hex)) return undefined;
  return hex.replace(/^(00)+(?=..)/, '');
}

export interface RevokeOptions {
  now?: Date;
  crlDays?: number;
}

/**
 * Revokes by serial, or by CN (every unrevoked certificate with that CN), then rewrites the CRL.
 * Returns the entries revoked.
 */
export async function revoke(dir: string, nameOrSerial: string, opts: RevokeOptions = {}): Promise<IndexEntry[]> {
  const now = opts.now ?? new Date();
  const index = readIndex(dir);
  const serial = normaliseSerial(nameOrSerial);
  let matches = index.certs.filter((e) => serial !== undefined && normaliseSerial(e.serial) === serial);
  if (matches.length === 0) matches = index.certs.filter((e) => e.cn === nameOrSerial && e.kind !== 'ca');
  if (matches.length === 0) throw new PkiError(`no certificate named or numbered "${nameOrSerial}" in ${dir}`);
  if (matches.some((e) => e.kind === 'ca')) throw new PkiError('the CA cannot revoke itself: create a new PKI instead');
  const todo = matches.filter((e) => !e.revokedAt);
  if (todo.length === 0) throw new PkiError(`"${nameOrSerial}" is already revoked`);
  // Check the CA before changing anything.
  await loadCa(dir);
  for (const e of todo) e.revokedAt = now.toISOString();
  writeIndex(dir, index);
  await writeCrl(dir, { now, ...(opts.crlDays === undefined ? {} : { crlDays: opts.crlDays }) });
  return todo;
}

function toPem(label: string, der: Buffer): string {
  const lines = der.toString('base64').match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${label}-----\n${lines.join('\n')}\n-----END ${label}-----\n`;
}

/** DER of a non-negative INTEGER. */
function derInteger(n: number): Uint8Array {
  const bytes: number[] = [];
  let v = n;
  do {
    bytes.unshift(v & 0xff);
    v = Math.floor(v / 256);
  } while (v > 0);
  if ((bytes[0] ?? 0) & 0x80) bytes.unshift(0);
  return new Uint8Array([0x02, bytes.length, ...bytes]);
}

/** (Re)writes crl.pem: every revoked serial, signed by the CA, with thisUpdate/nextUpdate and a CRL number. */
export async function writeCrl(dir: string, opts: RevokeOptions = {}): Promise<{ path: string; number: number; nextUpdate: Date; revoked: number }> {
  const now = opts.now ?? new Date();
  const crlDays = checkDays(opts.crlDays, DEFAULT_CRL_DAYS);
  const ca = await loadCa(dir);
  const index = readIndex(dir);
  const number = index.crlNumber + 1;
  const revoked = index.certs.filter((e) => e.revokedAt);
  const nextUpdate = new Date(now.getTime() + crlDays * DAY_MS);
  const crl = await x509.X509CrlGenerator.create({
    issuer: ca.builderCert.subjectName,
    thisUpdate: new Date(now.getTime() - BACKDATE_MS),
    nextUpdate,
    signingAlgorithm: ca.signer.sign,
    signingKey: ca.key,
    extensions: [await x509.AuthorityKeyIdentifierExtension.create(ca.builderCert), new x509.Extension('2.5.29.20', false, derInteger(number))],
    entries: revoked.map((e) => ({ serialNumber: e.serial, revocationDate: new Date(e.revokedAt ?? now) })),
  });
  const p = pkiPaths(dir);
  // The library labels it "CRL"; OpenSSL (and so node:tls) only reads "X509 CRL".
  writeCertFile(p.crl, toPem('X509 CRL', Buffer.from(crl.rawData)));
  index.crlNumber = number;
  writeIndex(dir, index);
  return { path: p.crl, number, nextUpdate, revoked: revoked.length };
}
