import type { AuthPacket } from '../../mqtt/packets.js';
import { ProtocolError } from '../../mqtt/errors.js';
import { Reason } from '../../mqtt/reason-codes.js';
import type { Connection } from '../connection.js';

/**
 * AUTH after CONNECT. No enhanced authentication method is configured, so a client that sends
 * AUTH is in error: it never received one in CONNACK [MQTT-4.12.0-?]; the extension point is
 * the broker's authenticator.
 */
export function handleAuth(conn: Connection, packet: AuthPacket): void {
  const method = packet.properties?.authenticationMethod;
  throw new ProtocolError(
    method ? Reason.BadAuthenticationMethod : Reason.ProtocolError,
    method ? `AUTH with method "${method}" which this broker does not support` : 'AUTH without an authentication exchange in progress',
  );
}
