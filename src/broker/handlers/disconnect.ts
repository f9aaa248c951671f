import type { DisconnectPacket } from '../../mqtt/packets.js';
import { ProtocolError } from '../../mqtt/errors.js';
import { Reason } from '../../mqtt/reason-codes.js';
import type { Connection } from '../connection.js';

/**
 * DISCONNECT: the will is discarded [MQTT-3.14.4-3] unless an MQTT 5 client asks for it with
 * 0x04. An MQTT 5 client may change the session expiry here, but not from 0 to non-zero
 * [MQTT-3.14.2-2].
 */
export function handleDisconnect(conn: Connection, packet: DisconnectPacket): void {
  const expiry = packet.properties?.sessionExpiryInterval;
  if (expiry !== undefined && conn.session) {
    if (conn.session.expiryInterval === 0 && expiry !== 0) {
      throw new ProtocolError(Reason.ProtocolError, 'DISCONNECT sets a session expiry after CONNECT set 0 [MQTT-3.14.2-2]');
    }
    conn.session.expiryInterval = expiry;
  }
  conn.disconnectReceived = packet.reasonCode !== Reason.DisconnectWithWill;
  conn.broker.log.debug({ client: conn.clientId, remote: conn.remoteAddress }, 'client disconnected');
  conn.shutdown();
}
