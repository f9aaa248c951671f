// The one place that routes a decoded packet to its handler and enforces "CONNECT first and only
// once". Handlers throw ProtocolError; the connection turns it into the close with its reason code.
import { ProtocolError } from '../mqtt/errors.js';
import type { ClientPacket } from '../mqtt/packets.js';
import { Reason } from '../mqtt/reason-codes.js';
import type { Connection } from './connection.js';
import { handleConnect } from './handlers/connect.js';
import { handlePublish } from './handlers/publish.js';
import { handlePuback, handlePubcomp, handlePubrec, handlePubrel } from './handlers/acks.js';
import { handleSubscribe } from './handlers/subscribe.js';
import { handleUnsubscribe } from './handlers/unsubscribe.js';
import { handlePingreq } from './handlers/ping.js';
import { handleDisconnect } from './handlers/disconnect.js';
import { handleAuth } from './handlers/auth.js';

export function dispatch(conn: Connection, packet: ClientPacket): void {
  if (packet.type === 'connect') {
    // A second CONNECT is a protocol violation [MQTT-3.1.0-2].
    if (conn.state !== 'awaiting-connect') throw new ProtocolError(Reason.ProtocolError, 'second CONNECT on one connection [MQTT-3.1.0-2]');
    handleConnect(conn, packet);
    return;
  }
  if (packet.type === 'auth' && conn.state === 'connecting' && conn.authWaiter) {
    // The client's answer in an enhanced-authentication exchange (4.12).
    const waiter = conn.authWaiter;
    conn.authWaiter = null;
    conn.pauseFrames();
    waiter.resolve(packet);
    return;
  }
  if (conn.state !== 'connected') {
    // Only reachable for packets pipelined behind a CONNECT that is still being processed.
    throw new ProtocolError(Reason.ProtocolError, `${packet.type.toUpperCase()} before the connection was accepted [MQTT-3.1.0-1]`);
  }
  switch (packet.type) {
    case 'publish': return handlePublish(conn, packet);
    case 'puback': return handlePuback(conn, packet);
    case 'pubrec': return handlePubrec(conn, packet);
    case 'pubrel': return handlePubrel(conn, packet);
    case 'pubcomp': return handlePubcomp(conn, packet);
    case 'subscribe': return handleSubscribe(conn, packet);
    case 'unsubscribe': return handleUnsubscribe(conn, packet);
    case 'pingreq': return handlePingreq(conn);
    case 'disconnect': return handleDisconnect(conn, packet);
    case 'auth': return handleAuth(conn, packet);
  }
}
