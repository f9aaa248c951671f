// A cursor over one complete packet body. Every read checks the packet's end, so a declared
// length can never make the decoder read past the packet or allocate by it.
import { ProtocolError } from '../errors.js';
import { Reason } from '../reason-codes.js';
import { decodeMqttString } from '../utf8.js';

export class PacketReader {
  buf: Buffer = Buffer.alloc(0);
  pos = 0;
  end = 0;
  /** Names the packet in error messages ("CONNECT"). */
  what = '';

  reset(buf: Buffer, pos: number, end: number, what: string): this {
    this.buf = buf;
    this.pos = pos;
    this.end = end;
    this.what = what;
    return this;
  }

  get remaining(): number {
    return this.end - this.pos;
  }

  malformed(message: string): ProtocolError {
    return new ProtocolError(Reason.MalformedPacket, `${this.what}: ${message}`);
  }

  need(n: number, field: string): void {
    if (this.end - this.pos < n) throw this.malformed(`${field} runs past the end of the packet`);
  }

  u8(field: string): number {
    this.need(1, field);
    return this.buf[this.pos++]!;
  }

  u16(field: string): number {
    this.need(2, field);
    const v = (this.buf[this.pos]! << 8) | this.buf[this.pos + 1]!;
    this.pos += 2;
    return v;
  }

  u32(field: string): number {
    this.need(4, field);
    const v = this.buf.readUInt32BE(this.pos);
    this.pos += 4;
    return v;
  }

  /** Variable byte integer: at most 4 bytes [MQTT-1.5.5-1]. */
  varint(field: string): number {
    let value = 0;
    let mult = 1;
    for (let i = 0; i < 4; i++) {
      const b = this.u8(field);
      value += (b & 0x7f) * mult;
      if ((b & 0x80) === 0) return value;
      mult *= 128;
    }
    throw this.malformed(`${field} is a variable byte integer longer than 4 bytes`);
  }

  string(field: string): string {
    const len = this.u16(field);
    this.need(len, field);
    const s = decodeMqttString(this.buf, this.pos, this.pos + len);
    if (s === null) throw this.malformed(`${field} is not valid UTF-8 or contains U+0000`);
    this.pos += len;
    return s;
  }

  binary(field: string): Buffer {
    const len = this.u16(field);
    this.need(len, field);
    // Copied out: binary fields (password, correlation data) outlive the read buffer.
    const b = Buffer.from(this.buf.subarray(this.pos, this.pos + len));
    this.pos += len;
    return b;
  }
}
