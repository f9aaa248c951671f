// Outbox segments: the records of one class that one commit appended, packed into one BLOB.
//
// Why: a row per message cost the writer a B-tree insert (table and class index) on append and a
// B-tree delete on HQ's acknowledgement, and the drain a row of ten columns to convert per message
// (better-sqlite3 makes a Buffer per BLOB: about 1 µs each). A segment is one row per class per
// commit: appending N records writes their bytes once, reading them back is one BLOB, and
// deleting them — once every record is acknowledged — frees the segment's pages at once. Records
// deleted before that are bits in a small bitmap (outbox_gone), rewritten with the commit.
//
// Layout of one record (integers big-endian, so migration 8 builds records from old rows with SQL
// printf):
//   seq 6 | created_at 6 | expires_at 6 | qos 1 | size 4 |
//   local topic length 2 | topic length 2 | properties length 4 | payload length 4 |
//   local topic (UTF-8) | topic (UTF-8) | properties (JSON, UTF-8; empty = none) | payload
import type { Properties, QoS } from '../mqtt/packets.js';
import type { OutboxClass } from '../bridge/types.js';
import type { OutboxRow } from './outbox-store.js';
import { decodeProperties, encodeProperties } from './sqlite-state-store.js';

export const RECORD_HEADER_BYTES = 35;

/** What a segment row holds besides its records. */
export interface SegmentSummary {
  firstSeq: number;
  lastSeq: number;
  count: number;
  /** Sum of the records' sizes. */
  bytes: number;
  /** Smallest expiresAt > 0 among the records; 0 when none expires. */
  minExpires: number;
}

/** Packs records (one class, seq order) into one buffer. */
export function encodeSegment(records: readonly OutboxRow[]): { data: Buffer; summary: SegmentSummary } {
  const n = records.length;
  if (n === 0) throw new RangeError('a segment needs at least one record');
  const props: (string | null)[] = new Array<string | null>(n);
  let total = 0;
  let bytes = 0;
  let minExpires = 0;
  for (let i = 0; i < n; i++) {
    const r = records[i]!;
    const p = encodeProperties(r.properties);
    props[i] = p;
    total +=
      RECORD_HEADER_BYTES +
      Buffer.byteLength(r.localTopic) +
      Buffer.byteLength(r.topic) +
      (p === null ? 0 : Buffer.byteLength(p)) +
      r.payload.length;
    bytes += r.size;
    if (r.expiresAt > 0 && (minExpires === 0 || r.expiresAt < minExpires)) minExpires = r.expiresAt;
  }
  // Not from the pool: the buffer is handed to the writer thread, which copies its whole ArrayBuffer.
  const data = Buffer.allocUnsafeSlow(total);
  let off = 0;
  for (let i = 0; i < n; i++) {
    const r = records[i]!;
    const p = props[i] ?? null;
    const start = off;
    data.writeUIntBE(r.seq, off, 6);
    data.writeUIntBE(r.createdAt, off + 6, 6);
    data.writeUIntBE(r.expiresAt, off + 12, 6);
    data[off + 18] = r.qos;
    data.writeUInt32BE(r.size, off + 19);
    off += RECORD_HEADER_BYTES;
    const lt = data.write(r.localTopic, off, 'utf8');
    off += lt;
    const tt = data.write(r.topic, off, 'utf8');
    off += tt;
    const pp = p === null ? 0 : data.write(p, off, 'utf8');
    off += pp;
    off += r.payload.copy(data, off);
    data.writeUInt16BE(lt, start + 23);
    data.writeUInt16BE(tt, start + 25);
    data.writeUInt32BE(pp, start + 27);
    data.writeUInt32BE(r.payload.length, start + 31);
  }
  const first = records[0]!;
  const last = records[n - 1]!;
  return { data, summary: { firstSeq: first.seq, lastSeq: last.seq, count: n, bytes, minExpires } };
}

/** Distinct topics a decode remembers, of each kind (a segment's records mostly share a few). */
const TOPIC_MEMORY = 16;

/**
 * The topics of one decode: the UTF-8 bytes data[start, end) as a string, the same string object
 * for the same bytes when they were seen recently. A drain decodes every record; a string per
 * topic per record was a sixth of its main thread with the garbage it left.
 */
class TopicStrings {
  private readonly starts: number[] = [];
  private readonly lengths: number[] = [];
  private readonly strings: string[] = [];
  private next = 0;

  constructor(private readonly data: Buffer) {}

  get(start: number, end: number): string {
    const data = this.data;
    const len = end - start;
    for (let k = 0; k < this.strings.length; k++) {
      if (this.lengths[k] !== len) continue;
      // From the end: topics of a truck share their first levels.
      const s = this.starts[k]!;
      let i = len - 1;
      while (i >= 0 && data[s + i] === data[start + i]) i--;
      if (i < 0) return this.strings[k]!;
    }
    const str = data.toString('utf8', start, end);
    const k = this.next;
    this.next = (k + 1) % TOPIC_MEMORY;
    this.starts[k] = start;
    this.lengths[k] = len;
    this.strings[k] = str;
    return str;
  }
}

/**
 * A record decoded from a segment. Its payload and creation time stay in the segment's bytes until
 * asked for: the drain sends the payload straight from `data` (Link.publishNumbered takes the
 * range) and never reads createdAt, and a view plus a HeapNumber per record were a third of the
 * garbage a drain made (heap profile).
 */
export class SegmentRow implements OutboxRow {
  properties: Properties | undefined = undefined;

  constructor(
    /** The segment's bytes. */
    readonly data: Buffer,
    /** Where the record's header starts in `data`. */
    private readonly at: number,
    readonly seq: number,
    readonly cls: OutboxClass,
    readonly localTopic: string,
    readonly topic: string,
    readonly qos: QoS,
    readonly expiresAt: number,
    readonly size: number,
    /** The payload is data[payloadStart, payloadEnd). */
    readonly payloadStart: number,
    readonly payloadEnd: number,
  ) {}

  /** A view into the segment (no copy). */
  get payload(): Buffer {
    return this.data.subarray(this.payloadStart, this.payloadEnd);
  }

  get createdAt(): number {
    return readU48(this.data, this.at + 6);
  }
}

/** A 6-byte big-endian integer (seq, times) as arithmetic on two reads, with no call to readUIntBE. */
function readU48(data: Buffer, off: number): number {
  return data.readUInt16BE(off) * 0x100000000 + data.readUInt32BE(off + 2);
}

/**
 * Unpacks a segment's records. Payloads stay in `data` (SegmentRow); records with the same topic
 * share its string. Throws on a record that runs past the end (a damaged row).
 */
export function decodeSegment(data: Buffer, cls: OutboxClass): SegmentRow[] {
  const out: SegmentRow[] = [];
  const localTopics = new TopicStrings(data);
  const topics = new TopicStrings(data);
  let off = 0;
  const end = data.length;
  while (off < end) {
    if (off + RECORD_HEADER_BYTES > end) throw new RangeError(`outbox segment damaged: a record header at byte ${off} runs past ${end}`);
    const lt = data.readUInt16BE(off + 23);
    const tt = data.readUInt16BE(off + 25);
    const pp = data.readUInt32BE(off + 27);
    const pl = data.readUInt32BE(off + 31);
    const a = off + RECORD_HEADER_BYTES;
    const b = a + lt;
    const c = b + tt;
    const d = c + pp;
    const e = d + pl;
    if (e > end) throw new RangeError(`outbox segment damaged: the record at byte ${off} runs past ${end}`);
    const rec = new SegmentRow(
      data, off, readU48(data, off), cls, localTopics.get(a, b), topics.get(b, c), data[off + 18] as QoS,
      readU48(data, off + 12), data.readUInt32BE(off + 19), d, e,
    );
    if (pp > 0) rec.properties = decodeProperties(data.toString('utf8', c, d));
    out.push(rec);
    off = e;
  }
  return out;
}

// ---- the gone bitmap: bit i set = record i of the segment is deleted ----

export function goneBitmap(count: number): Uint8Array {
  return new Uint8Array((count + 7) >>> 3);
}

export function isGone(bits: Uint8Array | null, index: number): boolean {
  return bits !== null && (bits[index >>> 3]! & (1 << (index & 7))) !== 0;
}

export function setGone(bits: Uint8Array, index: number): void {
  bits[index >>> 3]! |= 1 << (index & 7);
}
