import { expect } from 'chai';
import type { OutboxRow } from '../../src/store/outbox-store.js';
import {
  RECORD_HEADER_BYTES,
  decodeSegment,
  encodeSegment,
  goneBitmap,
  isGone,
  setGone,
} from '../../src/store/outbox-segment.js';

function row(seq: number, extra: Partial<OutboxRow> = {}): OutboxRow {
  return {
    seq, cls: 'telemetry', localTopic: `truck/gps/${seq}`, topic: `fleet/gw1/gps/${seq}`, payload: Buffer.from(`p${seq}`),
    qos: 1, createdAt: 1_700_000_000_000 + seq, expiresAt: 0, size: 100 + seq, ...extra,
  };
}

/** The record's fields as a plain object (a decoded record reads payload and createdAt from its segment). */
function plain(r: OutboxRow): OutboxRow {
  const o: OutboxRow = {
    seq: r.seq, cls: r.cls, localTopic: r.localTopic, topic: r.topic, payload: Buffer.from(r.payload), qos: r.qos,
    createdAt: r.createdAt, expiresAt: r.expiresAt, size: r.size,
  };
  if (r.properties !== undefined) o.properties = r.properties;
  return o;
}

describe('outbox segments', () => {
  it('round-trips records: seqs, times, QoS, sizes, UTF-8 topics, properties with Buffers, binary and empty payloads', () => {
    const rows = [
      row(7, { localTopic: 'truck/é/ü', topic: 'fleet/gw1/é/ü', payload: Buffer.from([0, 255, 0]), qos: 0 }),
      row(9, { properties: { contentType: 'json', correlationData: Buffer.from([1, 2]), userProperties: [['k', 'v']] }, expiresAt: 2 ** 47 }),
      row(12, { payload: Buffer.alloc(0), qos: 2 }),
    ];
    const { data, summary } = encodeSegment(rows);
    expect(summary).to.deep.equal({ firstSeq: 7, lastSeq: 12, count: 3, bytes: 107 + 109 + 112, minExpires: 2 ** 47 });
    const back = decodeSegment(data, 'telemetry');
    expect(back.map(plain)).to.deep.equal(rows.map(plain));
    // Payloads are views into the segment, not copies, and their range is what the drain sends.
    expect(back[0]!.payload.buffer).to.equal(data.buffer);
    expect(data.subarray(back[0]!.payloadStart, back[0]!.payloadEnd)).to.deep.equal(Buffer.from([0, 255, 0]));
    expect(back[2]!.payloadEnd - back[2]!.payloadStart).to.equal(0);
  });

  it('decodes each record\'s own topics when many topics repeat, differ in one byte, or are many', () => {
    // Topics that repeat, that have the same length and differ only in their first byte, and 40
    // distinct ones. The ranges the drain encodes from hold the same bytes as the strings.
    const rows: OutboxRow[] = [];
    for (let i = 0; i < 200; i++) {
      const t = i % 40;
      const first = String.fromCharCode(97 + (t % 26));
      rows.push(row(i + 1, { localTopic: `${first}/sensor/${t >= 26 ? 'x' : 'y'}`, topic: `fleet/${t}/${first}` }));
    }
    rows.push(row(201, { localTopic: 'a/sensor/y', topic: 'fleet/0/a' }), row(202, { localTopic: 'b/sensor/y', topic: 'fleet/1/b' }));
    const back = decodeSegment(encodeSegment(rows).data, 'telemetry');
    expect(back.map((r) => [r.localTopic, r.topic])).to.deep.equal(rows.map((r) => [r.localTopic, r.topic]));
    expect(back.map((r) => r.topicBuf.toString('utf8', r.topicStart, r.topicEnd))).to.deep.equal(rows.map((r) => r.topic));
    expect(back.map((r) => r.payloadBuf.subarray(r.payloadStart, r.payloadEnd))).to.deep.equal(rows.map((r) => r.payload));
  });

  it('has no earliest expiry when nothing expires, and refuses an empty segment', () => {
    expect(encodeSegment([row(1), row(2)]).summary.minExpires).to.equal(0);
    expect(() => encodeSegment([])).to.throw(RangeError);
  });

  it('reports a damaged segment (cut in a header or in a record) instead of reading past its end', () => {
    const { data } = encodeSegment([row(1), row(2)]);
    expect(() => decodeSegment(data.subarray(0, data.length - 1), 'event')).to.throw(/runs past/);
    const firstLen = RECORD_HEADER_BYTES + row(1).localTopic.length + row(1).topic.length + 2;
    expect(() => decodeSegment(data.subarray(0, firstLen + 10), 'event')).to.throw(/header at byte/);
  });

  it('gone bitmaps: a bit per record', () => {
    const bits = goneBitmap(10);
    expect(bits.length).to.equal(2);
    setGone(bits, 0);
    setGone(bits, 9);
    setGone(bits, 9);
    expect([0, 1, 8, 9].map((i) => isGone(bits, i))).to.deep.equal([true, false, false, true]);
    expect(isGone(null, 3)).to.equal(false);
  });
});
