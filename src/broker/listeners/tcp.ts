// Plain TCP listener.
import net from 'node:net';
import type { Broker } from '../broker.js';
import type { Listener } from './listener.js';

export interface TcpListenerConfig {
  host: string;
  port: number;
  allow_anonymous: boolean;
}

export async function listenTcp(cfg: TcpListenerConfig, broker: Broker): Promise<Listener> {
  const server = net.createServer({ noDelay: true, allowHalfOpen: false });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => {
      reject(new Error(`cannot listen on tcp ${cfg.host}:${cfg.port}: ${err.code ?? err.message}` +
        (err.code === 'EADDRINUSE' ? ' (another process uses the port: stop it or change listeners.port)' : '')));
    });
    server.listen(cfg.port, cfg.host, () => resolve());
  });
  const addr = server.address() as net.AddressInfo;
  const name = `tcp://${cfg.host}:${addr.port}`;
  server.on('error', (err) => broker.log.error({ listener: name, err: err.message }, 'listener error'));
  const policy = { name, allowAnonymous: cfg.allow_anonymous, useIdentityAsUsername: false };
  server.on('connection', (socket) => {
    socket.setNoDelay(true);
    broker.accept(socket, `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? 0}`, policy);
  });
  return {
    name,
    host: cfg.host,
    port: addr.port,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
