// The encoder against an independent parser: each server packet is written into an OutBuffer,
// taken out as the socket would get it, and parsed back by mqtt-packet.
import { expect } from 'chai';
import fc from 'fast-check';
import mqttPacket from 'mqtt-packet';
import {
  NumberedScratch, NumberedUserProperties, publishSize, writeAck, writeConnack, writeDisconnect, writePingresp, writePublish, writePublishNumbered,
  writeSubUnsubAck, type PublishSource,
} from '../../src/mqtt/codec/encode.js';
import { COPY_LIMIT, OutBuffer } from '../../src/mqtt/codec/out-buffer.js';
import type { ProtocolVersion, UserProperties } from '../../src/mqtt/packets.js';

type Parsed = mqttPacket.Packet & Record<string, unknown>;

function parseAll(bytes: Buffer, version: ProtocolVersion): Parsed[] {
  const parser = mqttPacket.parser({ protocolVersion: version });
  const out: Parsed[] = [];
  const errors: Error[] = [];
  parser.on('packet', (p: mqttPacket.Packet) => out.push(p as Parsed));
  parser.on('error', (e: Error) => errors.push(e));
  parser.parse(bytes);
  if (errors.length > 0) throw errors[0]!;
  return out;
}

function take(out: OutBuffer): Buffer {
  return Buffer.concat(out.take());
}

function one(out: OutBuffer, version: ProtocolVersion): Parsed {
  const bytes = take(out);
  const packets = parseAll(bytes, version);
  expect(packets).to.have.length(1);
  return packets[0]!;
}

function source(topic: string, payload: Buffer): PublishSource {
  return {
    topic, topicLength: Buffer.byteLength(topic), topicBuf: null, topicOffset: 0,
    payloadBuf: payload, payloadStart: 0, payloadEnd: payload.length,
  };
}

describe('codec: encode server packets', () => {
  describe('CONNACK', () => {
    it('3.1.1: session present and return codes', () => {
      for (const [sp, code] of [[false, 0], [true, 0], [false, 1], [false, 5]] as const) {
        const out = new OutBuffer();
        writeConnack(out, 4, sp, code);
        const p = one(out, 4);
        expect(p).to.include({ cmd: 'connack', sessionPresent: sp, returnCode: code });
      }
    });

    it('5: reason code and properties', () => {
      const out = new OutBuffer();
      writeConnack(out, 5, true, 0, {
        receiveMaximum: 100, maximumPacketSize: 1048576, topicAliasMaximum: 64, retainAvailable: 1, maximumQoS: 1,
        wildcardSubscriptionAvailable: 1, subscriptionIdentifiersAvailable: 0, sharedSubscriptionAvailable: 1,
        assignedClientIdentifier: 'auto-1', serverKeepAlive: 60, sessionExpiryInterval: 10, reasonString: 'ok',
        userProperties: [['a', 'b'], ['a', 'c']],
      });
      const p = one(out, 5);
      expect(p.cmd).to.equal('connack');
      expect(p.sessionPresent).to.equal(true);
      expect(p.reasonCode).to.equal(0);
      expect(p.properties).to.deep.equal({
        receiveMaximum: 100, maximumPacketSize: 1048576, topicAliasMaximum: 64, retainAvailable: true, maximumQoS: 1,
        wildcardSubscriptionAvailable: true, subscriptionIdentifiersAvailable: false, sharedSubscriptionAvailable: true,
        assignedClientIdentifier: 'auto-1', serverKeepAlive: 60, sessionExpiryInterval: 10, reasonString: 'ok',
        userProperties: { a: ['b', 'c'] },
      });
    });

    it('5: refusal without properties', () => {
      const out = new OutBuffer();
      writeConnack(out, 5, false, 0x87);
      expect(one(out, 5)).to.include({ cmd: 'connack', sessionPresent: false, reasonCode: 0x87 });
    });
  });

  describe('PUBACK / PUBREC / PUBREL / PUBCOMP', () => {
    const types = [[4, 'puback'], [5, 'pubrec'], [6, 'pubrel'], [7, 'pubcomp']] as const;
    for (const version of [4, 5] as const) {
      for (const [type, cmd] of types) {
        it(`${cmd} (v${version}), short form`, () => {
          const out = new OutBuffer();
          writeAck(out, type, 513, version);
          const bytes = take(out);
          expect(bytes.length).to.equal(4);
          expect(bytes[0]).to.equal((type << 4) | (type === 6 ? 2 : 0));
          const p = parseAll(bytes, version)[0]!;
          expect(p.cmd).to.equal(cmd);
          expect(p.messageId).to.equal(513);
        });
      }
    }
    for (const [type, cmd] of types) {
      it(`${cmd} (v5) with a reason code and reason string`, () => {
        const code = type === 6 || type === 7 ? 0x92 : 0x80;
        const out = new OutBuffer();
        writeAck(out, type, 65535, 5, code, { reasonString: 'nope' });
        const p = one(out, 5);
        expect(p).to.include({ cmd, messageId: 65535, reasonCode: code });
        expect(p.properties).to.deep.equal({ reasonString: 'nope' });
      });
      it(`${cmd} (v5) with a reason code only`, () => {
        const code = type === 6 || type === 7 ? 0x92 : 0x10;
        const out = new OutBuffer();
        writeAck(out, type, 1, 5, code);
        expect(one(out, 5)).to.include({ cmd, messageId: 1, reasonCode: code });
      });
    }
  });

  describe('SUBACK / UNSUBACK', () => {
    it('3.1.1 SUBACK with granted QoS and the failure code', () => {
      const out = new OutBuffer();
      writeSubUnsubAck(out, 9, 4, 12, [0, 1, 2, 0x80]);
      expect(one(out, 4)).to.deep.include({ cmd: 'suback', messageId: 12, granted: [0, 1, 2, 0x80] });
    });

    it('3.1.1 UNSUBACK carries no codes', () => {
      const out = new OutBuffer();
      writeSubUnsubAck(out, 11, 4, 13, [0, 0x11]);
      const bytes = take(out);
      expect([...bytes]).to.deep.equal([0xb0, 2, 0, 13]);
      expect(parseAll(bytes, 4)[0]).to.include({ cmd: 'unsuback', messageId: 13 });
    });

    it('5 SUBACK and UNSUBACK with reason codes and properties', () => {
      const out = new OutBuffer();
      writeSubUnsubAck(out, 9, 5, 14, [1, 0x8f, 0xa2], { reasonString: 'partly' });
      const s = one(out, 5);
      expect(s).to.deep.include({ cmd: 'suback', messageId: 14, granted: [1, 0x8f, 0xa2] });
      expect(s.properties).to.deep.equal({ reasonString: 'partly' });
      writeSubUnsubAck(out, 11, 5, 15, [0, 0x11]);
      expect(one(out, 5)).to.deep.include({ cmd: 'unsuback', messageId: 15, granted: [0, 0x11] });
    });
  });

  it('PINGRESP', () => {
    const out = new OutBuffer();
    writePingresp(out);
    const bytes = take(out);
    expect([...bytes]).to.deep.equal([0xd0, 0]);
    expect(parseAll(bytes, 4)[0]!.cmd).to.equal('pingresp');
  });

  describe('DISCONNECT (5)', () => {
    it('normal disconnection is the 2-byte form', () => {
      const out = new OutBuffer();
      writeDisconnect(out, 0);
      const bytes = take(out);
      expect([...bytes]).to.deep.equal([0xe0, 0]);
      expect(parseAll(bytes, 5)[0]).to.include({ cmd: 'disconnect' });
    });

    it('reason codes with and without a reason string', () => {
      for (const code of [0x81, 0x82, 0x8b, 0x8e, 0x90, 0x93, 0x94, 0x95]) {
        const out = new OutBuffer();
        writeDisconnect(out, code);
        expect(one(out, 5)).to.include({ cmd: 'disconnect', reasonCode: code });
        writeDisconnect(out, code, { reasonString: `code ${code}` });
        const p = one(out, 5);
        expect(p).to.include({ cmd: 'disconnect', reasonCode: code });
        expect(p.properties).to.deep.equal({ reasonString: `code ${code}` });
      }
    });
  });

  describe('PUBLISH', () => {
    for (const version of [4, 5] as const) {
      it(`v${version}: QoS 0/1/2, retain, dup, UTF-8 topic`, () => {
        const out = new OutBuffer();
        const payload = Buffer.from('payload ü');
        writePublish(out, version, source('a/ü/c', payload), 0, false, false, 0);
        writePublish(out, version, source('a/ü/c', payload), 1, true, false, 1);
        writePublish(out, version, source('x', Buffer.alloc(0)), 2, false, true, 65535);
        const packets = parseAll(take(out), version);
        expect(packets.map((p) => [p.cmd, p.topic, p.qos, p.retain, p.dup, p.qos === 0 ? undefined : p.messageId])).to.deep.equal([
          ['publish', 'a/ü/c', 0, false, false, undefined],
          ['publish', 'a/ü/c', 1, true, false, 1],
          ['publish', 'x', 2, false, true, 65535],
        ]);
        expect(packets[0]!.payload).to.deep.equal(payload);
        expect(packets[2]!.payload).to.deep.equal(Buffer.alloc(0));
      });

      it(`v${version}: a payload above the copy limit (passed by reference) and one of 300 kB`, () => {
        for (const size of [COPY_LIMIT, COPY_LIMIT + 1, 300_000]) {
          const out = new OutBuffer();
          const payload = Buffer.alloc(size);
          for (let i = 0; i < size; i++) payload[i] = i & 0xff;
          writePublish(out, version, source('big/one', payload), 1, false, false, 9);
          const bytes = take(out);
          expect(bytes.length).to.equal(publishSize(version, 7, size, 1));
          const p = parseAll(bytes, version)[0]!;
          expect(p.topic).to.equal('big/one');
          expect((p.payload as Buffer).equals(payload)).to.equal(true);
        }
      });

      it(`v${version}: topic bytes copied from the incoming frame`, () => {
        const frameBuf = Buffer.concat([Buffer.from([0xff, 0xff, 0, 3]), Buffer.from('t/1'), Buffer.from('PAYLOAD')]);
        const out = new OutBuffer();
        writePublish(out, version, {
          topic: 't/1', topicLength: 3, topicBuf: frameBuf, topicOffset: 2, payloadBuf: frameBuf, payloadStart: 7, payloadEnd: 14,
        }, 0, false, false, 0);
        const p = one(out, version);
        expect(p.topic).to.equal('t/1');
        expect(String(p.payload)).to.equal('PAYLOAD');
      });
    }

    it('v5: properties, subscription identifiers and an outbound topic alias (empty topic)', () => {
      const out = new OutBuffer();
      writePublish(out, 5, source('s/t', Buffer.from('x')), 1, false, false, 2, {
        payloadFormatIndicator: 1, messageExpiryInterval: 30, contentType: 'text/plain', responseTopic: 'r',
        correlationData: Buffer.from([1, 2]), subscriptionIdentifiers: [1, 268435455], topicAlias: 3,
        userProperties: [['k', 'v']],
      }, true);
      const p = one(out, 5);
      expect(p.topic).to.equal('');
      expect(p.messageId).to.equal(2);
      expect(p.properties).to.deep.equal({
        payloadFormatIndicator: true, messageExpiryInterval: 30, contentType: 'text/plain', responseTopic: 'r',
        correlationData: Buffer.from([1, 2]), subscriptionIdentifier: [1, 268435455], topicAlias: 3,
        userProperties: { k: 'v' },
      });
    });

    it('many packets in one OutBuffer come out in order', () => {
      const out = new OutBuffer();
      for (let i = 0; i < 2000; i++) {
        writePublish(out, 4, source(`n/${i}`, Buffer.alloc(i % 7 === 0 ? COPY_LIMIT + i : i % 50, i & 0xff)), (i % 3) as 0 | 1 | 2, false, false, i % 3 ? i + 1 : 0);
        if (i % 10 === 0) writePingresp(out);
      }
      const packets = parseAll(take(out), 4).filter((p) => p.cmd === 'publish');
      expect(packets.map((p) => p.topic)).to.deep.equal(Array.from({ length: 2000 }, (_, i) => `n/${i}`));
    });
  });

  describe('PUBLISH with numbered user properties (pre-encoded)', () => {
    /** The general encoder's bytes for the same message: the reference the fast path must match. */
    function general(topic: string, payload: Buffer, qos: 0 | 1, id: number, fixed: UserProperties, key: string, num: number): Buffer {
      const out = new OutBuffer();
      writePublish(out, 5, source(topic, payload), qos, false, false, id, { userProperties: [...fixed, [key, String(num)]] });
      return take(out);
    }

    function numbered(topic: string, payload: Buffer, qos: 0 | 1, id: number, fixed: UserProperties, key: string, num: number): Buffer {
      const props = new NumberedUserProperties(fixed, key);
      const out = new OutBuffer();
      writePublishNumbered(out, new NumberedScratch().set(Buffer.from(topic, 'utf8'), payload), qos, id, props, num);
      const bytes = take(out);
      // Topic and payload as ranges of one buffer with bytes around them, as in an outbox
      // segment: the same packet.
      const t = Buffer.from(topic, 'utf8');
      const seg = Buffer.concat([Buffer.from('before'), t, Buffer.from('mid'), payload, Buffer.from('after')]);
      const tEnd = 6 + t.length;
      const pStart = tEnd + 3;
      const src = { topicBuf: seg, topicStart: 6, topicEnd: tEnd, payloadBuf: seg, payloadStart: pStart, payloadEnd: pStart + payload.length };
      const ranged = new OutBuffer();
      writePublishNumbered(ranged, src, qos, id, props, num);
      expect(take(ranged).equals(bytes), `topic ${topic} and payload as ranges of one buffer`).to.equal(true);
      return bytes;
    }

    it('writes the same bytes as writePublish for seqs, gateway ids, topics and payload sizes (remaining length of 1-3 bytes)', () => {
      const seqs = [0, 1, 9, 10, 99, 100, 99999, 2 ** 31, 2 ** 40, Number.MAX_SAFE_INTEGER];
      const gateways = ['gw1', 'Lkw-München-7', '卡车🚚', 'x'.repeat(200)];
      const topics = ['t', 'hq/fleet/gw1/telemetry/gps', 'hq/größe/°C', `deep/${'a/'.repeat(150)}end`];
      const payloads = [0, 1, 200, COPY_LIMIT - 1, COPY_LIMIT, 20000].map((n) => Buffer.alloc(n, n & 0xff));
      let cases = 0;
      for (const seq of seqs) {
        for (const gw of gateways) {
          for (const topic of topics) {
            for (const payload of payloads) {
              for (const [qos, id] of [[0, 0], [1, 1], [1, 65535]] as const) {
                const want = general(topic, payload, qos, id, [['gw', gw]], 'seq', seq);
                const got = numbered(topic, payload, qos, id, [['gw', gw]], 'seq', seq);
                if (!got.equals(want)) expect.fail(`seq ${seq}, gw ${gw}, topic ${topic}, payload ${payload.length}, qos ${qos}: bytes differ`);
                cases++;
              }
            }
          }
        }
      }
      // Remaining lengths of 1, 2 and 3 bytes were all among them.
      expect(varintBytes(general('t', Buffer.alloc(0), 0, 0, [['gw', 'g']], 'seq', 1))).to.equal(1);
      expect(varintBytes(general('t', Buffer.alloc(200), 0, 0, [['gw', 'g']], 'seq', 1))).to.equal(2);
      expect(varintBytes(general('t', Buffer.alloc(20000), 0, 0, [['gw', 'g']], 'seq', 1))).to.equal(3);
      expect(cases).to.equal(seqs.length * gateways.length * topics.length * payloads.length * 3);
    });

    it('with a topic alias: the same bytes as writePublish with a Topic Alias property, the topic left out once the alias is known', () => {
      const props = new NumberedUserProperties([['gw', 'gw1']], 'seq');
      const topic = 'fleet/gw1/telemetry/gps';
      const payload = Buffer.alloc(200, 7);
      for (const [qos, id] of [[0, 0], [1, 42]] as const) {
        for (const alias of [1, 300, 65535]) {
          const fresh = new OutBuffer();
          writePublishNumbered(fresh, new NumberedScratch().set(Buffer.from(topic), payload), qos, id, props, 77, -alias);
          const known = new OutBuffer();
          writePublishNumbered(known, new NumberedScratch().set(Buffer.from(topic), payload), qos, id, props, 78, alias);
          const wantFresh = new OutBuffer();
          writePublish(wantFresh, 5, source(topic, payload), qos, false, false, id, { topicAlias: alias, userProperties: [['gw', 'gw1'], ['seq', '77']] });
          const wantKnown = new OutBuffer();
          writePublish(wantKnown, 5, source(topic, payload), qos, false, false, id, { topicAlias: alias, userProperties: [['gw', 'gw1'], ['seq', '78']] }, true);
          const f = take(fresh);
          const k = take(known);
          expect(f.equals(take(wantFresh)), `new alias ${alias}, qos ${qos}`).to.equal(true);
          expect(k.equals(take(wantKnown)), `known alias ${alias}, qos ${qos}`).to.equal(true);
          // An independent parser reads them so; the known alias saves exactly the topic's bytes.
          const pf = parseAll(f, 5)[0]!;
          const pk = parseAll(k, 5)[0]!;
          expect([pf.topic, (pf.properties as { topicAlias?: number }).topicAlias]).to.deep.equal([topic, alias]);
          expect([pk.topic, (pk.properties as { topicAlias?: number }).topicAlias]).to.deep.equal(['', alias]);
          expect((pk.properties as { userProperties?: unknown }).userProperties).to.deep.equal({ gw: 'gw1', seq: '78' });
          expect(f.length - k.length).to.equal(Buffer.byteLength(topic));
        }
      }
    });

    it('writes the same bytes as writePublish for any safe integer, key and value (property)', () => {
      fc.assert(fc.property(
        fc.maxSafeNat(), fc.string({ unit: 'grapheme', maxLength: 40 }), fc.string({ unit: 'grapheme', minLength: 1, maxLength: 60 }),
        fc.integer({ min: 0, max: 300 }), fc.constantFrom<0 | 1>(0, 1),
        (num, gw, topic, payloadLen, qos) => {
          const payload = Buffer.alloc(payloadLen, 7);
          const id = qos === 1 ? 1 + (num % 65535) : 0;
          return numbered(topic, payload, qos, id, [['gw', gw]], 'seq', num).equals(general(topic, payload, qos, id, [['gw', gw]], 'seq', num));
        },
      ), { numRuns: 2000 });
    });

    it('any number of fixed pairs (none, several) before the numbered one', () => {
      for (const fixed of [[], [['a', 'b'], ['gw', 'g'], ['ä', '']]] as UserProperties[]) {
        expect(numbered('t/x', Buffer.from('p'), 1, 7, fixed, 'n', 4711).equals(general('t/x', Buffer.from('p'), 1, 7, fixed, 'n', 4711))).to.equal(true);
      }
    });

    it('is an ordinary PUBLISH to an independent parser, packed behind others in one OutBuffer', () => {
      const out = new OutBuffer();
      const props = new NumberedUserProperties([['gw', 'gw1']], 'seq');
      for (let i = 0; i < 300; i++) {
        const src = new NumberedScratch().set(Buffer.from(`u/${i}`), Buffer.alloc(i % 3 === 0 ? COPY_LIMIT + i : i, 1));
        writePublishNumbered(out, src, (i % 2) as 0 | 1, i + 1, props, i * 1000);
      }
      const packets = parseAll(take(out), 5);
      expect(packets).to.have.length(300);
      packets.forEach((p, i) => {
        expect(p).to.include({ cmd: 'publish', topic: `u/${i}`, qos: i % 2, retain: false, dup: false });
        if (i % 2 === 1) expect(p.messageId).to.equal(i + 1);
        expect(p.properties).to.deep.equal({ userProperties: { gw: 'gw1', seq: String(i * 1000) } });
      });
    });
  });
});

/** How many bytes the remaining length of the packet starting at `b` takes. */
function varintBytes(b: Buffer): number {
  let n = 1;
  while ((b[n]! & 0x80) !== 0) n++;
  return n;
}
