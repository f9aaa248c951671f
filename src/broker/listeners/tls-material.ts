// Certificate material of a tls/wss listener: read from the configured PEM files, checked file by
// file so an error names the file at fault, and turned into node:tls server options. Used at start
// and again on reload (SIGHUP), where a broken file keeps the previous material in service.
import { X509Certificate, constants as cryptoConstants, createPrivateKey } from 'node:crypto';
import { readFileSync } from 'node:fs';
import tls from 'node:tls';
import type { Broker } from '../broker.js';
import type { Connection } from '../connection.js';
import { Reason } from '../../mqtt/reason-codes.js';
import { crlRevokedSerials, normalizeSerial } from '../../security/cert-expiry.js';
import type { Listener } from './listener.js';

/** The TLS keys of a listener's configuration (see listenerSchema). */
export interface TlsListenerFiles {
  cert: string;
  key: string;
  ca: string;
  crl: string;
  require_client_cert: boolean;
  use_identity_as_username: boolean;
}

/** A listener whose certificate material can be reloaded in place. */
export interface ReloadableListener extends Listener {
  /** Re-reads the files; true if the new material is in service, false if the old one was kept. */
  reload(): boolean;
}

/** Raised when a file cannot be used; `file` is the path at fault. */
export class TlsMaterialError extends Error {
  constructor(readonly file: string, message: string) {
    super(message);
    this.name = 'TlsMaterialError';
  }
}

/** TLS 1.2 is the oldest version any listener speaks. */
export const TLS_MIN_VERSION = 'TLSv1.2';

function readPem(what: string, path: string): Buffer {
  let data: Buffer;
  try {
    data = readFileSync(path);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw new TlsMaterialError(path, `cannot read ${what} file ${path}: ${e.code ?? e.message}`);
  }
  if (!data.includes('-----BEGIN ')) throw new TlsMaterialError(path, `${what} file ${path} holds no PEM block`);
  return data;
}

function reason(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/**
 * Reads and checks the files and returns the secure-context options for a server. Throws
 * TlsMaterialError naming the file when a file is missing, unreadable, not PEM, does not parse,
 * or when the key does not belong to the certificate.
 */
export function loadTlsOptions(cfg: TlsListenerFiles): tls.SecureContextOptions {
  if (!cfg.cert) throw new TlsMaterialError('', 'no cert file configured: a tls/wss listener needs cert and key');
  if (!cfg.key) throw new TlsMaterialError('', 'no key file configured: a tls/wss listener needs cert and key');
  if (cfg.require_client_cert && !cfg.ca) {
    throw new TlsMaterialError('', 'require_client_cert needs ca: the CA file that signs the client certificates');
  }
  if (cfg.crl && !cfg.ca) throw new TlsMaterialError(cfg.crl, 'crl is set but ca is not: a CRL applies to client certificates signed by ca');

  const cert = readPem('certificate', cfg.cert);
  try {
    new X509Certificate(cert);
  } catch (err) {
    throw new TlsMaterialError(cfg.cert, `certificate file ${cfg.cert} does not parse: ${reason(err)}`);
  }
  const key = readPem('key', cfg.key);
  try {
    createPrivateKey(key);
  } catch (err) {
    throw new TlsMaterialError(cfg.key, `key file ${cfg.key} does not parse (encrypted keys are not supported): ${reason(err)}`);
  }
  const options: tls.SecureContextOptions = { cert, key, minVersion: TLS_MIN_VERSION };
  // With client certificates, no session resumption: every connection is verified against the
  // current CA and CRL (a resumed session would skip a revocation loaded since).
  if (cfg.require_client_cert) options.secureOptions = cryptoConstants.SSL_OP_NO_TICKET;
  try {
    tls.createSecureContext(options);
  } catch (err) {
    throw new TlsMaterialError(cfg.key, `key file ${cfg.key} does not match certificate file ${cfg.cert}: ${reason(err)}`);
  }
  if (cfg.ca) {
    const ca = readPem('CA', cfg.ca);
    try {
      new X509Certificate(ca);
      tls.createSecureContext({ ca });
    } catch (err) {
      throw new TlsMaterialError(cfg.ca, `CA file ${cfg.ca} does not parse: ${reason(err)}`);
    }
    options.ca = ca;
  }
  if (cfg.crl) {
    const crl = readPem('CRL', cfg.crl);
    try {
      tls.createSecureContext({ crl });
    } catch (err) {
      throw new TlsMaterialError(cfg.crl, `CRL file ${cfg.crl} does not parse: ${reason(err)}`);
    }
    options.crl = crl;
  }
  // The whole set once more, as the server will build it.
  try {
    tls.createSecureContext(options);
  } catch (err) {
    throw new TlsMaterialError(cfg.cert, `the TLS material of ${cfg.cert} cannot be used: ${reason(err)}`);
  }
  return options;
}

/** The listener's server options: material, TLS 1.2 minimum, client certificates when required. */
export function tlsServerOptions(cfg: TlsListenerFiles, broker: Broker): tls.TlsOptions {
  if (cfg.use_identity_as_username && !cfg.require_client_cert) {
    throw new TlsMaterialError('', 'use_identity_as_username needs require_client_cert = true (the identity is the verified client certificate)');
  }
  return {
    ...loadTlsOptions(cfg),
    requestCert: cfg.require_client_cert,
    // Verification is enforced by checkPeer() once the handshake is done: node:tls with
    // rejectUnauthorized would do the same check but drop the socket without saying why.
    rejectUnauthorized: false,
    handshakeTimeout: broker.limits.connectTimeoutMs,
  };
}

/**
 * The open connections of a mutual-TLS listener with the serial of the certificate each one
 * presented. A reload that brings a CRL revoking one of them closes that connection: a revoked
 * device (a sold truck's tablet, a stolen scanner) must not keep a session it opened before.
 */
export class CertifiedConnections {
  private readonly live = new Map<Connection, string>();
  /** Only a mutual-TLS listener with a CRL can revoke anything: its CRL file, else null. */
  private readonly crl: string | null;

  constructor(cfg: TlsListenerFiles) {
    this.crl = cfg.require_client_cert && cfg.crl !== '' ? cfg.crl : null;
  }

  /** Remembers a connection accepted with a client certificate (none, or nothing to revoke: nothing to remember). */
  track(conn: Connection | null, socket: tls.TLSSocket): void {
    if (this.crl === null || conn === null) return;
    const serial = socket.getPeerCertificate()?.serialNumber;
    if (!serial) return;
    this.live.set(conn, normalizeSerial(serial));
    socket.once('close', () => this.live.delete(conn));
  }

  /** After a reload: closes (MQTT 5: DISCONNECT 0x87) every connection whose certificate the CRL now revokes. */
  cutRevoked(broker: Broker, name: string): void {
    if (this.crl === null) return;
    let revoked: Set<string>;
    try {
      revoked = crlRevokedSerials(readFileSync(this.crl, 'utf8'));
    } catch (err) {
      // loadTlsOptions parsed this file a moment ago; only a change since can get here.
      broker.log.error({ listener: name, file: this.crl, err: reason(err) }, `cannot read the revoked serials of the CRL: ${reason(err)}`);
      return;
    }
    for (const [conn, serial] of this.live) {
      if (!revoked.has(serial)) continue;
      this.live.delete(conn);
      broker.log.warn({ listener: name, client: conn.clientId, remote: conn.remoteAddress, serial },
        'client certificate revoked by the reloaded CRL: connection closed');
      conn.close(Reason.NotAuthorized, 'client certificate revoked');
    }
  }
}

/**
 * reloadSecureContext, then, for a mutual-TLS listener with a CRL, closes the open connections
 * whose certificate the new CRL revokes.
 */
export function reloadTlsListener(
  server: tls.Server, cfg: TlsListenerFiles, broker: Broker, name: string, certified: CertifiedConnections,
): boolean {
  if (!reloadSecureContext(server, cfg, broker, name)) return false;
  certified.cutRevoked(broker, name);
  return true;
}

/**
 * Installs freshly read material on a running server: new handshakes use it, established
 * connections keep theirs. A broken file is logged (naming it) and the old material stays.
 */
export function reloadSecureContext(server: tls.Server, cfg: TlsListenerFiles, broker: Broker, name: string): boolean {
  let options: tls.SecureContextOptions;
  try {
    options = loadTlsOptions(cfg);
  } catch (err) {
    const file = err instanceof TlsMaterialError ? err.file : undefined;
    broker.log.error({ listener: name, file, err: reason(err) }, `TLS reload failed, keeping the previous certificate: ${reason(err)}`);
    return false;
  }
  server.setSecureContext(options);
  broker.log.info({ listener: name, cert: cfg.cert }, 'TLS certificate material reloaded');
  return true;
}

/**
 * Logs a failed TLS handshake (wrong version, no certificate when one is required, not TLS at
 * all, timeout). A reset before the handshake is mostly a port scan: info; the rest warn.
 */
export function logHandshakeError(broker: Broker, name: string, err: NodeJS.ErrnoException, socket: tls.TLSSocket): void {
  const fields = { listener: name, remote: remoteOf(socket), err: err.message, code: err.code };
  if (err.code === 'ECONNRESET') broker.log.info(fields, `TLS handshake failed: ${err.message}`);
  else broker.log.warn(fields, `TLS handshake failed: ${err.message}`);
}

/** "ip:port" of a socket, as the tcp listener writes it. */
export function remoteOf(socket: { remoteAddress?: string | undefined; remotePort?: number | undefined }): string {
  return `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? 0}`;
}

/**
 * Decides a handshaken TLS socket on a listener requiring client certificates. Returns
 * `{ ok: true, identity }` (identity = the certificate's common name when
 * use_identity_as_username, else undefined) or logs the refusal and returns `{ ok: false }`.
 */
export function checkPeer(
  socket: tls.TLSSocket, cfg: TlsListenerFiles, broker: Broker, name: string, remote: string,
): { ok: true; identity: string | undefined } | { ok: false } {
  if (!cfg.require_client_cert) return { ok: true, identity: undefined };
  if (!socket.authorized) {
    const why = socket.authorizationError instanceof Error ? socket.authorizationError.message : String(socket.authorizationError ?? 'no certificate');
    const peer = socket.getPeerCertificate();
    const presented = peer && Object.keys(peer).length > 0;
    broker.log.warn({ listener: name, remote, reason: why, subject: presented ? peer.subject?.CN : undefined },
      presented ? `client certificate refused: ${why}` : 'client certificate refused: none presented');
    return { ok: false };
  }
  if (!cfg.use_identity_as_username) return { ok: true, identity: undefined };
  const cn: unknown = socket.getPeerCertificate().subject?.CN;
  if (typeof cn !== 'string' || cn === '') {
    broker.log.warn({ listener: name, remote, cn }, 'client certificate refused: use_identity_as_username needs exactly one non-empty common name');
    return { ok: false };
  }
  return { ok: true, identity: cn };
}
