// Packet ids of uplink QoS 2 records: derived from the record's seq, in a range of their own, so
// that a record keeps its id across connections without storing it. A QoS 2 flow cut by a lost
// connection must go on with the same id when HQ kept the session (PUBLISH again with DUP, or
// PUBREL once HQ had sent PUBREC). Ids below the range are for everything else on the connection
// (QoS 1 uplink publishes, MQTT.js's SUBSCRIBE: PacketIds in link.ts).
// Two records whose seqs differ by a multiple of QOS2_ID_COUNT are never in flight together: the
// forwarder holds the newer one back.

export const QOS2_ID_BASE = 49152;
export const QOS2_ID_COUNT = 65536 - QOS2_ID_BASE;

export function qos2PacketId(seq: number): number {
  return QOS2_ID_BASE + (seq % QOS2_ID_COUNT);
}
