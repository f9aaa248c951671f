// Seeded fuzzing of the connection handler over real sockets: random bytes and random-but-framed
// packets after a valid CONNECT (MQTT 3.1.1 and 5), mutated valid packets, and mutated CONNECTs.
// Nothing may escape as an uncaught exception, no error may be an internal one (a non-protocol
// exception caught by the connection), every connection must end, and a healthy client must still
// be served at the end. Each case has its own seed (BASE_SEED + index), so a failure names the
// case to replay.
import { expect } from 'chai';
import net from 'node:net';
import mqttPacket from 'mqtt-packet';
import { Connection } from '../../src/broker/connection.js';
import type { ProtocolError } from '../../src/mqtt/errors.js';
import { Reason } from '../../src/mqtt/reason-codes.js';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { RawClient } from '../helpers/raw-client.js';
import { prng } from '../helpers/prng.js';

const BASE_SEED = 0x5eed_c0de;
const CASES_PER_KIND = 1000;
const CONCURRENCY = 48;

// --- seeded randomness ----------------------------------------------------------------------

class Rng {
  private readonly next: () => number;
  constructor(seed: number) {
    this.next = prng(seed);
  }
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)]!;
  }
  bytes(n: number): number[] {
    const out: number[] = [];
    for (let i = 0; i < n; i++) out.push(this.int(256));
    return out;
  }
}

// --- building blocks ------------------------------------------------------------------------

function varint(n: number): number[] {
  const out: number[] = [];
  do {
    let b = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) b |= 0x80;
    out.push(b);
  } while (n > 0);
  return out;
}

function frame(first: number, body: number[]): number[] {
  return [first, ...varint(body.length), ...body];
}

function str(bytes: number[]): number[] {
  return [bytes.length >> 8, bytes.length & 0xff, ...bytes];
}

const TOPIC_CHARS = [...Buffer.from('ab/+#$')];

function randomTopic(r: Rng): number[] {
  if (r.chance(0.05)) return r.bytes(r.int(6)); // arbitrary bytes: invalid UTF-8, U+0000, …
  const n = r.int(12);
  const out: number[] = [];
  for (let i = 0; i < n; i++) out.push(r.pick(TOPIC_CHARS));
  return out;
}

/** Property ids of MQTT 5 with their wire types, plus a few that do not exist. */
const PROPS: Array<[number, 'byte' | 'u16' | 'u32' | 'varint' | 'string' | 'binary' | 'pair']> = [
  [0x01, 'byte'], [0x02, 'u32'], [0x03, 'string'], [0x08, 'string'], [0x09, 'binary'], [0x0b, 'varint'],
  [0x11, 'u32'], [0x12, 'string'], [0x13, 'u16'], [0x15, 'string'], [0x16, 'binary'], [0x17, 'byte'],
  [0x18, 'u32'], [0x19, 'byte'], [0x1a, 'string'], [0x1c, 'string'], [0x1f, 'string'], [0x21, 'u16'],
  [0x22, 'u16'], [0x23, 'u16'], [0x24, 'byte'], [0x25, 'byte'], [0x26, 'pair'], [0x27, 'u32'],
  [0x28, 'byte'], [0x29, 'byte'], [0x2a, 'byte'], [0x00, 'byte'], [0x7f, 'u16'], [0xff, 'byte'],
];

function randomProperties(r: Rng): number[] {
  const out: number[] = [];
  const n = r.int(4);
  for (let i = 0; i < n; i++) {
    const [id, type] = r.pick(PROPS);
    out.push(...(id === 0xff ? [0xff, 0x01] : [id]));
    switch (type) {
      case 'byte': out.push(r.pick([0, 1, 2, 255])); break;
      case 'u16': out.push(...r.pick([[0, 0], [0, 1], [0, 2], [0xff, 0xff], r.bytes(2)])); break;
      case 'u32': out.push(...r.pick([[0, 0, 0, 0], [0, 0, 0, 1], [0xff, 0xff, 0xff, 0xff], r.bytes(4)])); break;
      case 'varint': out.push(...r.pick([[0], [1], [0xff, 0xff, 0xff, 0x7f], [0x80, 0x80, 0x80, 0x80, 0x01], r.bytes(1)])); break;
      case 'string': out.push(...str(randomTopic(r))); break;
      case 'binary': out.push(...str(r.bytes(r.int(5)))); break;
      case 'pair': out.push(...str(randomTopic(r)), ...str(randomTopic(r))); break;
    }
  }
  if (r.chance(0.1)) return [...varint(out.length + r.int(5) - 2 < 0 ? 0 : out.length + r.int(5) - 2), ...out];
  return [...varint(out.length), ...out];
}

/** A packet with a plausible fixed header and a body that is random in structured ways. */
function randomFrame(r: Rng, version: 4 | 5): number[] {
  const type = r.pick([1, 3, 3, 3, 4, 5, 6, 7, 8, 8, 10, 12, 14, 15, 0, 2, 9, 13]);
  let flags = type === 3 ? r.int(16) : type === 6 || type === 8 || type === 10 ? 2 : 0;
  if (r.chance(0.05)) flags = r.int(16);
  const first = (type << 4) | flags;
  const v5 = version === 5;
  const id = (): number[] => r.pick([[0, 0], [0, 1], [0, 2], [0xff, 0xff], r.bytes(2)]);
  let body: number[];
  switch (type) {
    case 3: {
      const qos = (flags >> 1) & 3;
      body = [...str(randomTopic(r)), ...(qos > 0 ? id() : []), ...(v5 ? randomProperties(r) : []), ...r.bytes(r.int(20))];
      break;
    }
    case 4: case 5: case 6: case 7:
      body = [...id(), ...(v5 && r.chance(0.5) ? [r.pick([0, 0x10, 0x80, 0x92, r.int(256)]), ...randomProperties(r)] : [])];
      break;
    case 8: case 10: {
      body = [...id(), ...(v5 ? randomProperties(r) : [])];
      const n = r.int(4);
      for (let i = 0; i < n; i++) {
        body.push(...str(randomTopic(r)));
        if (type === 8) body.push(r.chance(0.8) ? r.int(3) | (v5 ? r.pick([0, 4, 8, 16, 32, 48, 64]) : 0) : r.int(256));
      }
      break;
    }
    case 14: case 15:
      body = v5 && r.chance(0.7) ? [r.pick([0, 4, 0x18, 0x80, r.int(256)]), ...randomProperties(r)] : [];
      break;
    default:
      body = r.bytes(r.int(8));
  }
  if (r.chance(0.1)) body = body.slice(0, r.int(body.length + 1)); // truncated
  if (r.chance(0.05)) body.push(...r.bytes(1 + r.int(4))); // trailing bytes
  return frame(first, body);
}

function connectPacket(r: Rng, version: 4 | 5, clientId: string): Buffer {
  const p: mqttPacket.IConnectPacket = {
    cmd: 'connect', protocolId: 'MQTT', protocolVersion: version, clean: true, clientId, keepalive: r.int(3) === 0 ? 0 : 60,
  };
  if (r.chance(0.3)) p.will = { topic: 'fuzz/will', payload: Buffer.from('w'), qos: r.int(3) as 0 | 1 | 2, retain: false };
  if (r.chance(0.3)) p.username = 'u';
  if (p.username && r.chance(0.5)) p.password = Buffer.from('p');
  if (version === 5 && r.chance(0.4)) {
    p.properties = { sessionExpiryInterval: r.int(2) * 10, receiveMaximum: 1 + r.int(10), topicAliasMaximum: r.int(4), userProperties: { a: 'b' } };
  }
  return mqttPacket.generate(p, { protocolVersion: version });
}

/** Valid packets a client may send after CONNECT, encoded by mqtt-packet. */
function validPackets(version: 4 | 5): Buffer[] {
  const g = (p: mqttPacket.Packet): Buffer => mqttPacket.generate(p, { protocolVersion: version });
  const v5 = version === 5;
  return [
    g({ cmd: 'publish', topic: 'fuzz/a', payload: Buffer.from('hello'), qos: 0, retain: false, dup: false }),
    g({ cmd: 'publish', topic: 'fuzz/b', payload: Buffer.from('hello'), qos: 1, messageId: 7, retain: true, dup: false }),
    g({
      cmd: 'publish', topic: 'fuzz/c', payload: Buffer.from('{"a":1}'), qos: 2, messageId: 8, retain: false, dup: false,
      ...(v5 ? { properties: { payloadFormatIndicator: true, messageExpiryInterval: 10, topicAlias: 1, contentType: 'json', responseTopic: 'r', correlationData: Buffer.from('c'), userProperties: { k: 'v' } } } : {}),
    }),
    g({
      cmd: 'subscribe', messageId: 3, subscriptions: [{ topic: 'fuzz/+/x', qos: 1 }, { topic: '$share/g/fuzz/#', qos: 2 }],
      ...(v5 ? { properties: { subscriptionIdentifier: 5 } } : {}),
    }),
    g({ cmd: 'unsubscribe', messageId: 4, unsubscriptions: ['fuzz/+/x', 'nope'] }),
    g({ cmd: 'puback', messageId: 1 }),
    g({ cmd: 'pubrec', messageId: 1 }),
    g({ cmd: 'pubrel', messageId: 8 }),
    g({ cmd: 'pubcomp', messageId: 1 }),
    g({ cmd: 'pingreq' }),
    g({ cmd: 'disconnect', ...(v5 ? { reasonCode: 0, properties: { sessionExpiryInterval: 0 } } : {}) }),
    ...(v5 ? [g({ cmd: 'auth', reasonCode: 0x18, properties: { authenticationMethod: 'x' } })] : []),
  ];
}

function mutate(r: Rng, input: Buffer): number[] {
  const b = [...input];
  const n = 1 + r.int(4);
  for (let i = 0; i < n; i++) {
    const at = r.int(b.length);
    switch (r.int(6)) {
      case 0: b[at] = b[at]! ^ (1 << r.int(8)); break; // flip a bit
      case 1: b[at] = r.pick([0, 0xff, 0x7f, 0x80, r.int(256)]); break; // set a byte
      case 2: b.splice(at, 1 + r.int(3)); break; // delete
      case 3: b.splice(at, 0, ...r.bytes(1 + r.int(3))); break; // insert
      case 4: if (b.length > 1) b[1] = r.int(256); break; // Remaining Length byte
      case 5: b.length = Math.max(1, at); break; // truncate
    }
  }
  return b;
}

// --- one case -------------------------------------------------------------------------------

type Kind = 'random-v4' | 'random-v5' | 'frames-v4' | 'frames-v5' | 'mutated-v4' | 'mutated-v5' | 'mutated-connect';
const KINDS: Kind[] = ['random-v4', 'random-v5', 'frames-v4', 'frames-v5', 'mutated-v4', 'mutated-v5', 'mutated-connect'];

function caseBytes(kind: Kind, index: number): Buffer[] {
  const r = new Rng(BASE_SEED + index);
  const version: 4 | 5 = kind.endsWith('v4') ? 4 : kind.endsWith('v5') ? 5 : r.chance(0.5) ? 4 : 5;
  const clientId = `fz-${index}`;
  const connect = connectPacket(r, version, clientId);
  const tail: number[] = [];
  switch (kind) {
    case 'random-v4': case 'random-v5':
      tail.push(...r.bytes(1 + r.int(300)));
      break;
    case 'frames-v4': case 'frames-v5': {
      const n = 1 + r.int(6);
      for (let i = 0; i < n; i++) tail.push(...randomFrame(r, version));
      break;
    }
    case 'mutated-v4': case 'mutated-v5': {
      const corpus = validPackets(version);
      const n = 1 + r.int(3);
      for (let i = 0; i < n; i++) {
        const p = r.pick(corpus);
        tail.push(...(r.chance(0.7) ? mutate(r, p) : p));
      }
      tail.push(0xc0, 0x00);
      break;
    }
    case 'mutated-connect':
      return split(r, [...mutate(r, connect), ...(r.chance(0.5) ? [0xc0, 0x00] : [])]);
  }
  return split(r, [...connect, ...tail]);
}

/** Sends as one write or as a few pieces, so frames also arrive split. */
function split(r: Rng, bytes: number[]): Buffer[] {
  const b = Buffer.from(bytes);
  if (r.chance(0.6) || b.length < 2) return [b];
  const out: Buffer[] = [];
  let pos = 0;
  while (pos < b.length) {
    const n = 1 + r.int(Math.max(1, b.length - pos));
    out.push(b.subarray(pos, pos + n));
    pos += n;
  }
  return out;
}

interface Outcome {
  stuck: boolean;
}

/** Runs one case: write the pieces, half-close, and wait for the server's close. */
function runCase(port: number, pieces: Buffer[]): Promise<Outcome> {
  return new Promise((resolve) => {
    const s = net.connect({ port, host: '127.0.0.1' });
    let done = false;
    const finish = (stuck: boolean): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      s.destroy();
      resolve({ stuck });
    };
    const timer = setTimeout(() => finish(true), 4000);
    s.on('error', () => finish(false));
    s.on('close', () => finish(false));
    s.on('data', () => undefined);
    s.on('connect', () => {
      void (async () => {
        for (const p of pieces) {
          if (s.destroyed) return;
          s.write(p);
          if (pieces.length > 1) await new Promise((r) => setImmediate(r));
        }
        if (!s.destroyed) s.end();
      })();
    });
  });
}

describe('fuzz: random and mutated input over real sockets', function () {
  this.timeout(60_000);
  let gw: TestGateway;
  const uncaught: unknown[] = [];
  const internalErrors: string[] = [];
  const onUncaught = (err: unknown): void => {
    uncaught.push(err);
  };
  type Fail = (this: Connection, err: ProtocolError) => void;
  const realFail = Object.getOwnPropertyDescriptor(Connection.prototype, 'fail')!.value as Fail;

  before(async () => {
    gw = await startTestGateway({ limits: { max_packet_size: 64 * 1024, max_queued_messages: 100 } });
    process.on('uncaughtException', onUncaught);
    process.on('unhandledRejection', onUncaught);
    // Record closes caused by an exception that is not a ProtocolError: the connection maps those
    // to 0x83 "internal error" (or 0x80 when CONNECT processing throws). Each is a broker bug.
    Connection.prototype.fail = function (this: Connection, err: ProtocolError): void {
      if (err.reason === Reason.ImplementationSpecificError || err.reason === Reason.UnspecifiedError) {
        internalErrors.push(err.message.split('\n').slice(0, 4).join(' | '));
      }
      realFail.call(this, err);
    };
  });
  after(async () => {
    Connection.prototype.fail = realFail;
    process.off('uncaughtException', onUncaught);
    process.off('unhandledRejection', onUncaught);
    await gw.stop();
  });

  it(`survives ${KINDS.length * CASES_PER_KIND} seeded cases (seed 0x${BASE_SEED.toString(16)}) and still serves a healthy client`, async () => {
    // A v5 subscriber on '#' the whole time: whatever the fuzzer manages to publish is forwarded
    // to it, so the encoder sees what the decoder accepted. It must parse, and stay connected.
    const watcher = await RawClient.connect(gw.port, { version: 5, clientId: 'fuzz-watcher' });
    watcher.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: '#', qos: 0 }] });
    await watcher.nextOf('suback');

    const started = Date.now();
    const jobs: Array<{ kind: Kind; index: number }> = [];
    for (let i = 0; i < CASES_PER_KIND; i++) for (const kind of KINDS) jobs.push({ kind, index: jobs.length });
    let next = 0;
    const stuck: string[] = [];
    const worker = async (): Promise<void> => {
      while (next < jobs.length) {
        const job = jobs[next++]!;
        const outcome = await runCase(gw.port, caseBytes(job.kind, job.index));
        if (outcome.stuck) stuck.push(`${job.kind} #${job.index}`);
      }
    };
    await Promise.all(Array.from({ length: CONCURRENCY }, () => worker()));
    const elapsed = Date.now() - started;

    expect(uncaught, 'uncaught exceptions / unhandled rejections').to.deep.equal([]);
    expect(internalErrors.slice(0, 10), `internal errors (${internalErrors.length})`).to.deep.equal([]);
    expect(stuck.slice(0, 10), `connections the server did not close after the client's FIN (${stuck.length})`).to.deep.equal([]);
    expect(gw.broker.metrics.protocolErrors, 'the fuzzer reached the decoder').to.be.greaterThan(jobs.length / 4);
    expect(elapsed, 'fuzz duration (ms)').to.be.below(30_000);

    // Every fuzz connection is gone; only the watcher remains.
    for (let i = 0; i < 200 && gw.broker.connections.size > 1; i++) await new Promise((r) => setTimeout(r, 10));
    expect(gw.broker.connections.size).to.equal(1);

    // The watcher parsed everything forwarded to it and is still connected.
    expect(watcher.parseError).to.equal(null);
    expect(watcher.closed).to.equal(false);

    // A fresh client is served: subscribe, publish QoS 1, receive.
    const healthy = await RawClient.connect(gw.port, { clientId: 'after-fuzz' });
    healthy.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'after/fuzz', qos: 1 }] });
    expect((await healthy.nextOf('suback')).granted).to.deep.equal([1]);
    healthy.send({ cmd: 'publish', topic: 'after/fuzz', payload: Buffer.from('ok'), qos: 1, messageId: 2, retain: false, dup: false });
    const got = await healthy.nextOf('publish');
    expect(String(got.payload)).to.equal('ok');
    await healthy.close();
    await watcher.close();
  });
});
