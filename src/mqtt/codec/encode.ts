// Encoders for the packets a server sends, writing straight into a connection's OutBuffer.
// Sizes are computed first, then bytes written once: no intermediate buffers.
import type { Properties, ProtocolVersion, QoS, UserProperties } from '../packets.js';
import { PacketType } from '../packets.js';
import { COPY_LIMIT, type OutBuffer } from './out-buffer.js';
import { propertyByKey } from './properties.js';

/** Wire id of the user property (the only property a numbered PUBLISH carries). */
const USER_PROPERTY = 0x26;

export function varintSize(n: number): number {
  return n < 128 ? 1 : n < 16384 ? 2 : n < 2097152 ? 3 : 4;
}

function writeVarint(b: Buffer, pos: number, n: number): number {
  do {
    let byte = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) byte |= 0x80;
    b[pos++] = byte;
  } while (n > 0);
  return pos;
}

function writeU16(b: Buffer, pos: number, n: number): number {
  b[pos] = n >> 8;
  b[pos + 1] = n & 0xff;
  return pos + 2;
}

function writeString(b: Buffer, pos: number, s: string): number {
  const n = b.write(s, pos + 2, 'utf8');
  writeU16(b, pos, n);
  return pos + 2 + n;
}

function writeBinary(b: Buffer, pos: number, v: Buffer): number {
  writeU16(b, pos, v.length);
  v.copy(b, pos + 2);
  return pos + 2 + v.length;
}

// Both walk the properties object's own keys (usually one or two) rather than the table of all
// 27 properties: this runs twice for every MQTT 5 PUBLISH encoded, uplink ones included. Properties
// go on the wire in the object's key order (for a forwarded PUBLISH, the order they arrived in).

/** Size in bytes of a property block's content (without its length prefix). */
export function propertiesSize(p: Properties | undefined): number {
  if (!p) return 0;
  let size = 0;
  const bag = p as Record<string, unknown>;
  for (const key in bag) {
    const v = bag[key];
    const def = propertyByKey.get(key as keyof Properties);
    if (v === undefined || def === undefined) continue;
    switch (def.type) {
      case 'byte': size += 2; break;
      case 'u16': size += 3; break;
      case 'u32': size += 5; break;
      case 'varint':
        for (const n of v as number[]) size += 1 + varintSize(n);
        break;
      case 'string': size += 3 + Buffer.byteLength(v as string); break;
      case 'binary': size += 3 + (v as Buffer).length; break;
      case 'pair':
        for (const [k, val] of v as Array<[string, string]>) size += 5 + Buffer.byteLength(k) + Buffer.byteLength(val);
        break;
    }
  }
  return size;
}

function writeProperties(b: Buffer, pos: number, p: Properties | undefined, size: number): number {
  pos = writeVarint(b, pos, size);
  if (!p) return pos;
  const bag = p as Record<string, unknown>;
  for (const key in bag) {
    const v = bag[key];
    const def = propertyByKey.get(key as keyof Properties);
    if (v === undefined || def === undefined) continue;
    switch (def.type) {
      case 'byte': b[pos++] = def.id; b[pos++] = v as number; break;
      case 'u16': b[pos++] = def.id; pos = writeU16(b, pos, v as number); break;
      case 'u32': b[pos++] = def.id; b.writeUInt32BE(v as number, pos); pos += 4; break;
      case 'varint':
        for (const n of v as number[]) {
          b[pos++] = def.id;
          pos = writeVarint(b, pos, n);
        }
        break;
      case 'string': b[pos++] = def.id; pos = writeString(b, pos, v as string); break;
      case 'binary': b[pos++] = def.id; pos = writeBinary(b, pos, v as Buffer); break;
      case 'pair':
        for (const [k, val] of v as Array<[string, string]>) {
          b[pos++] = def.id;
          pos = writeString(b, pos, k);
          pos = writeString(b, pos, val);
        }
        break;
    }
  }
  return pos;
}

/** Writes fixed header + body of `bodyLen`; returns the slab and the body's offset. */
function begin(out: OutBuffer, firstByte: number, bodyLen: number): [Buffer, number] {
  const total = 1 + varintSize(bodyLen) + bodyLen;
  const b = out.reserve(total);
  let pos = out.pos;
  b[pos++] = firstByte;
  pos = writeVarint(b, pos, bodyLen);
  out.pos += total;
  return [b, pos];
}

export function writeConnack(out: OutBuffer, version: ProtocolVersion, sessionPresent: boolean, code: number, props?: Properties): void {
  if (version !== 5) {
    const [b, pos] = begin(out, PacketType.CONNACK << 4, 2);
    // Session Present exists from 3.1.1 on; in MQTT 3.1 the byte is reserved (0).
    b[pos] = sessionPresent && version === 4 ? 1 : 0;
    b[pos + 1] = code;
    return;
  }
  const ps = propertiesSize(props);
  const [b, pos] = begin(out, PacketType.CONNACK << 4, 2 + varintSize(ps) + ps);
  b[pos] = sessionPresent ? 1 : 0;
  b[pos + 1] = code;
  writeProperties(b, pos + 2, props, ps);
}

/** PUBACK, PUBREC, PUBREL or PUBCOMP. MQTT 5 uses the short form when the reason is Success. */
export function writeAck(
  out: OutBuffer, type: 4 | 5 | 6 | 7, packetId: number, version: ProtocolVersion, code = 0, props?: Properties,
): void {
  const first = (type << 4) | (type === PacketType.PUBREL ? 2 : 0);
  if (version !== 5 || (code === 0 && !props)) {
    const b = out.reserve(4);
    const pos = out.pos;
    b[pos] = first;
    b[pos + 1] = 2;
    b[pos + 2] = packetId >> 8;
    b[pos + 3] = packetId & 0xff;
    out.pos += 4;
    return;
  }
  const ps = propertiesSize(props);
  const body = 3 + (ps > 0 ? varintSize(ps) + ps : 0);
  const [b, pos] = begin(out, first, body);
  writeU16(b, pos, packetId);
  b[pos + 2] = code;
  if (ps > 0) writeProperties(b, pos + 3, props, ps);
}

/** SUBACK or UNSUBACK (3.1.1 UNSUBACK carries no codes). */
export function writeSubUnsubAck(
  out: OutBuffer, type: 9 | 11, version: ProtocolVersion, packetId: number, codes: number[], props?: Properties,
): void {
  const withCodes = type === PacketType.SUBACK || version === 5;
  const ps = version === 5 ? propertiesSize(props) : 0;
  const propLen = version === 5 ? varintSize(ps) + ps : 0;
  const [b, start] = begin(out, type << 4, 2 + propLen + (withCodes ? codes.length : 0));
  let pos = writeU16(b, start, packetId);
  if (version === 5) pos = writeProperties(b, pos, props, ps);
  if (withCodes) for (const c of codes) b[pos++] = c;
}

export function writePingresp(out: OutBuffer): void {
  const b = out.reserve(2);
  b[out.pos] = PacketType.PINGRESP << 4;
  b[out.pos + 1] = 0;
  out.pos += 2;
}

/** DISCONNECT from the server: MQTT 5 only (3.1.1 servers just close). */
export function writeDisconnect(out: OutBuffer, code: number, props?: Properties): void {
  const ps = propertiesSize(props);
  if (code === 0 && ps === 0) {
    begin(out, PacketType.DISCONNECT << 4, 0);
    return;
  }
  const [b, pos] = begin(out, PacketType.DISCONNECT << 4, 1 + (ps > 0 ? varintSize(ps) + ps : 0));
  b[pos] = code;
  if (ps > 0) writeProperties(b, pos + 1, props, ps);
}

export function writeAuth(out: OutBuffer, code: number, props?: Properties): void {
  const ps = propertiesSize(props);
  const [b, pos] = begin(out, PacketType.AUTH << 4, 1 + varintSize(ps) + ps);
  b[pos] = code;
  writeProperties(b, pos + 1, props, ps);
}

/**
 * What the publish encoder needs of a message. Topic bytes can come from the frame the message
 * arrived in (length-prefixed, copied as they are) or be encoded from the string.
 */
export interface PublishSource {
  topic: string;
  /** Encoded topic length in bytes. */
  topicLength: number;
  /** Buffer holding the 2-byte length + topic bytes at topicOffset, or null to encode `topic`. */
  topicBuf: Buffer | null;
  topicOffset: number;
  payloadBuf: Buffer;
  payloadStart: number;
  payloadEnd: number;
}

/**
 * Writes a PUBLISH. `props` are the MQTT 5 properties to send (already including subscription
 * identifiers and adjusted expiry); `omitTopic` sends an empty topic name (an outbound topic alias).
 */
export function writePublish(
  out: OutBuffer, version: ProtocolVersion, src: PublishSource, qos: QoS, retain: boolean, dup: boolean,
  packetId: number, props?: Properties, omitTopic = false,
): void {
  const topicLen = omitTopic ? 0 : src.topicLength;
  const payloadLen = src.payloadEnd - src.payloadStart;
  const ps = version === 5 ? propertiesSize(props) : 0;
  const headLen = 2 + topicLen + (qos > 0 ? 2 : 0) + (version === 5 ? varintSize(ps) + ps : 0);
  const bodyLen = headLen + payloadLen;
  const first = (PacketType.PUBLISH << 4) | (dup ? 8 : 0) | (qos << 1) | (retain ? 1 : 0);
  const byRef = payloadLen >= COPY_LIMIT;
  const total = 1 + varintSize(bodyLen) + headLen + (byRef ? 0 : payloadLen);
  const b = out.reserve(total);
  let pos = out.pos;
  b[pos++] = first;
  pos = writeVarint(b, pos, bodyLen);
  if (omitTopic) {
    b[pos++] = 0;
    b[pos++] = 0;
  } else if (src.topicBuf) {
    src.topicBuf.copy(b, pos, src.topicOffset, src.topicOffset + 2 + topicLen);
    pos += 2 + topicLen;
  } else {
    writeU16(b, pos, topicLen);
    b.write(src.topic, pos + 2, 'utf8');
    pos += 2 + topicLen;
  }
  if (qos > 0) pos = writeU16(b, pos, packetId);
  if (version === 5) pos = writeProperties(b, pos, props, ps);
  writePayload(out, b, pos, src.payloadBuf, src.payloadStart, src.payloadEnd, byRef);
}

/** A PUBLISH's payload after its head (ending at `pos`): copied into the slab, or queued by reference. */
function writePayload(out: OutBuffer, b: Buffer, pos: number, payload: Buffer, start: number, end: number, byRef: boolean): void {
  if (byRef) {
    out.pos = pos;
    out.appendRef(payload.subarray(start, end));
    return;
  }
  payload.copy(b, pos, start, end);
  out.pos = pos + end - start;
}

/**
 * User properties whose last value is a number that changes with every message, the rest fixed
 * (the uplink's `gw` = gateway id, then `seq`). The fixed part is encoded once, here, so a PUBLISH
 * only adds the number: no properties object, no strings, no walk over keys.
 */
export class NumberedUserProperties {
  /** The fixed pairs, then the last pair's property id and key: everything before the number. */
  readonly head: Buffer;

  constructor(fixed: UserProperties, numberKey: string) {
    let size = 3 + Buffer.byteLength(numberKey);
    for (const [k, v] of fixed) size += 5 + Buffer.byteLength(k) + Buffer.byteLength(v);
    const b = Buffer.alloc(size);
    let pos = 0;
    for (const [k, v] of fixed) {
      b[pos++] = USER_PROPERTY;
      pos = writeString(b, pos, k);
      pos = writeString(b, pos, v);
    }
    b[pos++] = USER_PROPERTY;
    writeString(b, pos, numberKey);
    this.head = b;
  }
}

/** Number of decimal digits of a non-negative integer. */
function decimalLength(n: number): number {
  let len = 1;
  while (n >= 10) {
    n = Math.floor(n / 10);
    len++;
  }
  return len;
}

/**
 * A PUBLISH's topic and payload as byte ranges of buffers. Both may be in one buffer: an outbox
 * segment holds a record's topic and payload (SegmentRow), so the drain encodes from it with no
 * string or object made per message.
 */
export interface NumberedSource {
  /** The topic's UTF-8 bytes are topicBuf[topicStart, topicEnd) (no length prefix, unlike PublishSource). */
  readonly topicBuf: Buffer;
  readonly topicStart: number;
  readonly topicEnd: number;
  /** The payload is payloadBuf[payloadStart, payloadEnd). */
  readonly payloadBuf: Buffer;
  readonly payloadStart: number;
  readonly payloadEnd: number;
}

/** Topics up to this many bytes are copied byte by byte: cheaper than Buffer#copy's view. */
const TOPIC_LOOP_MAX = 64;

/** Property identifier of Topic Alias (a two-byte integer). */
const TOPIC_ALIAS = 0x23;

/**
 * Writes an MQTT 5 PUBLISH (not retained, not dup) of `src` carrying `props` with `num`, a
 * non-negative safe integer, as the last value: the same bytes as writePublish given those user
 * properties with `String(num)`. `alias` (OutgoingTopicAliases.aliasFor): > 0 leaves the topic out
 * and sends that Topic Alias, < 0 sends the topic and -alias as its new Topic Alias, 0 neither.
 */
export function writePublishNumbered(
  out: OutBuffer, src: NumberedSource, qos: 0 | 1, packetId: number, props: NumberedUserProperties, num: number, alias = 0,
): void {
  const topicStart = src.topicStart;
  const topicLen = alias > 0 ? 0 : src.topicEnd - topicStart;
  const payloadLen = src.payloadEnd - src.payloadStart;
  const head = props.head;
  const digits = decimalLength(num);
  const ps = (alias !== 0 ? 3 : 0) + head.length + 2 + digits;
  const headLen = 2 + topicLen + (qos > 0 ? 2 : 0) + varintSize(ps) + ps;
  const bodyLen = headLen + payloadLen;
  const byRef = payloadLen >= COPY_LIMIT;
  const total = 1 + varintSize(bodyLen) + headLen + (byRef ? 0 : payloadLen);
  const b = out.reserve(total);
  let pos = out.pos;
  b[pos++] = (PacketType.PUBLISH << 4) | (qos << 1);
  pos = writeVarint(b, pos, bodyLen);
  pos = writeU16(b, pos, topicLen);
  const t = src.topicBuf;
  if (topicLen <= TOPIC_LOOP_MAX) {
    for (let i = 0; i < topicLen; i++) b[pos++] = t[topicStart + i]!;
  } else {
    pos += t.copy(b, pos, topicStart, src.topicEnd);
  }
  if (qos > 0) pos = writeU16(b, pos, packetId);
  pos = writeVarint(b, pos, ps);
  if (alias !== 0) {
    b[pos++] = TOPIC_ALIAS;
    pos = writeU16(b, pos, alias > 0 ? alias : -alias);
  }
  // Byte by byte: for a head this short, cheaper than Buffer#copy.
  for (let i = 0; i < head.length; i++) b[pos++] = head[i]!;
  pos = writeU16(b, pos, digits);
  // The digits from the last one back, with no string in between.
  for (let i = pos + digits - 1; i >= pos; i--) {
    const q = Math.floor(num / 10);
    b[i] = 0x30 + (num - q * 10);
    num = q;
  }
  writePayload(out, b, pos + digits, src.payloadBuf, src.payloadStart, src.payloadEnd, byRef);
}

const EMPTY = Buffer.alloc(0);

/** A NumberedSource to fill and pass on at once (one per sender, reused for every message). */
export class NumberedScratch implements NumberedSource {
  topicBuf: Buffer = EMPTY;
  topicStart = 0;
  topicEnd = 0;
  payloadBuf: Buffer = EMPTY;
  payloadStart = 0;
  payloadEnd = 0;

  /** Points at the whole of `topic` (UTF-8 bytes) and `payload`. */
  set(topic: Buffer, payload: Buffer): this {
    this.topicBuf = topic;
    this.topicStart = 0;
    this.topicEnd = topic.length;
    this.payloadBuf = payload;
    this.payloadStart = 0;
    this.payloadEnd = payload.length;
    return this;
  }
}

/** Total wire size of a PUBLISH, to check it against a client's maximum packet size. */
export function publishSize(version: ProtocolVersion, topicLen: number, payloadLen: number, qos: QoS, props?: Properties): number {
  const ps = version === 5 ? propertiesSize(props) : 0;
  const body = 2 + topicLen + (qos > 0 ? 2 : 0) + (version === 5 ? varintSize(ps) + ps : 0) + payloadLen;
  return 1 + varintSize(body) + body;
}
