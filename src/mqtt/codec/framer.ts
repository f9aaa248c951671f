// Splits a byte stream into MQTT frames. It reads the fixed header first and rejects a Remaining
// Length over 4 bytes or a packet above the size limit before buffering any of the body, so a
// declared length never makes the broker allocate. Complete frames inside one chunk are handed
// out as views of that chunk (no copy); only a frame split across chunks is assembled.

export const enum FrameError {
  None = 0,
  /** Remaining Length encoded in more than 4 bytes [MQTT-2.2.3]. */
  MalformedLength = 1,
  /** The packet is larger than the limit in force. */
  TooLarge = 2,
}

export interface FrameSink {
  /**
   * Called once the fixed header is known, before the body is buffered; return false to refuse
   * it (the framer stops). Used for "CONNECT first" and the pre-CONNECT size cap.
   */
  onHeader(firstByte: number, totalLength: number): boolean;
  /** A complete frame (fixed header at 0). Return false to stop processing (pause or close). */
  onFrame(frame: Buffer, bodyOffset: number): boolean;
}

export class Framer {
  /** Bytes of the current chunk not yet consumed. */
  private buf: Buffer | null = null;
  private off = 0;
  /** A frame being assembled across chunks. */
  private partial: Buffer | null = null;
  private partialFill = 0;
  private partialBody = 0;
  error: FrameError = FrameError.None;
  /** Packet size limit in bytes (total, including the fixed header). */
  maxPacketSize: number;

  constructor(maxPacketSize: number) {
    this.maxPacketSize = maxPacketSize;
  }

  /** Bytes held but not yet handed out as frames. */
  get buffered(): number {
    return (this.buf ? this.buf.length - this.off : 0) + this.partialFill;
  }

  /** Adds a chunk and processes frames until the sink stops or the data runs out. */
  push(chunk: Buffer, sink: FrameSink): void {
    this.append(chunk);
    this.run(sink);
  }

  /** Adds a chunk without processing it (the sink is paused). */
  append(chunk: Buffer): void {
    if (this.error !== FrameError.None) return;
    if (this.partial && !this.buf) {
      this.buf = chunk;
      this.off = 0;
    } else if (this.buf && this.off < this.buf.length) {
      // Unconsumed bytes remain (the sink paused): keep order by appending.
      this.buf = Buffer.concat([this.buf.subarray(this.off), chunk]);
      this.off = 0;
    } else {
      this.buf = chunk;
      this.off = 0;
    }
  }

  /** Resumes after the sink returned false from onFrame. */
  run(sink: FrameSink): void {
    if (this.error !== FrameError.None) return;
    let buf = this.buf;
    if (!buf) return;
    if (this.partial) {
      if (!this.fillPartial(sink)) return;
      buf = this.buf;
      if (!buf) return;
    }
    while (this.off < buf.length) {
      const start = this.off;
      const avail = buf.length - start;
      if (avail < 2) break;
      // Decode the Remaining Length varint (at most 4 bytes).
      let len = 0;
      let mult = 1;
      let i = 1;
      let complete = false;
      for (; i <= 4 && i < avail; i++) {
        const b = buf[start + i]!;
        len += (b & 0x7f) * mult;
        if ((b & 0x80) === 0) {
          complete = true;
          break;
        }
        mult *= 128;
      }
      if (!complete) {
        if (i > 4) return this.fail(FrameError.MalformedLength);
        break; // header split across chunks
      }
      const headerLen = i + 1;
      const total = headerLen + len;
      if (total > this.maxPacketSize) return this.fail(FrameError.TooLarge);
      if (!sink.onHeader(buf[start]!, total)) {
        this.buf = null;
        return;
      }
      if (avail < total) {
        // Assemble this frame across chunks: allocate exactly its size, now known to be allowed.
        this.partial = Buffer.allocUnsafe(total);
        buf.copy(this.partial, 0, start, buf.length);
        this.partialFill = avail;
        this.partialBody = headerLen;
        this.buf = null;
        this.off = 0;
        return;
      }
      this.off = start + total;
      if (!sink.onFrame(buf.subarray(start, start + total), headerLen)) return;
      if (this.buf !== buf) return; // the sink replaced or cleared the buffer (closed)
    }
    // Keep the tail (an incomplete header) for the next chunk.
    if (this.off < buf.length) {
      this.buf = buf.subarray(this.off);
      this.off = 0;
    } else {
      this.buf = null;
      this.off = 0;
    }
  }

  /** Copies from buf into the partial frame; hands it out when complete. */
  private fillPartial(sink: FrameSink): boolean {
    const partial = this.partial!;
    const buf = this.buf!;
    const take = Math.min(partial.length - this.partialFill, buf.length - this.off);
    buf.copy(partial, this.partialFill, this.off, this.off + take);
    this.partialFill += take;
    this.off += take;
    if (this.off >= buf.length) {
      this.buf = null;
      this.off = 0;
    }
    if (this.partialFill < partial.length) return false;
    this.partial = null;
    this.partialFill = 0;
    const keepBuf = this.buf;
    if (!sink.onFrame(partial, this.partialBody)) return false;
    return this.buf === keepBuf;
  }

  private fail(error: FrameError): void {
    this.error = error;
    this.buf = null;
    this.partial = null;
  }

  /** Drops everything (connection closed). */
  reset(): void {
    this.buf = null;
    this.off = 0;
    this.partial = null;
    this.partialFill = 0;
  }
}
