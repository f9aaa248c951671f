// MQTT 5 property table (spec 2.2.2.2) as data: id, key, wire type and the packets that may carry
// it. The decoder enforces "allowed in this packet" and "at most once" from this table alone.
import type { Properties } from '../packets.js';

export type PropertyType = 'byte' | 'u16' | 'u32' | 'varint' | 'string' | 'binary' | 'pair';
/** Where a property may appear. 'will' is the will properties section of CONNECT. */
export type PropertyContext =
  | 'connect' | 'connack' | 'publish' | 'will' | 'puback' | 'pubrec' | 'pubrel' | 'pubcomp'
  | 'subscribe' | 'suback' | 'unsubscribe' | 'unsuback' | 'disconnect' | 'auth';

export interface PropertyDef {
  id: number;
  key: keyof Properties;
  type: PropertyType;
  allowed: ReadonlySet<PropertyContext>;
  /** User properties and (server→client) subscription identifiers may repeat. */
  repeatable: boolean;
}

const acks: PropertyContext[] = ['puback', 'pubrec', 'pubrel', 'pubcomp'];
const all: PropertyContext[] = [
  'connect', 'connack', 'publish', 'will', ...acks, 'subscribe', 'suback', 'unsubscribe', 'unsuback', 'disconnect', 'auth',
];

function def(id: number, key: keyof Properties, type: PropertyType, allowed: PropertyContext[], repeatable = false): PropertyDef {
  return { id, key, type, allowed: new Set(allowed), repeatable };
}

export const propertyDefs: readonly PropertyDef[] = [
  def(0x01, 'payloadFormatIndicator', 'byte', ['publish', 'will']),
  def(0x02, 'messageExpiryInterval', 'u32', ['publish', 'will']),
  def(0x03, 'contentType', 'string', ['publish', 'will']),
  def(0x08, 'responseTopic', 'string', ['publish', 'will']),
  def(0x09, 'correlationData', 'binary', ['publish', 'will']),
  def(0x0b, 'subscriptionIdentifiers', 'varint', ['publish', 'subscribe'], true),
  def(0x11, 'sessionExpiryInterval', 'u32', ['connect', 'connack', 'disconnect']),
  def(0x12, 'assignedClientIdentifier', 'string', ['connack']),
  def(0x13, 'serverKeepAlive', 'u16', ['connack']),
  def(0x15, 'authenticationMethod', 'string', ['connect', 'connack', 'auth']),
  def(0x16, 'authenticationData', 'binary', ['connect', 'connack', 'auth']),
  def(0x17, 'requestProblemInformation', 'byte', ['connect']),
  def(0x18, 'willDelayInterval', 'u32', ['will']),
  def(0x19, 'requestResponseInformation', 'byte', ['connect']),
  def(0x1a, 'responseInformation', 'string', ['connack']),
  def(0x1c, 'serverReference', 'string', ['connack', 'disconnect']),
  def(0x1f, 'reasonString', 'string', ['connack', ...acks, 'suback', 'unsuback', 'disconnect', 'auth']),
  def(0x21, 'receiveMaximum', 'u16', ['connect', 'connack']),
  def(0x22, 'topicAliasMaximum', 'u16', ['connect', 'connack']),
  def(0x23, 'topicAlias', 'u16', ['publish']),
  def(0x24, 'maximumQoS', 'byte', ['connack']),
  def(0x25, 'retainAvailable', 'byte', ['connack']),
  def(0x26, 'userProperties', 'pair', all, true),
  def(0x27, 'maximumPacketSize', 'u32', ['connect', 'connack']),
  def(0x28, 'wildcardSubscriptionAvailable', 'byte', ['connack']),
  def(0x29, 'subscriptionIdentifiersAvailable', 'byte', ['connack']),
  def(0x2a, 'sharedSubscriptionAvailable', 'byte', ['connack']),
];

/** Lookup by wire id (index = id), undefined for ids the spec does not define. */
export const propertyById: ReadonlyArray<PropertyDef | undefined> = (() => {
  const table: Array<PropertyDef | undefined> = new Array<PropertyDef | undefined>(256).fill(undefined);
  for (const d of propertyDefs) table[d.id] = d;
  return table;
})();

export const propertyByKey: ReadonlyMap<keyof Properties, PropertyDef> = new Map(propertyDefs.map((d) => [d.key, d]));
