// Outgoing bytes of one connection. Packets are encoded straight into a slab that only grows
// forward: a flush hands the written region to the socket as one chunk (one syscall per
// connection per event-loop turn, however many packets) and later packets continue after it,
// so no region is ever rewritten while the kernel may still read it. Large payloads are passed
// by reference instead of copied. An idle connection keeps no slab.

const SLAB_MIN = 2048;
const SLAB_MAX = 64 * 1024;
/** Payloads at least this large are queued by reference rather than copied into the slab. */
export const COPY_LIMIT = 4096;

export class OutBuffer {
  private slab: Buffer | null = null;
  private start = 0;
  pos = 0;
  private sealed: Buffer[] = [];
  private sealedBytes = 0;
  /** Size hint for the next slab: grows under load, so busy connections allocate rarely. */
  private nextSlab = SLAB_MIN;

  /** Bytes written and not yet flushed. */
  get length(): number {
    return this.sealedBytes + (this.pos - this.start);
  }

  /** Makes room for n contiguous bytes and returns the slab to write into at `pos`. */
  reserve(n: number): Buffer {
    const slab = this.slab;
    if (slab && slab.length - this.pos >= n) return slab;
    this.seal();
    const size = Math.max(n, this.nextSlab);
    this.nextSlab = Math.min(SLAB_MAX, this.nextSlab * 2);
    const fresh = Buffer.allocUnsafeSlow(size);
    this.slab = fresh;
    this.start = 0;
    this.pos = 0;
    return fresh;
  }

  /** Appends a buffer by reference (no copy); the caller must not change it afterwards. */
  appendRef(b: Buffer): void {
    this.seal();
    this.sealed.push(b);
    this.sealedBytes += b.length;
  }

  /** Copies buf[start, end) in. */
  appendCopy(buf: Buffer, start: number, end: number): void {
    const n = end - start;
    const slab = this.reserve(n);
    buf.copy(slab, this.pos, start, end);
    this.pos += n;
  }

  private seal(): void {
    if (this.slab && this.pos > this.start) {
      this.sealed.push(this.slab.subarray(this.start, this.pos));
      this.sealedBytes += this.pos - this.start;
      this.start = this.pos;
    }
  }

  /**
   * Takes everything written so far as chunks to hand to the socket. The slab is kept only while
   * the connection is busy; an idle one gives it back to the allocator.
   */
  take(): Buffer[] {
    this.seal();
    const chunks = this.sealed;
    const bytes = this.sealedBytes;
    this.sealed = [];
    this.sealedBytes = 0;
    if (this.slab && (bytes < 1024 || this.slab.length - this.pos < 256)) {
      this.slab = null;
      this.start = this.pos = 0;
      if (bytes < 1024) this.nextSlab = SLAB_MIN;
    }
    return chunks;
  }
}
