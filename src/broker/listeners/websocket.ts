// WebSocket (ws) and secure WebSocket (wss) listener: MQTT in binary WebSocket messages on one URL
// path, subprotocol "mqtt" (or "mqttv3.1" for MQTT 3.1 clients). wss uses the same certificate
// material, client-certificate checks and reload as the tls listener.
import http from 'node:http';
import https from 'node:https';
import type net from 'node:net';
import type tls from 'node:tls';
import { WebSocketServer, createWebSocketStream, type WebSocket } from 'ws';
import type { Broker } from '../broker.js';
import type { ListenerPolicy } from '../../security/types.js';
import {
  CertifiedConnections, checkPeer, logHandshakeError, reloadTlsListener, remoteOf, tlsServerOptions, type ReloadableListener, type TlsListenerFiles,
} from './tls-material.js';

export interface WebSocketListenerConfig extends TlsListenerFiles {
  host: string;
  port: number;
  allow_anonymous: boolean;
  path: string;
}

/** Subprotocols accepted, in order of preference [MQTT-6.0.0-3]. */
export const MQTT_SUBPROTOCOLS = ['mqtt', 'mqttv3.1'] as const;

/** Room for WebSocket framing around the largest MQTT packet the broker accepts. */
const PAYLOAD_SLACK = 1024;

function offeredProtocols(req: http.IncomingMessage): string[] {
  const h = req.headers['sec-websocket-protocol'];
  if (!h) return [];
  return h.split(',').map((p) => p.trim()).filter((p) => p !== '');
}

function refuseUpgrade(socket: net.Socket, status: number, text: string): void {
  socket.end(`HTTP/1.1 ${status} ${http.STATUS_CODES[status] ?? ''}\r\nConnection: close\r\nContent-Type: text/plain\r\n` +
    `Content-Length: ${Buffer.byteLength(text) + 1}\r\n\r\n${text}\n`);
  setTimeout(() => socket.destroy(), 1000).unref();
}

export async function listenWebSocket(cfg: WebSocketListenerConfig, broker: Broker, secure: boolean): Promise<ReloadableListener> {
  const server: http.Server | https.Server = secure
    ? https.createServer({ ...tlsServerOptions(cfg, broker), noDelay: true })
    : http.createServer({ noDelay: true });
  // Until the upgrade, a connection is bounded like a pre-CONNECT one.
  server.requestTimeout = broker.limits.connectTimeoutMs;
  server.headersTimeout = broker.limits.connectTimeoutMs;
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => {
      reject(new Error(`cannot listen on ${secure ? 'wss' : 'ws'} ${cfg.host}:${cfg.port}: ${err.code ?? err.message}` +
        (err.code === 'EADDRINUSE' ? ' (another process uses the port: stop it or change listeners.port)' : '')));
    });
    server.listen(cfg.port, cfg.host, () => resolve());
  });
  const addr = server.address() as net.AddressInfo;
  const name = `${secure ? 'wss' : 'ws'}://${cfg.host}:${addr.port}${cfg.path}`;
  server.on('error', (err: Error) => broker.log.error({ listener: name, err: err.message }, 'listener error'));
  const policy: ListenerPolicy = { name, allowAnonymous: cfg.allow_anonymous, useIdentityAsUsername: cfg.use_identity_as_username };

  const wss = new WebSocketServer({
    noServer: true,
    maxPayload: broker.limits.maxPacketSize + PAYLOAD_SLACK,
    perMessageDeflate: false,
    clientTracking: false,
    handleProtocols: (offered: Set<string>) => MQTT_SUBPROTOCOLS.find((p) => offered.has(p)) ?? false,
  });

  // Connections not (yet) upgraded, by remote "ip:port": closed with the listener. Upgraded ones
  // belong to the broker, which closes them itself (with DISCONNECT and wills as required).
  const pending = new Map<string, net.Socket>();
  server.on('connection', (raw: net.Socket) => {
    const key = remoteOf(raw);
    pending.set(key, raw);
    raw.once('close', () => {
      if (pending.get(key) === raw) pending.delete(key);
    });
  });

  // Client certificates are decided right after the handshake, before any HTTP is parsed.
  const identities = new WeakMap<net.Socket, string | undefined>();
  const certified = new CertifiedConnections(cfg);
  if (secure) {
    server.on('tlsClientError', (err: NodeJS.ErrnoException, socket: tls.TLSSocket) => logHandshakeError(broker, name, err, socket));
    server.prependListener('secureConnection', (socket: tls.TLSSocket) => {
      const decision = checkPeer(socket, cfg, broker, name, remoteOf(socket));
      if (!decision.ok) socket.destroy();
      else identities.set(socket, decision.identity);
    });
  }

  server.on('request', (req: http.IncomingMessage, res: http.ServerResponse) => {
    const status = req.url?.split('?')[0] === cfg.path ? 426 : 404;
    res.writeHead(status, { 'Content-Type': 'text/plain', Connection: 'close', ...(status === 426 ? { Upgrade: 'websocket' } : {}) });
    res.end(status === 426 ? `MQTT over WebSocket: connect with subprotocol "mqtt" on ${cfg.path}\n` : 'not found\n');
  });

  server.on('upgrade', (req: http.IncomingMessage, socket: net.Socket, head: Buffer) => {
    const remote = remoteOf(socket);
    if (secure && !identities.has(socket)) {
      // Not decided by checkPeer (cannot happen: secureConnection runs first); never let it through.
      socket.destroy();
      return;
    }
    const path = req.url?.split('?')[0];
    if (path !== cfg.path) {
      broker.log.info({ listener: name, remote, path }, 'WebSocket upgrade refused: wrong path');
      refuseUpgrade(socket, 404, `no MQTT endpoint at this path: use ${cfg.path}`);
      return;
    }
    const offered = offeredProtocols(req);
    if (!offered.some((p) => (MQTT_SUBPROTOCOLS as readonly string[]).includes(p))) {
      broker.log.info({ listener: name, remote, offered }, 'WebSocket upgrade refused: subprotocol "mqtt" not offered');
      refuseUpgrade(socket, 400, 'MQTT over WebSocket needs the subprotocol "mqtt" [MQTT-6.0.0-3]');
      return;
    }
    const identity = identities.get(socket);
    pending.delete(remote);
    wss.handleUpgrade(req, socket, head, (ws) => attach(ws, remote, identity, socket));
  });

  function attach(ws: WebSocket, remote: string, identity: string | undefined, socket: net.Socket): void {
    const stream = createWebSocketStream(ws);
    // MQTT travels in binary messages [MQTT-6.0.0-1]: a text message closes the connection before
    // its bytes reach the broker. The stream's own message handler gets binary messages only.
    const streamHandlers = ws.listeners('message') as Array<(data: Buffer, isBinary: boolean) => void>;
    ws.removeAllListeners('message');
    let refused = false;
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      if (refused) return;
      if (!isBinary) {
        refused = true;
        broker.log.info({ listener: name, remote }, 'WebSocket text message: closing (MQTT uses binary messages)');
        // The stream ends when the close handshake completes (or ws times it out).
        ws.close(1003, 'MQTT needs binary messages');
        return;
      }
      for (const h of streamHandlers) h.call(ws, data, isBinary);
    });
    ws.on('error', (err: Error) => broker.log.info({ listener: name, remote, err: err.message }, `WebSocket error: ${err.message}`));
    const conn = broker.accept(stream, remote, policy, identity);
    if (secure) certified.track(conn, socket as tls.TLSSocket);
  }

  return {
    name,
    host: cfg.host,
    port: addr.port,
    reload: () => (secure ? reloadTlsListener(server as https.Server, cfg, broker, name, certified) : true),
    close: () => new Promise<void>((resolve) => {
      wss.close();
      server.close(() => resolve());
      for (const raw of pending.values()) raw.destroy();
    }),
  };
}
