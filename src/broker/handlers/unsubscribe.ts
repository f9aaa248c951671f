// UNSUBSCRIBE: remove each filter; UNSUBACK is sent even when nothing matched [MQTT-3.10.4-5].
import { PacketType, type UnsubscribePacket } from '../../mqtt/packets.js';
import { Reason } from '../../mqtt/reason-codes.js';
import type { Connection } from '../connection.js';

export function handleUnsubscribe(conn: Connection, p: UnsubscribePacket): void {
  const session = conn.session!;
  const codes: number[] = [];
  for (const filter of p.filters) {
    const existed = session.removeSubscription(filter);
    if (existed) conn.broker.router.unsubscribe(conn.clientId, filter);
    codes.push(existed ? Reason.Success : Reason.NoSubscriptionExisted);
  }
  conn.subUnsubAck(PacketType.UNSUBACK, p.packetId, codes);
}
