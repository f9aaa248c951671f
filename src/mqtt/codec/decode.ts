// Decoder for the packets a client sends to a server, MQTT 3.1, 3.1.1 and 5. It works on one
// complete frame (the framer has already checked the size), validates in the order of the spec
// and throws ProtocolError with the reason code to send. The PUBLISH path allocates only the
// packet object and its topic string: the payload stays in the frame.
import { ProtocolError } from '../errors.js';
import { Reason } from '../reason-codes.js';
import type {
  AckPacket, AuthPacket, ClientPacket, ConnectPacket, DisconnectPacket, Properties, ProtocolVersion,
  PublishPacket, QoS, SubscribePacket, SubscriptionRequest, UnsubscribePacket, Will,
} from '../packets.js';
import { PacketType } from '../packets.js';
import { PacketReader } from './reader.js';
import { propertyById, type PropertyContext } from './properties.js';

// One reader reused for every packet: decoding is synchronous, so nothing else can hold it.
const reader = new PacketReader();

const typeNames = ['RESERVED', 'CONNECT', 'CONNACK', 'PUBLISH', 'PUBACK', 'PUBREC', 'PUBREL', 'PUBCOMP',
  'SUBSCRIBE', 'SUBACK', 'UNSUBSCRIBE', 'UNSUBACK', 'PINGREQ', 'PINGRESP', 'DISCONNECT', 'AUTH'];

export function packetTypeName(type: number): string {
  return typeNames[type] ?? 'UNKNOWN';
}

/**
 * Decodes one frame. `frame` holds exactly one packet: fixed header at 0, body from `bodyOffset`.
 * `version` is the connection's protocol version (ignored for CONNECT, which declares it).
 */
export function decodePacket(frame: Buffer, bodyOffset: number, version: ProtocolVersion): ClientPacket {
  const first = frame[0]!;
  const type = first >> 4;
  const flags = first & 0x0f;
  const r = reader.reset(frame, bodyOffset, frame.length, packetTypeName(type));
  // Fixed header flags are reserved except in PUBLISH [MQTT-2.2.2-1], [MQTT-2.2.2-2].
  const expectFlags = type === PacketType.PUBREL || type === PacketType.SUBSCRIBE || type === PacketType.UNSUBSCRIBE ? 2 : 0;
  if (type !== PacketType.PUBLISH && flags !== expectFlags) {
    throw r.malformed(`reserved fixed header flags are 0x${flags.toString(16)}, must be 0x${expectFlags.toString(16)}`);
  }
  switch (type) {
    case PacketType.CONNECT: return decodeConnect(r);
    case PacketType.PUBLISH: return decodePublish(r, frame, flags, version);
    case PacketType.PUBACK: return decodeAck(r, 'puback', version);
    case PacketType.PUBREC: return decodeAck(r, 'pubrec', version);
    case PacketType.PUBREL: return decodeAck(r, 'pubrel', version);
    case PacketType.PUBCOMP: return decodeAck(r, 'pubcomp', version);
    case PacketType.SUBSCRIBE: return decodeSubscribe(r, version);
    case PacketType.UNSUBSCRIBE: return decodeUnsubscribe(r, version);
    case PacketType.PINGREQ:
      if (r.remaining !== 0) throw r.malformed('PINGREQ must have no body');
      return { type: 'pingreq' };
    case PacketType.DISCONNECT: return decodeDisconnect(r, version);
    case PacketType.AUTH:
      if (version !== 5) throw r.malformed('AUTH exists only in MQTT 5');
      return decodeAuth(r);
    default:
      // Type 0, and packets only a server sends (CONNACK, SUBACK, UNSUBACK, PINGRESP).
      throw new ProtocolError(Reason.ProtocolError, `${packetTypeName(type)} (type ${type}) is not a packet a client may send`);
  }
}

function decodeConnect(r: PacketReader): ConnectPacket {
  const protocolName = r.string('protocol name');
  const level = r.u8('protocol level');
  // [MQTT-3.1.2-1]: a wrong protocol name may be closed without CONNACK. [MQTT-3.1.2-2]: an
  // unsupported level gets CONNACK 0x01 (3.1.1) / 0x84 (5) and then the close.
  if (!((protocolName === 'MQTT' && (level === 4 || level === 5)) || (protocolName === 'MQIsdp' && level === 3))) {
    if (protocolName !== 'MQTT' && protocolName !== 'MQIsdp') {
      throw new ProtocolError(Reason.UnsupportedProtocolVersion, `CONNECT: unknown protocol name "${protocolName}"`);
    }
    throw new ProtocolError(Reason.UnsupportedProtocolVersion, `CONNECT: unsupported protocol "${protocolName}" level ${level}`);
  }
  const version = level;
  const flags = r.u8('connect flags');
  if ((flags & 0x01) !== 0) throw r.malformed('reserved connect flag bit 0 is set [MQTT-3.1.2-3]');
  const clean = (flags & 0x02) !== 0;
  const willFlag = (flags & 0x04) !== 0;
  const willQos = (flags >> 3) & 0x03;
  const willRetain = (flags & 0x20) !== 0;
  const passwordFlag = (flags & 0x40) !== 0;
  const usernameFlag = (flags & 0x80) !== 0;
  if (!willFlag && (willQos !== 0 || willRetain)) {
    throw r.malformed('will QoS or will retain set without the will flag [MQTT-3.1.2-11], [MQTT-3.1.2-13], [MQTT-3.1.2-15]');
  }
  if (willQos === 3) throw r.malformed('will QoS is 3 [MQTT-3.1.2-14]');
  // 3.1.1 forbids a password without a user name [MQTT-3.1.2-22]; MQTT 5 allows it.
  if (version !== 5 && passwordFlag && !usernameFlag) throw r.malformed('password flag set without user name flag [MQTT-3.1.2-22]');
  const keepalive = r.u16('keep alive');
  const properties = version === 5 ? readProperties(r, 'connect') : undefined;
  const clientId = r.string('client identifier');
  let will: Will | undefined;
  if (willFlag) {
    const willProperties = version === 5 ? readProperties(r, 'will') : undefined;
    const topic = r.string('will topic');
    const payload = r.binary('will message');
    will = { topic, payload, qos: willQos as QoS, retain: willRetain };
    if (willProperties) will.properties = willProperties;
  }
  const username = usernameFlag ? r.string('user name') : undefined;
  const password = passwordFlag ? r.binary('password') : undefined;
  if (r.remaining !== 0) throw r.malformed(`${r.remaining} bytes after the last field: lengths disagree with Remaining Length`);
  const packet: ConnectPacket = { type: 'connect', protocolName, protocolVersion: version, clean, keepalive, clientId };
  if (will) packet.will = will;
  if (username !== undefined) packet.username = username;
  if (password !== undefined) packet.password = password;
  if (properties) packet.properties = properties;
  return packet;
}

function decodePublish(r: PacketReader, frame: Buffer, flags: number, version: ProtocolVersion): PublishPacket {
  const qos = (flags >> 1) & 0x03;
  if (qos === 3) throw r.malformed('QoS 3 [MQTT-3.3.1-4]');
  const dup = (flags & 0x08) !== 0;
  if (dup && qos === 0) throw r.malformed('DUP set on a QoS 0 message [MQTT-3.3.1-2]');
  const topicOffset = r.pos;
  const topic = r.string('topic name');
  let packetId = 0;
  if (qos > 0) {
    packetId = r.u16('packet identifier');
    if (packetId === 0) throw r.malformed('packet identifier 0 [MQTT-2.3.1-1]');
  }
  let properties: Properties | undefined;
  if (version === 5) {
    properties = readProperties(r, 'publish');
    if (properties?.subscriptionIdentifiers) {
      throw new ProtocolError(Reason.ProtocolError, 'PUBLISH: a client must not send a subscription identifier [MQTT-3.3.4-6]');
    }
  }
  const packet: PublishPacket = {
    type: 'publish', topic, qos: qos as QoS, retain: (flags & 0x01) !== 0, dup, packetId,
    frame, topicOffset, payloadOffset: r.pos,
  };
  if (properties) packet.properties = properties;
  return packet;
}

function decodeAck(r: PacketReader, type: AckPacket['type'], version: ProtocolVersion): AckPacket {
  const packetId = r.u16('packet identifier');
  if (packetId === 0) throw r.malformed('packet identifier 0 [MQTT-2.3.1-1]');
  let reasonCode = 0;
  let properties: Properties | undefined;
  if (version === 5) {
    // The reason code and properties may be omitted when the reason is Success (3.4.2.1).
    if (r.remaining > 0) reasonCode = r.u8('reason code');
    if (r.remaining > 0) properties = readProperties(r, type);
  }
  if (r.remaining !== 0) throw r.malformed(`${r.remaining} unexpected bytes at the end`);
  const packet: AckPacket = { type, packetId, reasonCode };
  if (properties) packet.properties = properties;
  return packet;
}

function decodeSubscribe(r: PacketReader, version: ProtocolVersion): SubscribePacket {
  const packetId = r.u16('packet identifier');
  if (packetId === 0) throw r.malformed('packet identifier 0 [MQTT-2.3.1-1]');
  const properties = version === 5 ? readProperties(r, 'subscribe') : undefined;
  if (properties?.subscriptionIdentifiers) {
    const ids = properties.subscriptionIdentifiers;
    if (ids.length > 1) throw new ProtocolError(Reason.ProtocolError, 'SUBSCRIBE: more than one subscription identifier');
    if (ids[0] === 0) throw new ProtocolError(Reason.ProtocolError, 'SUBSCRIBE: subscription identifier 0 (allowed: 1 to 268,435,455)');
  }
  const subscriptions: SubscriptionRequest[] = [];
  while (r.remaining > 0) {
    const filter = r.string('topic filter');
    const options = r.u8('subscription options');
    const qos = options & 0x03;
    if (qos === 3) throw r.malformed(`QoS 3 requested for "${filter}" [MQTT-3.8.3-4]`);
    if (version === 5) {
      if ((options & 0xc0) !== 0) throw r.malformed('reserved subscription option bits 6-7 are set [MQTT-3.8.3-5]');
      const retainHandling = (options >> 4) & 0x03;
      if (retainHandling === 3) throw new ProtocolError(Reason.ProtocolError, 'SUBSCRIBE: retain handling 3 is reserved');
      subscriptions.push({
        filter, qos: qos as QoS, noLocal: (options & 0x04) !== 0, retainAsPublished: (options & 0x08) !== 0,
        retainHandling: retainHandling as 0 | 1 | 2,
      });
    } else {
      if ((options & 0xfc) !== 0) throw r.malformed('reserved bits in the requested QoS byte are set [MQTT-3.8.3-4]');
      subscriptions.push({ filter, qos: qos as QoS, noLocal: false, retainAsPublished: false, retainHandling: 0 });
    }
  }
  // [MQTT-3.8.3-3]: at least one topic filter.
  if (subscriptions.length === 0) throw new ProtocolError(Reason.ProtocolError, 'SUBSCRIBE with no topic filter [MQTT-3.8.3-3]');
  const packet: SubscribePacket = { type: 'subscribe', packetId, subscriptions };
  if (properties) packet.properties = properties;
  return packet;
}

function decodeUnsubscribe(r: PacketReader, version: ProtocolVersion): UnsubscribePacket {
  const packetId = r.u16('packet identifier');
  if (packetId === 0) throw r.malformed('packet identifier 0 [MQTT-2.3.1-1]');
  const properties = version === 5 ? readProperties(r, 'unsubscribe') : undefined;
  const filters: string[] = [];
  while (r.remaining > 0) filters.push(r.string('topic filter'));
  if (filters.length === 0) throw new ProtocolError(Reason.ProtocolError, 'UNSUBSCRIBE with no topic filter [MQTT-3.10.3-2]');
  const packet: UnsubscribePacket = { type: 'unsubscribe', packetId, filters };
  if (properties) packet.properties = properties;
  return packet;
}

function decodeDisconnect(r: PacketReader, version: ProtocolVersion): DisconnectPacket {
  let reasonCode = 0;
  let properties: Properties | undefined;
  if (version === 5) {
    if (r.remaining > 0) reasonCode = r.u8('reason code');
    if (r.remaining > 0) properties = readProperties(r, 'disconnect');
  }
  if (r.remaining !== 0) throw r.malformed(`${r.remaining} unexpected bytes at the end`);
  const packet: DisconnectPacket = { type: 'disconnect', reasonCode };
  if (properties) packet.properties = properties;
  return packet;
}

function decodeAuth(r: PacketReader): AuthPacket {
  let reasonCode = 0;
  let properties: Properties | undefined;
  if (r.remaining > 0) reasonCode = r.u8('reason code');
  if (r.remaining > 0) properties = readProperties(r, 'auth');
  if (r.remaining !== 0) throw r.malformed(`${r.remaining} unexpected bytes at the end`);
  const packet: AuthPacket = { type: 'auth', reasonCode };
  if (properties) packet.properties = properties;
  return packet;
}

// Byte properties whose only legal values are 0 and 1.
const booleanProperties = new Set([0x01, 0x17, 0x19, 0x24, 0x25, 0x28, 0x29, 0x2a]);

/** Reads an MQTT 5 property block; undefined when it is empty. */
export function readProperties(r: PacketReader, ctx: PropertyContext): Properties | undefined {
  const length = r.varint('property length');
  r.need(length, 'property length');
  if (length === 0) return undefined;
  const end = r.pos + length;
  const outerEnd = r.end;
  r.end = end; // a property cannot read past its block
  const props: Properties = {};
  const bag = props as Record<string, unknown>;
  try {
    while (r.pos < end) {
      const id = r.varint('property identifier');
      const def = id < 256 ? propertyById[id] : undefined;
      if (!def) throw r.malformed(`unknown property identifier 0x${id.toString(16)}`);
      // An identifier not valid for its packet type makes the packet malformed (2.2.2.2).
      if (!def.allowed.has(ctx)) throw r.malformed(`property ${def.key} is not allowed in ${ctx === 'will' ? 'will properties' : r.what}`);
      if (!def.repeatable && bag[def.key] !== undefined) {
        throw new ProtocolError(Reason.ProtocolError, `${r.what}: property ${def.key} appears more than once`);
      }
      switch (def.type) {
        case 'byte': {
          const v = r.u8(def.key);
          if (booleanProperties.has(id) && v > 1) {
            throw new ProtocolError(Reason.ProtocolError, `${r.what}: property ${def.key} is ${v}, must be 0 or 1`);
          }
          bag[def.key] = v;
          break;
        }
        case 'u16': bag[def.key] = r.u16(def.key); break;
        case 'u32': bag[def.key] = r.u32(def.key); break;
        case 'varint': {
          const v = r.varint(def.key);
          if (def.key === 'subscriptionIdentifiers') (props.subscriptionIdentifiers ??= []).push(v);
          else bag[def.key] = v;
          break;
        }
        case 'string': bag[def.key] = r.string(def.key); break;
        case 'binary': bag[def.key] = r.binary(def.key); break;
        case 'pair': {
          const k = r.string('user property name');
          const v = r.string('user property value');
          (props.userProperties ??= []).push([k, v]);
          break;
        }
      }
    }
  } finally {
    r.end = outerEnd;
  }
  return props;
}
