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
import type { NumberedSource } from '../mqtt/codec/encode.js';
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

/**
 * A record decoded from a segment. Its topics, payload and creation time stay in the segment's
 * bytes until asked for. The drain sends topic and payload straight from `data` (it is the
 * NumberedSource that Link.publishNumbered encodes from) and reads neither string: a string per
 * topic per record, then the link's encoding of it again, were a tenth of a drain's main thread,
 * and a payload view plus a HeapNumber per record were a third of the garbage it made.
 */
export class SegmentRow implements OutboxRow, NumberedSource {
  properties: Properties | undefined = undefined;

  constructor(
    /** The segment's bytes. */
    readonly data: Buffer,
    /** Where the record's header starts in `data`. */
    private readonly at: number,
    readonly seq: number,
    readonly cls: OutboxClass,
    readonly qos: QoS,
    readonly expiresAt: number,
    readonly size: number,
    /** The remote topic's UTF-8 bytes are data[topicStart, topicEnd) (the local topic is just before). */
    readonly topicStart: number,
    readonly topicEnd: number,
    /** The payload is data[payloadStart, payloadEnd). */
    readonly payloadStart: number,
    readonly payloadEnd: number,
  ) {}

  get topicBuf(): Buffer {
    return this.data;
  }

  get payloadBuf(): Buffer {
    return this.data;
  }

  /** A new string on every call (diagnostics, newest-per-topic, signing: not the drain's path). */
  get localTopic(): string {
    return this.data.toString('utf8', this.at + RECORD_HEADER_BYTES, this.topicStart);
  }

  /** A new string on every call, as localTopic. */
  get topic(): string {
    return this.data.toString('utf8', this.topicStart, this.topicEnd);
  }

  /** A view into the segment (no copy). */
  get payload(): Buffer {
    return this.data.subarray(this.payloadStart, this.payloadEnd);
  }

  get createdAt(): number {
    return readU48(this.data, this.at + 6);
  }
}

// Big-endian integers read byte by byte: a Buffer method call costs a property load from
// Buffer.prototype (a generic load IC in optimized code) and a call, for each field of each record.
function readU16(data: Buffer, off: number): number {
  return (data[off]! << 8) | data[off + 1]!;
}

function readU32(data: Buffer, off: number): number {
  return data[off]! * 0x1000000 + ((data[off + 1]! << 16) | (data[off + 2]! << 8) | data[off + 3]!);
}

/** A 6-byte big-endian integer (seq, times). */
function readU48(data: Buffer, off: number): number {
  return readU16(data, off) * 0x100000000 + readU32(data, off + 2);
}

/**
 * Unpacks a segment's records; topics and payloads stay in `data` (SegmentRow). Throws on a record
 * that runs past the end (a damaged row). `encoded`: the records `data` was encoded from, whose
 * properties are taken as they are instead of parsed again from their JSON.
 */
export function decodeSegment(data: Buffer, cls: OutboxClass, encoded?: readonly OutboxRow[]): SegmentRow[] {
  const out: SegmentRow[] = [];
  let off = 0;
  const end = data.length;
  while (off < end) {
    if (off + RECORD_HEADER_BYTES > end) throw new RangeError(`outbox segment damaged: a record header at byte ${off} runs past ${end}`);
    const lt = readU16(data, off + 23);
    const tt = readU16(data, off + 25);
    const pp = readU32(data, off + 27);
    const pl = readU32(data, off + 31);
    const a = off + RECORD_HEADER_BYTES;
    const b = a + lt;
    const c = b + tt;
    const d = c + pp;
    const e = d + pl;
    if (e > end) throw new RangeError(`outbox segment damaged: the record at byte ${off} runs past ${end}`);
    const rec = new SegmentRow(data, off, readU48(data, off), cls, data[off + 18] as QoS, readU48(data, off + 12), readU32(data, off + 19), b, c, d, e);
    if (pp > 0) rec.properties = encoded !== undefined ? encoded[out.length]!.properties : decodeProperties(data.toString('utf8', c, d));
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
