// Acknowledgements from the client, for messages the broker sent (PUBACK, PUBREC, PUBCOMP) and
// for QoS 2 messages it received (PUBREL).
import { writeAck } from '../../mqtt/codec/encode.js';
import { ProtocolError } from '../../mqtt/errors.js';
import { PacketType, type AckPacket } from '../../mqtt/packets.js';
import { Reason } from '../../mqtt/reason-codes.js';
import type { Connection } from '../connection.js';

function unsolicited(p: AckPacket, what: string): ProtocolError {
  return new ProtocolError(Reason.ProtocolError, `${p.type.toUpperCase()} for packet id ${p.packetId}, which is not ${what}`);
}

/** PUBACK ends a QoS 1 delivery [MQTT-4.3.2-1]; the window then takes the next queued message. */
export function handlePuback(conn: Connection, p: AckPacket): void {
  const session = conn.session!;
  if (!session.complete(p.packetId, 'publish', 1)) throw unsolicited(p, 'a QoS 1 message in flight');
  session.pump();
}

/** PUBREC: the client owns the QoS 2 message; answer PUBREL [MQTT-4.3.3-1]. */
export function handlePubrec(conn: Connection, p: AckPacket): void {
  const session = conn.session!;
  if (conn.version === 5 && p.reasonCode >= 0x80) {
    // A failed PUBREC ends the exchange: no PUBREL follows [MQTT-4.3.3-4 (v5)].
    if (!session.complete(p.packetId, 'publish', 2)) throw unsolicited(p, 'a QoS 2 message in flight');
    session.pump();
    return;
  }
  if (!session.received(p.packetId)) {
    if (conn.version !== 5) throw unsolicited(p, 'a QoS 2 message in flight');
    writeAck(conn.out, PacketType.PUBREL, p.packetId, 5, Reason.PacketIdentifierNotFound);
    conn.touch();
    return;
  }
  conn.ack(PacketType.PUBREL, p.packetId);
}

/**
 * PUBREL releases a received QoS 2 id; PUBCOMP is sent even for an unknown id, since the PUBREL
 * may be a retransmission after the broker already completed it [MQTT-4.3.3-2].
 */
export function handlePubrel(conn: Connection, p: AckPacket): void {
  const known = conn.session!.removeIncomingQos2(p.packetId);
  conn.ack(PacketType.PUBCOMP, p.packetId, known || conn.version !== 5 ? 0 : Reason.PacketIdentifierNotFound);
}

/** PUBCOMP ends a QoS 2 delivery. */
export function handlePubcomp(conn: Connection, p: AckPacket): void {
  const session = conn.session!;
  if (!session.complete(p.packetId, 'pubrel', 2)) throw unsolicited(p, 'a QoS 2 message awaiting PUBCOMP');
  session.pump();
}
