// The framer: identical frames however the stream is split, and the two refusals (a Remaining
// Length over 4 bytes, a declared size over the limit) decided from the header alone.
import { expect } from 'chai';
import mqttPacket from 'mqtt-packet';
import { Framer, FrameError, type FrameSink } from '../../src/mqtt/codec/framer.js';

class Collector implements FrameSink {
  readonly frames: Buffer[] = [];
  readonly bodyOffsets: number[] = [];
  readonly headers: Array<[number, number]> = [];
  onHeader(firstByte: number, totalLength: number): boolean {
    this.headers.push([firstByte, totalLength]);
    return true;
  }
  onFrame(frame: Buffer, bodyOffset: number): boolean {
    // Copy: a frame may be a view of a chunk the test reuses.
    this.frames.push(Buffer.from(frame));
    this.bodyOffsets.push(bodyOffset);
    return true;
  }
}

function packets(): Buffer[] {
  const g = (p: mqttPacket.Packet, v: 4 | 5 = 4): Buffer => mqttPacket.generate(p, { protocolVersion: v });
  return [
    g({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, clientId: 'framer', keepalive: 60 }),
    g({ cmd: 'pingreq' }),
    g({ cmd: 'publish', topic: 'a', payload: Buffer.alloc(0), qos: 0, retain: false, dup: false }),
    g({ cmd: 'publish', topic: 'b/c', payload: Buffer.alloc(127, 1), qos: 1, messageId: 1, retain: false, dup: false }),
    // 2-byte Remaining Length
    g({ cmd: 'publish', topic: 'd', payload: Buffer.alloc(300, 2), qos: 0, retain: false, dup: false }),
    g({ cmd: 'subscribe', messageId: 2, subscriptions: [{ topic: 'x/#', qos: 1 }] }),
    g({ cmd: 'puback', messageId: 3 }),
    // 3-byte Remaining Length
    g({ cmd: 'publish', topic: 'e', payload: Buffer.alloc(20_000, 3), qos: 2, messageId: 4, retain: true, dup: false }),
    g({ cmd: 'disconnect' }),
  ];
}

describe('codec: framer', () => {
  it('hands out every frame of one chunk with its body offset', () => {
    const all = packets();
    const f = new Framer(1 << 20);
    const c = new Collector();
    f.push(Buffer.concat(all), c);
    expect(f.error).to.equal(FrameError.None);
    expect(c.frames).to.deep.equal(all);
    expect(c.bodyOffsets).to.deep.equal(all.map((p) => (p.length < 130 ? 2 : p.length < 16_400 ? 3 : 4)));
    expect(f.buffered).to.equal(0);
  });

  it('yields identical frames when the stream is split at every byte boundary (two pieces)', () => {
    const all = packets();
    const stream = Buffer.concat(all);
    for (let cut = 0; cut <= stream.length; cut++) {
      const f = new Framer(1 << 20);
      const c = new Collector();
      f.push(Buffer.from(stream.subarray(0, cut)), c);
      f.push(Buffer.from(stream.subarray(cut)), c);
      if (f.error !== FrameError.None || c.frames.length !== all.length) throw new Error(`split at ${cut}: ${c.frames.length} frames, error ${f.error}`);
      for (let i = 0; i < all.length; i++) {
        if (!c.frames[i]!.equals(all[i]!)) throw new Error(`split at ${cut}: frame ${i} differs`);
      }
      expect(f.buffered).to.equal(0);
    }
  });

  it('yields identical frames when the stream arrives one byte at a time', () => {
    const all = packets();
    const stream = Buffer.concat(all);
    const f = new Framer(1 << 20);
    const c = new Collector();
    for (let i = 0; i < stream.length; i++) f.push(Buffer.from([stream[i]!]), c);
    expect(f.error).to.equal(FrameError.None);
    expect(c.frames).to.deep.equal(all);
  });

  it('yields identical frames for random chunkings of many packets', () => {
    let seed = 12345;
    const rnd = (n: number): number => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed % n;
    };
    const base = packets();
    const all: Buffer[] = [];
    for (let i = 0; i < 120; i++) all.push(base[rnd(base.length)]!);
    const stream = Buffer.concat(all);
    for (let round = 0; round < 16; round++) {
      const f = new Framer(1 << 20);
      const c = new Collector();
      let pos = 0;
      while (pos < stream.length) {
        const n = 1 + rnd(round % 2 === 0 ? 8 : 30_000);
        f.push(Buffer.from(stream.subarray(pos, pos + n)), c);
        pos += n;
      }
      expect(f.error).to.equal(FrameError.None);
      expect(c.frames.length).to.equal(all.length);
      for (let i = 0; i < all.length; i++) expect(c.frames[i]!.equals(all[i]!)).to.equal(true);
    }
  });

  it('resumes after the sink pauses, keeping order with chunks appended meanwhile', () => {
    const all = packets();
    const stream = Buffer.concat(all);
    const f = new Framer(1 << 20);
    const frames: Buffer[] = [];
    let pauseNext = true;
    const sink: FrameSink = {
      onHeader: () => true,
      onFrame: (frame) => {
        frames.push(Buffer.from(frame));
        if (pauseNext) {
          pauseNext = false;
          return false;
        }
        return true;
      },
    };
    const mid = Math.floor(stream.length / 2);
    f.push(Buffer.from(stream.subarray(0, mid)), sink);
    expect(frames).to.have.length(1);
    f.append(Buffer.from(stream.subarray(mid)));
    f.run(sink);
    expect(frames).to.deep.equal(all);
  });

  it('Remaining Length of 5 bytes → MalformedLength [MQTT-1.5.5-1]', () => {
    const f = new Framer(1 << 28);
    const c = new Collector();
    f.push(Buffer.from([0x30, 0xff, 0xff, 0xff, 0xff, 0x01, 0, 0]), c);
    expect(f.error).to.equal(FrameError.MalformedLength);
    expect(c.headers).to.deep.equal([]);
    expect(c.frames).to.deep.equal([]);
  });

  it('Remaining Length of 5 bytes split across chunks → MalformedLength', () => {
    const f = new Framer(1 << 28);
    const c = new Collector();
    for (const b of [0x30, 0x80, 0x80, 0x80]) f.push(Buffer.from([b]), c);
    expect(f.error).to.equal(FrameError.None);
    f.push(Buffer.from([0x80]), c);
    f.push(Buffer.from([0x01]), c);
    expect(f.error).to.equal(FrameError.MalformedLength);
    expect(c.headers).to.deep.equal([]);
  });

  it('the largest 4-byte Remaining Length is accepted by the varint rule (then refused as too large)', () => {
    const f = new Framer(1000);
    const c = new Collector();
    f.push(Buffer.from([0x30, 0xff, 0xff, 0xff, 0x7f]), c);
    expect(f.error).to.equal(FrameError.TooLarge);
  });

  it('a header declaring more than maxPacketSize → TooLarge before any body byte arrives', () => {
    const f = new Framer(1024);
    const c = new Collector();
    // 1025 bytes in total: 1 + 2 (varint of 1022) + 1022.
    f.push(Buffer.from([0x30, 0xfe, 0x07]), c);
    expect(f.error).to.equal(FrameError.TooLarge);
    expect(c.headers).to.deep.equal([]);
    expect(f.buffered).to.equal(0);
    // Further data is ignored, nothing is buffered.
    f.push(Buffer.alloc(5000), c);
    expect(f.buffered).to.equal(0);
    expect(c.frames).to.deep.equal([]);
  });

  it('a packet of exactly maxPacketSize is accepted; the limit counts the fixed header', () => {
    const f = new Framer(1024);
    const c = new Collector();
    const body = Buffer.alloc(1021);
    f.push(Buffer.concat([Buffer.from([0x30, 0xfd, 0x07]), body]), c);
    expect(f.error).to.equal(FrameError.None);
    expect(c.frames).to.have.length(1);
    expect(c.headers).to.deep.equal([[0x30, 1024]]);
  });

  it('a huge declared length with a header split over chunks is refused when the header completes', () => {
    const f = new Framer(1 << 20);
    const c = new Collector();
    f.push(Buffer.from([0x30, 0xff]), c);
    f.push(Buffer.from([0xff, 0xff]), c);
    expect(f.error).to.equal(FrameError.None);
    f.push(Buffer.from([0x7f]), c);
    expect(f.error).to.equal(FrameError.TooLarge);
    expect(f.buffered).to.equal(0);
  });

  it('onHeader returning false stops the framer before the body is buffered', () => {
    const f = new Framer(1 << 20);
    let frames = 0;
    f.push(Buffer.from([0x30, 0xff, 0xff, 0x3f, 1, 2, 3]), {
      onHeader: () => false,
      onFrame: () => {
        frames++;
        return true;
      },
    });
    expect(frames).to.equal(0);
    expect(f.buffered).to.equal(0);
  });
});
