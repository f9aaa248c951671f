import { expect } from 'chai';
import { AckTap } from '../../src/bridge/hq-stream.js';

const connack = Buffer.from([0x20, 0x02, 0x00, 0x00]);
const puback = (id: number, rc?: number): Buffer =>
  Buffer.from(rc === undefined ? [0x40, 0x02, id >> 8, id & 0xff] : [0x40, 0x03, id >> 8, id & 0xff, rc]);
const pubrec = (id: number): Buffer => Buffer.from([0x50, 0x02, id >> 8, id & 0xff]);

/** A QoS 0 PUBLISH with a payload long enough for a two-byte remaining length. */
function publish(topic: string, payloadBytes: number): Buffer {
  const t = Buffer.from(topic);
  const body = Buffer.concat([Buffer.from([t.length >> 8, t.length & 0xff]), t, Buffer.alloc(payloadBytes, 0x61)]);
  const len = body.length;
  const rem = len < 128 ? [len] : [(len & 0x7f) | 0x80, len >> 7];
  return Buffer.concat([Buffer.from([0x30, ...rem]), body]);
}

/** Runs the chunks through a tap that claims `ours`; returns what passed and the acks it took. */
function run(chunks: Buffer[], ours: Set<number>): { passed: Buffer; acks: Array<[number, number]> } {
  const acks: Array<[number, number]> = [];
  const tap = new AckTap((id, rc) => {
    if (!ours.has(id)) return false;
    acks.push([id, rc]);
    return true;
  });
  const out: Buffer[] = [];
  for (const c of chunks) {
    const p = tap.filter(c);
    if (p !== null) {
      expect(p.length, 'never an empty chunk').to.be.greaterThan(0);
      out.push(Buffer.from(p));
    }
  }
  return { passed: Buffer.concat(out), acks };
}

describe('AckTap', () => {
  it('takes out every PUBACK that is ours and passes nothing else when that is all there is', () => {
    const r = run([Buffer.concat([puback(1), puback(2), puback(3)])], new Set([1, 2, 3]));
    expect(r.passed.length).to.equal(0);
    expect(r.acks).to.deep.equal([
      [1, 0],
      [2, 0],
      [3, 0],
    ]);
  });

  it('passes the chunk itself, uncopied, when nothing in it is ours', () => {
    const chunk = Buffer.concat([connack, puback(9), pubrec(4)]);
    const tap = new AckTap(() => false);
    expect(tap.filter(chunk)).to.equal(chunk);
  });

  it('keeps everything else in order, PUBACKs for ids that are not ours included', () => {
    const pub = publish('fleet/gw1/orders/7', 300);
    const r = run([Buffer.concat([connack, puback(1), pub, puback(77), puback(2), pubrec(5)])], new Set([1, 2]));
    expect(r.passed.equals(Buffer.concat([connack, pub, puback(77), pubrec(5)]))).to.equal(true);
    expect(r.acks.map(([id]) => id)).to.deep.equal([1, 2]);
  });

  it('reads an MQTT 5 reason code', () => {
    const r = run([Buffer.concat([puback(4, 0x97), puback(5, 0x10)])], new Set([4, 5]));
    expect(r.acks).to.deep.equal([
      [4, 0x97],
      [5, 0x10],
    ]);
  });

  it('gives the same result however the bytes are split into chunks', () => {
    const pub = publish('fleet/gw1/orders/big', 200);
    const stream = Buffer.concat([connack, puback(1), pub, puback(2, 0x80), puback(66), publish('x', 3), puback(3), pubrec(9)]);
    const ours = new Set([1, 2, 3]);
    const whole = run([stream], ours);
    expect(whole.passed.equals(Buffer.concat([connack, pub, puback(66), publish('x', 3), pubrec(9)]))).to.equal(true);
    for (let a = 1; a < stream.length; a++) {
      for (const b of [a + 1, a + 3, a + 7]) {
        if (b >= stream.length) continue;
        const r = run([stream.subarray(0, a), stream.subarray(a, b), stream.subarray(b)], ours);
        expect(r.passed.equals(whole.passed), `split at ${a}/${b}`).to.equal(true);
        expect(r.acks, `split at ${a}/${b}`).to.deep.equal(whole.acks);
      }
    }
    // One byte at a time.
    const bytes = [...stream].map((x) => Buffer.from([x]));
    const r = run(bytes, ours);
    expect(r.passed.equals(whole.passed)).to.equal(true);
    expect(r.acks).to.deep.equal(whole.acks);
  });
});
