// PUBLISH from a client: resolve the topic (alias), validate, hand the message to the broker's
// one publish path, and acknowledge by QoS ([MQTT-4.3.1] .. [MQTT-4.3.3]).
import { isUtf8 } from 'node:buffer';
import { ProtocolError } from '../../mqtt/errors.js';
import { PacketType, type PublishPacket } from '../../mqtt/packets.js';
import { Reason } from '../../mqtt/reason-codes.js';
import { validateTopicName } from '../../mqtt/topic.js';
import type { Connection } from '../connection.js';
import { messageFromPacket } from '../message.js';

export function handlePublish(conn: Connection, p: PublishPacket): void {
  const broker = conn.broker;
  const limits = broker.limits;
  const session = conn.session!;
  let topic = p.topic;
  let reason: number = Reason.Success;
  if (conn.version === 5) {
    const alias = p.properties?.topicAlias;
    // A zero-length topic needs a topic alias (3.3.2.1).
    if (topic.length === 0 && alias === undefined) throw new ProtocolError(Reason.ProtocolError, 'PUBLISH with an empty topic and no topic alias');
    if (alias !== undefined) {
      // [MQTT-3.3.2-8], [MQTT-3.3.2-9]: alias 0 or above the maximum we announced.
      if (alias === 0 || alias > limits.topicAliasMaximum) {
        throw new ProtocolError(Reason.TopicAliasInvalid, `topic alias ${alias} is outside 1..${limits.topicAliasMaximum}`);
      }
      const aliases = (conn.topicAliases ??= new Map<number, string>());
      if (topic.length > 0) aliases.set(alias, topic);
      else {
        const known = aliases.get(alias);
        if (known === undefined) throw new ProtocolError(Reason.ProtocolError, `topic alias ${alias} used with an empty topic before it was set`);
        topic = known;
      }
    }
    if (p.properties?.payloadFormatIndicator === 1 && !isUtf8(p.frame.subarray(p.payloadOffset))) {
      // Payload format 1 promises UTF-8 [MQTT-3.3.2-4]: refuse the message, keep the connection for QoS>0.
      if (p.qos === 0) throw new ProtocolError(Reason.PayloadFormatInvalid, `payload on "${topic}" is marked UTF-8 but is not`);
      reason = Reason.PayloadFormatInvalid;
    }
  }
  const invalid = validateTopicName(topic, limits.maxTopicLength, limits.maxTopicLevels);
  if (invalid) throw new ProtocolError(Reason.TopicNameInvalid, `PUBLISH topic "${topic.slice(0, 100)}": ${invalid}`);
  broker.metrics.publishReceived++;
  if (conn.publishRate) conn.chargePublish(p.frame.length);
  const acl = broker.authorizer;
  if (acl && !acl.canPublish({ clientId: conn.clientId, username: conn.username }, topic)) {
    broker.metrics.aclDenied++;
    broker.log.info({ client: conn.clientId, user: conn.username, topic: topic.slice(0, 200) }, 'publish refused by the ACL');
    // MQTT 5 says why; 3.1.1 has no refusal code, so the message is acknowledged and dropped.
    if (p.qos > 0) conn.ack(p.qos === 1 ? PacketType.PUBACK : PacketType.PUBREC, p.packetId, conn.version === 5 ? Reason.NotAuthorized : 0);
    return;
  }
  if (p.qos > 0 && broker.journal?.store.fault && broker.needsStorage(topic, p.retain)) {
    // The store cannot write (disk full): refuse rather than acknowledge what cannot be kept.
    if (conn.version !== 5) throw new ProtocolError(Reason.QuotaExceeded, `message store cannot write (${broker.journal.store.fault}): "${topic}" refused`);
    broker.metrics.drop('store_unavailable');
    conn.ack(p.qos === 1 ? PacketType.PUBACK : PacketType.PUBREC, p.packetId, Reason.QuotaExceeded);
    return;
  }

  if (p.qos === 0) {
    broker.publish(messageFromPacket(p, topic, conn.clientId, Date.now()));
    return;
  }
  if (p.qos === 1) {
    if (reason === Reason.Success && !broker.publish(messageFromPacket(p, topic, conn.clientId, Date.now()))) reason = refused(conn, topic);
    conn.ack(PacketType.PUBACK, p.packetId, reason);
    return;
  }
  // QoS 2: a packet id awaiting PUBREL is a retransmission, not a new message [MQTT-4.3.3-2].
  if (!session.incomingQos2.has(p.packetId)) {
    if (reason === Reason.Success) {
      if (conn.version === 5 && session.incomingQos2.size >= limits.receiveMaximum) {
        throw new ProtocolError(Reason.ReceiveMaximumExceeded, `more than ${limits.receiveMaximum} QoS 2 messages awaiting PUBREL [MQTT-3.3.4-9]`);
      }
      if (broker.publish(messageFromPacket(p, topic, conn.clientId, Date.now()))) session.addIncomingQos2(p.packetId);
      else reason = refused(conn, topic);
    }
  }
  conn.ack(PacketType.PUBREC, p.packetId, reason);
}

/**
 * A QoS 1/2 message the broker refused (the uplink outbox is full): MQTT 5 gets 0x97 quota
 * exceeded; 3.1.1 has no refusal code, so the connection closes without the acknowledgement.
 */
function refused(conn: Connection, topic: string): number {
  if (conn.version !== 5) throw new ProtocolError(Reason.QuotaExceeded, `"${topic.slice(0, 100)}" refused: the uplink outbox is full`);
  return Reason.QuotaExceeded;
}
