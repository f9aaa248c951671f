// TLS listener (node:tls): TLS 1.2 minimum, optional mutual TLS with a CRL, the client
// certificate's common name as the user name, and certificate reload without dropping connections
// (except those whose client certificate the reloaded CRL revokes).
import type net from 'node:net';
import tls from 'node:tls';
import type { Broker } from '../broker.js';
import {
  CertifiedConnections, checkPeer, logHandshakeError, reloadTlsListener, remoteOf, tlsServerOptions, type ReloadableListener, type TlsListenerFiles,
} from './tls-material.js';

export interface TlsListenerConfig extends TlsListenerFiles {
  host: string;
  port: number;
  allow_anonymous: boolean;
}

export async function listenTls(cfg: TlsListenerConfig, broker: Broker): Promise<ReloadableListener> {
  const server = tls.createServer({ ...tlsServerOptions(cfg, broker), noDelay: true, allowHalfOpen: false });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => {
      reject(new Error(`cannot listen on tls ${cfg.host}:${cfg.port}: ${err.code ?? err.message}` +
        (err.code === 'EADDRINUSE' ? ' (another process uses the port: stop it or change listeners.port)' : '')));
    });
    server.listen(cfg.port, cfg.host, () => resolve());
  });
  const addr = server.address() as net.AddressInfo;
  const name = `tls://${cfg.host}:${addr.port}`;
  server.on('error', (err: Error) => broker.log.error({ listener: name, err: err.message }, 'listener error'));
  const policy = { name, allowAnonymous: cfg.allow_anonymous, useIdentityAsUsername: cfg.use_identity_as_username };

  // Sockets still in the handshake (not yet the broker's), by remote "ip:port" (unique per TCP
  // connection to this port): closed with the listener.
  const pending = new Map<string, net.Socket>();
  const certified = new CertifiedConnections(cfg);
  server.on('connection', (raw: net.Socket) => {
    const key = remoteOf(raw);
    pending.set(key, raw);
    raw.once('close', () => {
      if (pending.get(key) === raw) pending.delete(key);
    });
  });
  server.on('tlsClientError', (err: NodeJS.ErrnoException, socket: tls.TLSSocket) => logHandshakeError(broker, name, err, socket));
  server.on('secureConnection', (socket: tls.TLSSocket) => {
    const remote = remoteOf(socket);
    const decision = checkPeer(socket, cfg, broker, name, remote);
    if (!decision.ok) {
      socket.destroy();
      return;
    }
    pending.delete(remote);
    socket.setNoDelay(true);
    certified.track(broker.accept(socket, remote, policy, decision.identity), socket);
  });

  return {
    name,
    host: cfg.host,
    port: addr.port,
    reload: () => reloadTlsListener(server, cfg, broker, name, certified),
    close: () => new Promise<void>((resolve) => {
      server.close(() => resolve());
      for (const raw of pending.values()) raw.destroy();
    }),
  };
}
