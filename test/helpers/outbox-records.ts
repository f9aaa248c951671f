import type { OutboxRecord } from '../../src/bridge/types.js';

/**
 * A record's fields as a plain object, to compare with deep equality: records read back from the
 * store are SegmentRows, whose topics, payload and createdAt are getters over the segment's bytes.
 */
export function fieldsOf(r: OutboxRecord): OutboxRecord {
  const o: OutboxRecord = {
    seq: r.seq, cls: r.cls, localTopic: r.localTopic, topic: r.topic, payload: Buffer.from(r.payload), qos: r.qos,
    createdAt: r.createdAt, expiresAt: r.expiresAt,
  };
  if (r.properties !== undefined) o.properties = r.properties;
  return o;
}
