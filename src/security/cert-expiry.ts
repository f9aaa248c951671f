// Certificates nearing expiry (server certificate, CA, uplink client certificate) and a CRL nearing
// its nextUpdate: the gateway checks at start and daily, and raises the cert-expiry alarm.
//
// Dates are read by OpenSSL through node:crypto's X509Certificate. node cannot read a CRL, so its
// nextUpdate is taken from the DER with the few lines of framing below (nothing is verified here).
// An expired CRL matters as much as an expired certificate: a TLS listener with `crl` set then
// refuses every client certificate ("CRL has expired").
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { Alarm } from '../diagnostics/alarms.js';

const DAY_MS = 86_400_000;
export const DEFAULT_WARN_DAYS = 30;
/** Alarm name: published on convoy/alarms/cert-expiry. */
export const CERT_EXPIRY_ALARM = 'cert-expiry';

export interface CertExpiry {
  /** For people: "server certificate /etc/convoy/server.crt". */
  name: string;
  notAfter: Date;
}

export interface ExpiryWarning {
  name: string;
  /** Undefined when the file could not be read. */
  notAfter?: Date;
  /** Whole days left, rounded down; negative once expired. */
  daysLeft?: number;
  expired: boolean;
  message: string;
}

/** Everything that expires within warnDays of now (or has expired), soonest first. */
export function expiryWarnings(certs: readonly CertExpiry[], now: Date, warnDays = DEFAULT_WARN_DAYS): ExpiryWarning[] {
  const out: ExpiryWarning[] = [];
  for (const c of certs) {
    const left = c.notAfter.getTime() - now.getTime();
    if (left > warnDays * DAY_MS) continue;
    const daysLeft = Math.floor(left / DAY_MS);
    const when = c.notAfter.toISOString();
    const expired = left <= 0;
    const message = expired
      ? `${c.name} expired on ${when}`
      : daysLeft === 0
        ? `${c.name} expires within a day, on ${when}`
        : `${c.name} expires in ${daysLeft} ${daysLeft === 1 ? 'day' : 'days'}, on ${when}`;
    out.push({ name: c.name, notAfter: c.notAfter, daysLeft, expired, message });
  }
  return out.sort((a, b) => (a.notAfter?.getTime() ?? 0) - (b.notAfter?.getTime() ?? 0));
}

export interface WatchedFile {
  /** "server certificate", "CA", "uplink client certificate", "CRL". */
  name: string;
  path: string;
  /** Default 'cert'. A certificate file may hold several PEM certificates (a chain or a CA bundle): each is checked. */
  kind?: 'cert' | 'crl';
}

const PEM_CERT = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g;
const PEM_CRL = /-----BEGIN X509 CRL-----([\s\S]*?)-----END X509 CRL-----/;

/** Reads the given files and returns warnings, including one per file that cannot be read. */
export function checkCertificateFiles(files: readonly WatchedFile[], now: Date = new Date(), warnDays = DEFAULT_WARN_DAYS): ExpiryWarning[] {
  const dated: CertExpiry[] = [];
  const unreadable: ExpiryWarning[] = [];
  for (const f of files) {
    const label = `${f.name} ${f.path}`;
    try {
      const text = readFileSync(f.path, 'utf8');
      if (f.kind === 'crl') {
        const next = crlNextUpdate(text);
        if (next) dated.push({ name: `${label} (next update)`, notAfter: next });
        continue;
      }
      const blocks = text.match(PEM_CERT) ?? [];
      if (blocks.length === 0) throw new Error('no PEM certificate in the file');
      blocks.forEach((pem, i) => {
        const cert = new X509Certificate(pem);
        const notAfter = new Date(cert.validTo);
        if (Number.isNaN(notAfter.getTime())) throw new Error(`unreadable expiry date "${cert.validTo}"`);
        const subject = cert.subject.replace(/\n/g, ', ');
        dated.push({ name: blocks.length === 1 ? label : `${label} [${i + 1}: ${subject}]`, notAfter });
      });
    } catch (e) {
      const why = e instanceof Error ? e.message : String(e);
      unreadable.push({ name: label, expired: false, message: `${label} cannot be checked: ${why}` });
    }
  }
  return [...unreadable, ...expiryWarnings(dated, now, warnDays)];
}

/** One alarm for all warnings (undefined when there is none), for raiseAlarm(). */
export function certExpiryAlarm(warnings: readonly ExpiryWarning[]): Alarm | undefined {
  if (warnings.length === 0) return undefined;
  const detail: Record<string, string | number | boolean> = { count: warnings.length, expired: warnings.some((w) => w.expired) };
  warnings.forEach((w, i) => {
    detail[`cert${i + 1}`] = w.name;
    if (w.notAfter) detail[`cert${i + 1}NotAfter`] = w.notAfter.toISOString();
  });
  return {
    name: CERT_EXPIRY_ALARM,
    message: `${warnings.map((w) => w.message).join('; ')}: renew with "convoy certs" (server, client) or from HQ (uplink)`,
    detail,
  };
}

// ---------------------------------------------------------------------------------------------
// Minimal DER framing (also used by pki.ts to take a CSR apart before node:crypto verifies it).

export interface DerElement {
  tag: number;
  /** Offset of the element (header included), of its contents, and just past its end. */
  start: number;
  contentStart: number;
  end: number;
}

export function derElement(buf: Uint8Array, at: number, limit: number = buf.length): DerElement {
  const tag = buf[at];
  const first = buf[at + 1];
  if (tag === undefined || first === undefined) throw new Error('malformed DER: truncated');
  let len = first;
  let pos = at + 2;
  if (first & 0x80) {
    const n = first & 0x7f;
    if (n === 0 || n > 4) throw new Error('malformed DER: bad length');
    len = 0;
    for (let i = 0; i < n; i++) {
      const b = buf[pos++];
      if (b === undefined) throw new Error('malformed DER: truncated');
      len = len * 256 + b;
    }
  }
  const end = pos + len;
  if (end > limit) throw new Error('malformed DER: element overruns its container');
  return { tag, start: at, contentStart: pos, end };
}

export function derChildren(buf: Uint8Array, parent: DerElement): DerElement[] {
  const out: DerElement[] = [];
  for (let at = parent.contentStart; at < parent.end; ) {
    const d = derElement(buf, at, parent.end);
    out.push(d);
    at = d.end;
  }
  return out;
}

/** UTCTime (0x17) or GeneralizedTime (0x18) in the Z form X.509 uses. */
function derTime(buf: Uint8Array, e: DerElement): Date {
  const s = Buffer.from(buf.subarray(e.contentStart, e.end)).toString('latin1');
  const m = e.tag === 0x17 ? /^(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/.exec(s) : /^(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/.exec(s);
  if (!m) throw new Error(`malformed DER time "${s}"`);
  const [y, mo, d, h, mi, se] = m.slice(1).map(Number) as [number, number, number, number, number, number];
  const year = e.tag === 0x17 ? (y >= 50 ? 1900 + y : 2000 + y) : y;
  return new Date(Date.UTC(year, mo - 1, d, h, mi, se));
}

/** The DER of a PEM CRL and the fields of its TBSCertList after the optional version. */
function crlFields(pem: string): { der: Buffer; fields: DerElement[] } {
  const m = PEM_CRL.exec(pem);
  if (!m?.[1]) throw new Error('no PEM CRL (BEGIN X509 CRL) in the file');
  const der = Buffer.from(m[1].replace(/\s+/g, ''), 'base64');
  const outer = derElement(der, 0);
  const tbs = derChildren(der, outer)[0];
  if (outer.tag !== 0x30 || tbs?.tag !== 0x30) throw new Error('malformed CRL');
  const parts = derChildren(der, tbs);
  // version INTEGER OPTIONAL, signature, issuer, thisUpdate, nextUpdate OPTIONAL,
  // revokedCertificates SEQUENCE OPTIONAL, crlExtensions [0] OPTIONAL
  const fields = parts[0]?.tag === 0x02 ? parts.slice(1) : parts;
  const thisUpdate = fields[2];
  if (!thisUpdate || (thisUpdate.tag !== 0x17 && thisUpdate.tag !== 0x18)) throw new Error('malformed CRL');
  return { der, fields };
}

/** nextUpdate of a PEM CRL, or undefined when it has none. Throws on anything that is not a CRL. */
export function crlNextUpdate(pem: string): Date | undefined {
  const { der, fields } = crlFields(pem);
  const next = fields[3];
  return next && (next.tag === 0x17 || next.tag === 0x18) ? derTime(der, next) : undefined;
}

/** A certificate serial as upper-case hex without leading zeros (node prints serials in hex). */
export function normalizeSerial(hex: string): string {
  return hex.toUpperCase().replace(/^0+(?=.)/, '');
}

/** Serial numbers a PEM CRL revokes (normalizeSerial form). Throws on anything that is not a CRL. */
export function crlRevokedSerials(pem: string): Set<string> {
  const { der, fields } = crlFields(pem);
  const out = new Set<string>();
  // After thisUpdate: nextUpdate (a time) may be absent; then the revoked list, a SEQUENCE.
  const list = fields.slice(3).find((e) => e.tag === 0x30);
  if (list === undefined) return out;
  for (const entry of derChildren(der, list)) {
    const serial = derChildren(der, entry)[0];
    if (serial?.tag !== 0x02) throw new Error('malformed CRL entry');
    out.add(normalizeSerial(der.subarray(serial.contentStart, serial.end).toString('hex')));
  }
  return out;
}
