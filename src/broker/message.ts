// The broker's message: what one PUBLISH carries once accepted, shared (never copied) by every
// subscriber it is delivered to. Bytes stay in the frame the message arrived in.
import type { PublishSource } from '../mqtt/codec/encode.js';
import type { Properties, PublishPacket, QoS } from '../mqtt/packets.js';

export interface Message extends PublishSource {
  qos: QoS;
  retain: boolean;
  /** MQTT 5 application properties, as published (no topic alias, no subscription ids). */
  properties: Properties | undefined;
  /** Client id of the publisher; '' for messages the broker itself makes ($SYS, drivers later). */
  senderId: string;
  /** Date.now() when received, for message expiry. */
  receivedAt: number;
  /** Date.now() after which the message must not be delivered; 0 = never ([MQTT-3.3.2-5]). */
  expiresAt: number;
  /** Id in the durable store once written there; 0 until then. */
  storeId: number;
}

/** Application properties a broker forwards; topic alias and subscription ids are per hop. */
function forwardedProperties(p: Properties | undefined): Properties | undefined {
  if (!p) return undefined;
  if (p.topicAlias === undefined && p.subscriptionIdentifiers === undefined) return p;
  const { topicAlias: _a, subscriptionIdentifiers: _s, ...rest } = p;
  return Object.keys(rest).length > 0 ? rest : undefined;
}

/** A message from a decoded PUBLISH. `topic` may differ from packet.topic when an alias was used. */
export function messageFromPacket(packet: PublishPacket, topic: string, senderId: string, now: number): Message {
  const properties = forwardedProperties(packet.properties);
  const expiry = properties?.messageExpiryInterval;
  const topicInFrame = packet.topic.length > 0 || topic.length === 0;
  return {
    topic,
    topicLength: topicInFrame ? packet.frame.readUInt16BE(packet.topicOffset) : Buffer.byteLength(topic),
    topicBuf: topicInFrame ? packet.frame : null,
    topicOffset: packet.topicOffset,
    payloadBuf: packet.frame,
    payloadStart: packet.payloadOffset,
    payloadEnd: packet.frame.length,
    qos: packet.qos,
    retain: packet.retain,
    properties,
    senderId,
    receivedAt: now,
    expiresAt: expiry !== undefined ? now + expiry * 1000 : 0,
    storeId: 0,
  };
}

export interface InternalPublish {
  topic: string;
  payload: Buffer | string;
  qos?: QoS;
  retain?: boolean;
  properties?: Properties;
}

/** A message made inside the broker: $SYS, wills, drivers and the bridge. */
export function createMessage(p: InternalPublish, senderId: string, now = Date.now()): Message {
  const payload = typeof p.payload === 'string' ? Buffer.from(p.payload) : p.payload;
  const properties = forwardedProperties(p.properties);
  const expiry = properties?.messageExpiryInterval;
  return {
    topic: p.topic,
    topicLength: Buffer.byteLength(p.topic),
    topicBuf: null,
    topicOffset: 0,
    payloadBuf: payload,
    payloadStart: 0,
    payloadEnd: payload.length,
    qos: p.qos ?? 0,
    retain: p.retain ?? false,
    properties,
    senderId,
    receivedAt: now,
    expiresAt: expiry !== undefined ? now + expiry * 1000 : 0,
    storeId: 0,
  };
}

export function payloadLength(m: Message): number {
  return m.payloadEnd - m.payloadStart;
}

export function payloadOf(m: Message): Buffer {
  return m.payloadBuf.subarray(m.payloadStart, m.payloadEnd);
}
