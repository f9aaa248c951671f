// Bad input over real sockets. Every case closes only the offending connection, with the code the
// spec names where it names one (3.1.1: CONNACK codes during CONNECT, otherwise a plain close;
// MQTT 5: the DISCONNECT or CONNACK reason code), and a healthy client connected before keeps
// publishing and receiving afterwards.
import { expect } from 'chai';
import type { Connection } from '../../src/broker/connection.js';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { RawClient, type AnyPacket } from '../helpers/raw-client.js';

const MAX_PACKET = 65536;

// --- raw bytes ------------------------------------------------------------------------------

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

function frame(first: number, body: number[] | Buffer): Buffer {
  const b = Buffer.isBuffer(body) ? body : Buffer.from(body);
  return Buffer.concat([Buffer.from([first, ...varint(b.length)]), b]);
}

function str(s: string | Buffer): number[] {
  const b = Buffer.isBuffer(s) ? s : Buffer.from(s, 'utf8');
  return [b.length >> 8, b.length & 0xff, ...b];
}

function u16(n: number): number[] {
  return [n >> 8, n & 0xff];
}

function props(p: number[]): number[] {
  return [...varint(p.length), ...p];
}

interface ConnectSpec {
  version?: 4 | 5;
  flags?: number;
  clientId?: string | Buffer;
  /** Bytes after the client id (will, user name, password). */
  rest?: number[];
  /** MQTT 5 CONNECT property bytes (without the length). */
  properties?: number[];
}

function connectBody(o: ConnectSpec = {}): number[] {
  const version = o.version ?? 4;
  return [
    ...str('MQTT'), version, o.flags ?? 0x02, 0, 0,
    ...(version === 5 ? props(o.properties ?? []) : []),
    ...str(o.clientId ?? `bad-${Math.random().toString(16).slice(2)}`),
    ...(o.rest ?? []),
  ];
}

function connectBytes(o: ConnectSpec = {}): Buffer {
  return frame(0x10, connectBody(o));
}

/** PUBLISH from raw parts; `propBytes` only for MQTT 5. */
function publishBytes(topic: string | Buffer, opts: { qos?: number; id?: number; propBytes?: number[]; payload?: string; flags?: number } = {}): Buffer {
  const qos = opts.qos ?? 0;
  const body = [
    ...str(topic),
    ...(qos > 0 ? u16(opts.id ?? 1) : []),
    ...(opts.propBytes ? props(opts.propBytes) : []),
    ...Buffer.from(opts.payload ?? 'x'),
  ];
  return frame(0x30 | (opts.flags ?? qos << 1), body);
}

// --- expectations ---------------------------------------------------------------------------

/** Closed with nothing sent (3.1.1 after CONNECT, or a refusal without CONNACK). */
async function closedSilently(c: RawClient, timeoutMs = 3000): Promise<void> {
  const packets = await c.closedByServer(timeoutMs);
  expect(packets.map((p) => p.cmd)).to.deep.equal([]);
}

/** MQTT 5, connected: a DISCONNECT with one of `codes`, then the close. */
async function disconnectedWith(c: RawClient, codes: number | number[], timeoutMs = 3000): Promise<AnyPacket[]> {
  const packets = await c.closedByServer(timeoutMs);
  const d = packets.filter((p) => p.cmd === 'disconnect');
  expect(d, `packets before the close: ${JSON.stringify(packets.map((p) => [p.cmd, p.reasonCode]))}`).to.have.length(1);
  expect(d[0]!.reasonCode).to.be.oneOf(Array.isArray(codes) ? codes : [codes]);
  expect(packets[packets.length - 1]!.cmd).to.equal('disconnect');
  return packets;
}

/** MQTT 5 CONNECT refused: CONNACK with the reason code, then the close [MQTT-4.13.1-1]. */
async function connackRefusal5(c: RawClient, code: number): Promise<void> {
  const packets = await c.closedByServer();
  expect(packets.map((p) => [p.cmd, p.reasonCode])).to.deep.equal([['connack', code]]);
}

/** The broker's side of a raw client's socket (it may be accepted a moment after the client connects). */
async function serverSide(gw: TestGateway, c: RawClient): Promise<Connection> {
  const port = c.socket.localPort;
  for (let i = 0; i < 1000; i++) {
    for (const conn of gw.broker.connections) {
      if ((conn.transport as unknown as { remotePort?: number }).remotePort === port) return conn;
    }
    await new Promise((r) => setImmediate(r));
  }
  throw new Error('no server-side connection for the client');
}

describe('bad input over real sockets', function () {
  this.timeout(15000);
  let gw: TestGateway;
  const clients: RawClient[] = [];
  const track = <T extends RawClient>(c: T): T => (clients.push(c), c);
  let healthyCount = 0;

  before(async () => {
    gw = await startTestGateway({ limits: { max_packet_size: MAX_PACKET } });
  });
  afterEach(async () => {
    await Promise.all(clients.splice(0).map((c) => c.close()));
  });
  after(async () => {
    await gw.stop();
  });

  const v4 = async (): Promise<RawClient> => track(await RawClient.connect(gw.port, { version: 4 }));
  const v5 = async (): Promise<RawClient> => track(await RawClient.connect(gw.port, { version: 5 }));
  const socket = async (version: 4 | 5 = 4): Promise<RawClient> => track(await RawClient.connectSocket(gw.port, version));

  /**
   * A case: a healthy subscriber connects first; the body misbehaves on other connections; then
   * the healthy client publishes QoS 1 to its own subscription and must get PUBACK and the message.
   */
  function badCase(title: string, body: () => Promise<void>): void {
    it(title, async () => {
      const n = ++healthyCount;
      const topic = `healthy/${n}`;
      const h = track(await RawClient.connect(gw.port, { clientId: `healthy-${n}` }));
      h.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic, qos: 1 }] });
      expect((await h.nextOf('suback')).granted).to.deep.equal([1]);
      await body();
      h.send({ cmd: 'publish', topic, payload: Buffer.from(`alive ${n}`), qos: 1, messageId: 2, retain: false, dup: false });
      let puback = false;
      let message: AnyPacket | undefined;
      while (!puback || !message) {
        const p = await h.next();
        if (p.cmd === 'puback') puback = true;
        else if (p.cmd === 'publish') message = p;
      }
      expect(message.topic).to.equal(topic);
      expect(String(message.payload)).to.equal(`alive ${n}`);
      expect(h.closed).to.equal(false);
    });
  }

  describe('framing', () => {
    badCase('Remaining Length over 4 bytes: 3.1.1 plain close [MQTT-1.5.5-1]', async () => {
      const c = await v4();
      c.send(Buffer.from([0x30, 0xff, 0xff, 0xff, 0xff, 0x01]));
      await closedSilently(c);
    });

    badCase('Remaining Length over 4 bytes: MQTT 5 DISCONNECT 0x81', async () => {
      const c = await v5();
      c.send(Buffer.from([0x30, 0x80, 0x80, 0x80, 0x80, 0x01]));
      await disconnectedWith(c, 0x81);
    });

    badCase('Remaining Length over 4 bytes as the first packet: closed without CONNACK', async () => {
      const c = await socket();
      c.send(Buffer.from([0x10, 0xff, 0xff, 0xff, 0xff, 0x7f]));
      await closedSilently(c);
    });

    badCase('a packet above max_packet_size, body never sent: 3.1.1 closed at once, nothing buffered', async () => {
      const c = await v4();
      const conn = await serverSide(gw, c);
      const started = Date.now();
      // PUBLISH declaring MAX_PACKET + 1 bytes in total; only the header is sent.
      c.send(Buffer.from([0x30, ...varint(MAX_PACKET + 1 - 4)]));
      await closedSilently(c, 1500);
      expect(Date.now() - started).to.be.below(1000);
      expect(conn.state).to.equal('closed');
      expect(conn.framer.buffered).to.equal(0);
    });

    badCase('a packet above max_packet_size: MQTT 5 DISCONNECT 0x95 (3.2.2.3.6)', async () => {
      const c = await v5();
      const conn = await serverSide(gw, c);
      c.send(Buffer.from([0x32, 0xff, 0xff, 0xff, 0x7f]));
      await disconnectedWith(c, 0x95, 1500);
      expect(conn.framer.buffered).to.equal(0);
    });

    badCase('a packet above max_packet_size followed by body bytes: the bytes are not kept', async () => {
      const c = await v5();
      const conn = await serverSide(gw, c);
      c.send(Buffer.concat([Buffer.from([0x30, ...varint(10 * MAX_PACKET)]), Buffer.alloc(MAX_PACKET)]));
      await disconnectedWith(c, 0x95, 1500);
      expect(conn.framer.buffered).to.equal(0);
    });
  });

  describe('CONNECT first and only once', () => {
    badCase('PINGREQ as the first packet: closed, nothing sent [MQTT-3.1.0-1]', async () => {
      const c = await socket();
      c.send(Buffer.from([0xc0, 0x00]));
      await closedSilently(c);
    });

    badCase('SUBSCRIBE as the first packet: closed, nothing sent [MQTT-3.1.0-1]', async () => {
      const c = await socket();
      c.send(frame(0x82, [0, 1, ...str('a/#'), 0]));
      await closedSilently(c);
    });

    badCase('a first packet declaring a huge length: closed at the header, nothing buffered', async () => {
      const c = await socket();
      const conn = await serverSide(gw, c);
      c.send(Buffer.from([0x30, 0xff, 0xff, 0xff, 0x7f, 0, 1, 0x61]));
      await closedSilently(c, 1500);
      expect(conn.framer.buffered).to.equal(0);
    });

    badCase('a CONNECT declaring more than max_packet_size: closed, nothing buffered', async () => {
      const c = await socket();
      const conn = await serverSide(gw, c);
      c.send(Buffer.from([0x10, 0xff, 0xff, 0x7f]));
      // 3.1.1 has no CONNACK code for it: a plain close.
      await closedSilently(c, 1500);
      expect(conn.framer.buffered).to.equal(0);
    });

    badCase('a second CONNECT: 3.1.1 plain close [MQTT-3.1.0-2]', async () => {
      const c = await v4();
      c.send(connectBytes());
      await closedSilently(c);
    });

    badCase('a second CONNECT: MQTT 5 DISCONNECT 0x82 [MQTT-3.1.0-2]', async () => {
      const c = await v5();
      c.send(connectBytes({ version: 5 }));
      await disconnectedWith(c, 0x82);
    });

    badCase('a partial CONNECT pipelined behind PINGREQ: closed', async () => {
      const c = await socket();
      c.send(Buffer.concat([Buffer.from([0xc0, 0x00]), connectBytes()]));
      await closedSilently(c);
    });
  });

  describe('malformed CONNECT (3.1.1: closed without CONNACK [MQTT-3.1.4-1])', () => {
    badCase('field lengths shorter than Remaining Length says (Remaining Length too short)', async () => {
      const c = await socket();
      const body = connectBody({ clientId: 'short-by-three' });
      c.send(Buffer.concat([frame(0x10, body.slice(0, body.length - 3)), Buffer.from(body.slice(body.length - 3))]));
      await closedSilently(c);
    });

    badCase('bytes left after the last field (Remaining Length too long)', async () => {
      const c = await socket();
      c.send(frame(0x10, [...connectBody(), 0, 0]));
      await closedSilently(c);
    });

    badCase('a user name length running past the packet', async () => {
      const c = await socket();
      c.send(frame(0x10, connectBody({ flags: 0x82, rest: [0x00, 0x40, 0x61] })));
      await closedSilently(c);
    });

    badCase('reserved CONNECT flag bit 0 set [MQTT-3.1.2-3]', async () => {
      const c = await socket();
      c.send(connectBytes({ flags: 0x03 }));
      await closedSilently(c);
    });

    badCase('reserved fixed-header flags on CONNECT (0x11) [MQTT-2.2.2-2]', async () => {
      const c = await socket();
      c.send(frame(0x11, connectBody()));
      await closedSilently(c);
    });

    badCase('will flag 0 with will QoS 1 [MQTT-3.1.2-13]', async () => {
      const c = await socket();
      c.send(connectBytes({ flags: 0x02 | 0x08 }));
      await closedSilently(c);
    });

    badCase('will flag 0 with will retain [MQTT-3.1.2-15]', async () => {
      const c = await socket();
      c.send(connectBytes({ flags: 0x02 | 0x20 }));
      await closedSilently(c);
    });

    badCase('will QoS 3 [MQTT-3.1.2-14]', async () => {
      const c = await socket();
      c.send(connectBytes({ flags: 0x02 | 0x04 | 0x18, rest: [...str('w/t'), ...str('gone')] }));
      await closedSilently(c);
    });

    badCase('password without user name [MQTT-3.1.2-22]', async () => {
      const c = await socket();
      c.send(connectBytes({ flags: 0x02 | 0x40, rest: str('secret') }));
      await closedSilently(c);
    });

    const badStrings: Array<[string, Buffer]> = [
      ['U+0000', Buffer.from([0x61, 0x00, 0x62])],
      ['an encoded UTF-16 surrogate (ED A0 80)', Buffer.from([0x61, 0xed, 0xa0, 0x80])],
      ['invalid UTF-8 (C3 28)', Buffer.from([0xc3, 0x28])],
    ];
    for (const [what, bytes] of badStrings) {
      badCase(`client id with ${what} [MQTT-1.5.3-1], [MQTT-1.5.3-2]`, async () => {
        const c = await socket();
        c.send(connectBytes({ clientId: bytes }));
        await closedSilently(c);
      });
      badCase(`user name with ${what}`, async () => {
        const c = await socket();
        c.send(connectBytes({ flags: 0x82, rest: str(bytes) }));
        await closedSilently(c);
      });
      badCase(`will topic with ${what}`, async () => {
        const c = await socket();
        c.send(connectBytes({ flags: 0x06, rest: [...str(bytes), ...str('x')] }));
        await closedSilently(c);
      });
    }
  });

  describe('malformed CONNECT (MQTT 5: CONNACK 0x81 or 0x82, then the close)', () => {
    badCase('bytes left after the last field', async () => {
      const c = await socket(5);
      c.send(frame(0x10, [...connectBody({ version: 5 }), 0]));
      await connackRefusal5(c, 0x81);
    });

    badCase('will QoS set without the will flag', async () => {
      const c = await socket(5);
      c.send(connectBytes({ version: 5, flags: 0x02 | 0x10 }));
      await connackRefusal5(c, 0x81);
    });

    badCase('client id with invalid UTF-8 [MQTT-1.5.4-1]', async () => {
      const c = await socket(5);
      c.send(connectBytes({ version: 5, clientId: Buffer.from([0xc3, 0x28]) }));
      await connackRefusal5(c, 0x81);
    });

    badCase('receive maximum 0 (Protocol Error, 3.1.2.11.3)', async () => {
      const c = await socket(5);
      c.send(connectBytes({ version: 5, properties: [0x21, 0, 0] }));
      await connackRefusal5(c, 0x82);
    });

    badCase('maximum packet size 0 (Protocol Error, 3.1.2.11.4)', async () => {
      const c = await socket(5);
      c.send(connectBytes({ version: 5, properties: [0x27, 0, 0, 0, 0] }));
      await connackRefusal5(c, 0x82);
    });

    badCase('duplicate property (session expiry twice, Protocol Error, 3.1.2.11.2)', async () => {
      const c = await socket(5);
      c.send(connectBytes({ version: 5, properties: [0x11, 0, 0, 0, 1, 0x11, 0, 0, 0, 2] }));
      await connackRefusal5(c, 0x82);
    });

    badCase('a property not allowed in CONNECT (topic alias): Malformed Packet (2.2.2.2)', async () => {
      const c = await socket(5);
      c.send(connectBytes({ version: 5, properties: [0x23, 0, 1] }));
      await connackRefusal5(c, 0x81);
    });

    badCase('an unknown property id: Malformed Packet (2.2.2.2)', async () => {
      const c = await socket(5);
      c.send(connectBytes({ version: 5, properties: [0x7e, 0] }));
      await connackRefusal5(c, 0x81);
    });

    badCase('thousands of user properties in CONNECT: answered promptly (accepted or refused)', async () => {
      const c = await socket(5);
      const pairs: number[] = [];
      for (let i = 0; i < 9000; i++) pairs.push(0x26, ...str('k'), ...str('v'));
      const started = Date.now();
      c.send(connectBytes({ version: 5, properties: pairs }));
      const p = await c.next(2000);
      expect(p.cmd).to.equal('connack');
      expect(Date.now() - started).to.be.below(2000);
    });

    badCase('a property length running past the packet', async () => {
      const c = await socket(5);
      const body = [...str('MQTT'), 5, 0x02, 0, 0, 0x40, 0x11, 0, 0, 0, 1, ...str('c')];
      c.send(frame(0x10, body));
      await connackRefusal5(c, 0x81);
    });
  });

  describe('fixed-header flags after CONNECT [MQTT-2.2.2-2]', () => {
    badCase('SUBSCRIBE with flags 0 instead of 2: 3.1.1 close', async () => {
      const c = await v4();
      c.send(frame(0x80, [0, 1, ...str('a/b'), 0]));
      await closedSilently(c);
    });

    badCase('SUBSCRIBE with flags 0 instead of 2: MQTT 5 DISCONNECT 0x81', async () => {
      const c = await v5();
      c.send(frame(0x80, [0, 1, 0, ...str('a/b'), 0]));
      await disconnectedWith(c, 0x81);
    });

    badCase('PINGREQ with flags: 3.1.1 close', async () => {
      const c = await v4();
      c.send(Buffer.from([0xc4, 0x00]));
      await closedSilently(c);
    });

    badCase('PINGREQ with flags: MQTT 5 DISCONNECT 0x81', async () => {
      const c = await v5();
      c.send(Buffer.from([0xc1, 0x00]));
      await disconnectedWith(c, 0x81);
    });

    badCase('PUBREL with flags 0 instead of 2: MQTT 5 DISCONNECT 0x81', async () => {
      const c = await v5();
      c.send(Buffer.from([0x60, 0x02, 0x00, 0x01]));
      await disconnectedWith(c, 0x81);
    });

    badCase('a server-only packet (CONNACK) from the client: MQTT 5 DISCONNECT 0x81 or 0x82', async () => {
      const c = await v5();
      c.send(Buffer.from([0x20, 0x03, 0x00, 0x00, 0x00]));
      await disconnectedWith(c, [0x81, 0x82]);
    });
  });

  describe('PUBLISH', () => {
    const badStrings: Array<[string, Buffer]> = [
      ['U+0000', Buffer.from([0x61, 0x00])],
      ['an encoded surrogate', Buffer.from([0xed, 0xa0, 0x80])],
      ['invalid UTF-8', Buffer.from([0xc3, 0x28])],
    ];
    for (const [what, bytes] of badStrings) {
      badCase(`topic with ${what}: 3.1.1 close [MQTT-1.5.3-1]`, async () => {
        const c = await v4();
        c.send(publishBytes(bytes));
        await closedSilently(c);
      });
      badCase(`topic with ${what}: MQTT 5 DISCONNECT 0x81 [MQTT-1.5.4-1]`, async () => {
        const c = await v5();
        c.send(publishBytes(bytes, { propBytes: [] }));
        await disconnectedWith(c, 0x81);
      });
    }

    for (const topic of ['a/+', 'a/#', '#', 'a/b+']) {
      badCase(`wildcard in topic "${topic}": 3.1.1 close [MQTT-3.3.2-2]`, async () => {
        const c = await v4();
        c.send(publishBytes(topic, { qos: 1 }));
        await closedSilently(c);
      });
      badCase(`wildcard in topic "${topic}": MQTT 5 DISCONNECT 0x90 [MQTT-3.3.2-2]`, async () => {
        const c = await v5();
        c.send(publishBytes(topic, { qos: 1, propBytes: [] }));
        await disconnectedWith(c, 0x90);
      });
    }

    badCase('empty topic: 3.1.1 close [MQTT-4.7.3-1]', async () => {
      const c = await v4();
      c.send(publishBytes(''));
      await closedSilently(c);
    });

    badCase('empty topic without topic alias: MQTT 5 DISCONNECT 0x82 (3.3.2.1: "It is a Protocol Error if the Topic Name is zero length and there is no Topic Alias")', async () => {
      const c = await v5();
      c.send(publishBytes('', { propBytes: [] }));
      await disconnectedWith(c, 0x82);
    });

    badCase('QoS 3: 3.1.1 close [MQTT-3.3.1-4]', async () => {
      const c = await v4();
      c.send(publishBytes('a', { qos: 3, id: 1 }));
      await closedSilently(c);
    });

    badCase('QoS 3: MQTT 5 DISCONNECT 0x81 [MQTT-3.3.1-4]', async () => {
      const c = await v5();
      c.send(publishBytes('a', { qos: 3, id: 1, propBytes: [] }));
      await disconnectedWith(c, 0x81);
    });

    badCase('QoS 1 with packet id 0: 3.1.1 close [MQTT-2.3.1-1]', async () => {
      const c = await v4();
      c.send(publishBytes('a', { qos: 1, id: 0 }));
      await closedSilently(c);
    });

    badCase('QoS 1 with packet id 0: MQTT 5 DISCONNECT 0x81 or 0x82 [MQTT-2.2.1-3]', async () => {
      const c = await v5();
      c.send(publishBytes('a', { qos: 1, id: 0, propBytes: [] }));
      await disconnectedWith(c, [0x81, 0x82]);
    });

    badCase('topic alias 0: MQTT 5 DISCONNECT 0x94 [MQTT-3.3.2-8]', async () => {
      const c = await v5();
      c.send(publishBytes('a', { propBytes: [0x23, 0, 0] }));
      await disconnectedWith(c, 0x94);
    });

    badCase('topic alias above the maximum announced in CONNACK: MQTT 5 DISCONNECT 0x94 [MQTT-3.3.2-9]', async () => {
      const c = track(await RawClient.connectSocket(gw.port, 5));
      c.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 5, clean: true, clientId: 'alias-max', keepalive: 0 });
      const ack = await c.next();
      const max = (ack.properties as { topicAliasMaximum?: number } | undefined)?.topicAliasMaximum ?? 0;
      c.send(publishBytes('a', { propBytes: [0x23, ...u16(max + 1)] }));
      await disconnectedWith(c, 0x94);
    });

    badCase('an unknown topic alias with an empty topic: MQTT 5 DISCONNECT 0x82 or 0x94', async () => {
      const c = await v5();
      c.send(publishBytes('', { propBytes: [0x23, 0, 3] }));
      await disconnectedWith(c, [0x82, 0x94]);
    });

    badCase('a known topic alias with an empty topic is accepted', async () => {
      const c = await v5();
      c.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'alias/t', qos: 0 }] });
      await c.nextOf('suback');
      c.send(publishBytes('alias/t', { propBytes: [0x23, 0, 2], payload: 'one' }));
      c.send(publishBytes('', { propBytes: [0x23, 0, 2], payload: 'two' }));
      expect(String((await c.nextOf('publish')).payload)).to.equal('one');
      const second = await c.nextOf('publish');
      expect(String(second.payload)).to.equal('two');
      expect(c.closed).to.equal(false);
    });

    badCase('duplicate property (payload format twice): MQTT 5 DISCONNECT 0x82 (3.3.2.3.2)', async () => {
      const c = await v5();
      c.send(publishBytes('a', { propBytes: [0x01, 0, 0x01, 0] }));
      await disconnectedWith(c, 0x82);
    });

    badCase('a property not allowed in PUBLISH (session expiry): MQTT 5 DISCONNECT 0x81 (2.2.2.2)', async () => {
      const c = await v5();
      c.send(publishBytes('a', { propBytes: [0x11, 0, 0, 0, 5] }));
      await disconnectedWith(c, 0x81);
    });

    badCase('an unknown property id: MQTT 5 DISCONNECT 0x81 (2.2.2.2)', async () => {
      const c = await v5();
      c.send(publishBytes('a', { propBytes: [0x50, 1] }));
      await disconnectedWith(c, 0x81);
    });

    badCase('a property length overflowing the packet: MQTT 5 DISCONNECT 0x81', async () => {
      const c = await v5();
      c.send(frame(0x30, [...str('a'), 0x7f, 0x01, 0x00]));
      await disconnectedWith(c, 0x81);
    });

    badCase('a subscription identifier from the client: MQTT 5 DISCONNECT 0x82 [MQTT-3.3.4-6]', async () => {
      const c = await v5();
      c.send(publishBytes('a', { propBytes: [0x0b, 1] }));
      await disconnectedWith(c, 0x82);
    });

    badCase('more QoS 2 messages than the receive maximum: MQTT 5 DISCONNECT 0x93 [MQTT-3.3.4-9]', async () => {
      const c = track(await RawClient.connectSocket(gw.port, 5));
      c.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 5, clean: true, clientId: 'rm-exceed', keepalive: 0 });
      const ack = await c.next();
      const max = (ack.properties as { receiveMaximum?: number } | undefined)?.receiveMaximum ?? 65535;
      expect(max).to.be.below(5000);
      const bytes: Buffer[] = [];
      for (let id = 1; id <= max + 1; id++) bytes.push(publishBytes('rm/t', { qos: 2, id, propBytes: [] }));
      c.send(Buffer.concat(bytes));
      const packets = await disconnectedWith(c, 0x93, 5000);
      expect(packets.filter((p) => p.cmd === 'pubrec')).to.have.length(max);
    });

    badCase('thousands of user properties: answered promptly (accepted or refused)', async () => {
      const c = await v5();
      const pairs: number[] = [];
      for (let i = 0; i < 9000; i++) pairs.push(0x26, ...str('k'), ...str('v'));
      c.send(publishBytes('up/t', { qos: 1, id: 5, propBytes: pairs }));
      const started = Date.now();
      const p = await c.next(2000).catch(() => null);
      if (p === null) expect(c.closed, 'no answer and not closed').to.equal(true);
      else expect(p.cmd).to.be.oneOf(['puback', 'disconnect']);
      expect(Date.now() - started).to.be.below(2000);
    });
  });

  describe('SUBSCRIBE', () => {
    badCase('no filters: 3.1.1 close [MQTT-3.8.3-3]', async () => {
      const c = await v4();
      c.send(frame(0x82, [0, 1]));
      await closedSilently(c);
    });

    badCase('no filters: MQTT 5 DISCONNECT 0x82 [MQTT-3.8.3-2]', async () => {
      const c = await v5();
      c.send(frame(0x82, [0, 1, 0]));
      await disconnectedWith(c, 0x82);
    });

    badCase('requesting QoS 3: 3.1.1 close [MQTT-3.8.3-4]', async () => {
      const c = await v4();
      c.send(frame(0x82, [0, 1, ...str('a/b'), 3]));
      await closedSilently(c);
    });

    badCase('requesting QoS 3: MQTT 5 DISCONNECT 0x81 (3.8.3.1)', async () => {
      const c = await v5();
      c.send(frame(0x82, [0, 1, 0, ...str('a/b'), 3]));
      await disconnectedWith(c, 0x81);
    });

    badCase('packet id 0: 3.1.1 close [MQTT-2.3.1-1]', async () => {
      const c = await v4();
      c.send(frame(0x82, [0, 0, ...str('a/b'), 0]));
      await closedSilently(c);
    });

    badCase('packet id 0: MQTT 5 DISCONNECT 0x81 or 0x82 [MQTT-2.2.1-3]', async () => {
      const c = await v5();
      c.send(frame(0x82, [0, 0, 0, ...str('a/b'), 0]));
      await disconnectedWith(c, [0x81, 0x82]);
    });

    badCase('subscription identifier 0: MQTT 5 DISCONNECT 0x82 (3.8.2.1.2)', async () => {
      const c = await v5();
      c.send(frame(0x82, [0, 1, ...props([0x0b, 0]), ...str('a/b'), 0]));
      await disconnectedWith(c, 0x82);
    });

    badCase('a filter with U+0000: 3.1.1 close [MQTT-1.5.3-2]', async () => {
      const c = await v4();
      c.send(frame(0x82, [0, 1, ...str(Buffer.from([0x61, 0])), 0]));
      await closedSilently(c);
    });

    for (const version of [4, 5] as const) {
      badCase(`a filter of 65,000 levels (v${version}): no crash; SUBACK failure code or a close`, async () => {
        const c = version === 4 ? await v4() : await v5();
        const filter = '/'.repeat(64_999);
        c.send(frame(0x82, [0, 1, ...(version === 5 ? [0] : []), ...str(filter), 1]));
        const p = await c.next(3000).catch(() => null);
        if (p === null) expect(c.closed).to.equal(true);
        else if (p.cmd === 'suback') expect((p.granted as number[])[0]).to.be.at.least(0x80);
        else expect(p.cmd).to.equal('disconnect');
      });

      badCase(`a filter of 32,000 "+" levels (v${version}): no crash; SUBACK failure code or a close`, async () => {
        const c = version === 4 ? await v4() : await v5();
        const filter = `${'+/'.repeat(31_999)}#`;
        c.send(frame(0x82, [0, 1, ...(version === 5 ? [0] : []), ...str(filter), 0]));
        const p = await c.next(3000).catch(() => null);
        if (p === null) expect(c.closed).to.equal(true);
        else if (p.cmd === 'suback') expect((p.granted as number[])[0]).to.be.at.least(0x80);
        else expect(p.cmd).to.equal('disconnect');
      });
    }

    badCase('a topic of 65,000 levels in PUBLISH: no crash', async () => {
      const c = await v4();
      c.send(publishBytes('/'.repeat(64_999)));
      c.send(Buffer.from([0xc0, 0x00]));
      // Either refused (close) or accepted (the ping still answers).
      const p = await c.next(3000).catch(() => null);
      if (p !== null) expect(p.cmd).to.equal('pingresp');
      else expect(c.closed).to.equal(true);
    });
  });

  describe('acknowledgements', () => {
    /**
     * An unsolicited acknowledgement: the spec names no code. Accepted outcomes: the connection is
     * closed (MQTT 5: DISCONNECT 0x82), or the packet is ignored and the connection keeps working.
     */
    async function closedOrIgnored(c: RawClient, version: 4 | 5): Promise<void> {
      c.send({ cmd: 'pingreq' });
      const packets: AnyPacket[] = [];
      for (;;) {
        const p = await c.next().catch(() => null);
        if (p === null) break;
        packets.push(p);
        if (p.cmd === 'pingresp') return;
      }
      expect(c.closed).to.equal(true);
      if (version === 5) {
        expect(packets.map((p) => [p.cmd, p.reasonCode])).to.deep.equal([['disconnect', 0x82]]);
      } else {
        expect(packets).to.deep.equal([]);
      }
    }

    for (const version of [4, 5] as const) {
      const connect = (): Promise<RawClient> => (version === 4 ? v4() : v5());
      badCase(`unknown PUBACK (v${version})`, async () => {
        const c = await connect();
        c.send(Buffer.from([0x40, 0x02, 0x12, 0x34]));
        await closedOrIgnored(c, version);
      });
      badCase(`unknown PUBCOMP (v${version})`, async () => {
        const c = await connect();
        c.send(Buffer.from([0x70, 0x02, 0x12, 0x35]));
        await closedOrIgnored(c, version);
      });
      badCase(`unknown PUBREL (v${version}) gets PUBCOMP, not an error [MQTT-4.3.3-2]`, async () => {
        const c = await connect();
        c.send(Buffer.from([0x62, 0x02, 0x12, 0x37]));
        const p = await c.next();
        expect(p.cmd).to.equal('pubcomp');
        expect(p.messageId).to.equal(0x1237);
        if (version === 5) expect(p.reasonCode).to.be.oneOf([0, 0x92]);
        expect(await c.nothingPendingAfterPing()).to.deep.equal([]);
      });
    }

    badCase('unknown PUBREC (v4): closed or ignored', async () => {
      const c = await v4();
      c.send(Buffer.from([0x50, 0x02, 0x12, 0x36]));
      await closedOrIgnored(c, 4);
    });

    badCase('unknown PUBREC (v5): PUBREL 0x92, or DISCONNECT 0x82', async () => {
      const c = await v5();
      c.send(Buffer.from([0x50, 0x02, 0x12, 0x36]));
      const p = await c.next();
      if (p.cmd === 'pubrel') {
        expect(p.messageId).to.equal(0x1236);
        expect(p.reasonCode).to.equal(0x92);
      } else {
        expect([p.cmd, p.reasonCode]).to.deep.equal(['disconnect', 0x82]);
        await c.closedByServer();
      }
    });

    badCase('PUBACK for a QoS 2 message in flight: not a valid acknowledgement for it', async () => {
      const sub = await v4();
      sub.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'ack/q2', qos: 2 }] });
      await sub.nextOf('suback');
      const pub = await v4();
      pub.send({ cmd: 'publish', topic: 'ack/q2', payload: Buffer.from('m'), qos: 2, messageId: 9, retain: false, dup: false });
      const m = await sub.nextOf('publish');
      expect(m.qos).to.equal(2);
      sub.send({ cmd: 'puback', messageId: m.messageId as number });
      await closedOrIgnored(sub, 4);
      await pub.close();
    });
  });
});

describe('bad input: CONNECT deadline', function () {
  this.timeout(10000);
  let gw: TestGateway;
  const clients: RawClient[] = [];

  before(async () => {
    gw = await startTestGateway({ limits: { connect_timeout_ms: 300 } });
  });
  after(async () => {
    await Promise.all(clients.splice(0).map((c) => c.close()));
    await gw.stop();
  });

  it('a partial CONNECT that then goes silent is closed after connect_timeout_ms; others keep working', async () => {
    const healthy = await RawClient.connect(gw.port, { clientId: 'deadline-healthy' });
    clients.push(healthy);
    healthy.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'd/t', qos: 0 }] });
    await healthy.nextOf('suback');

    const partial = await RawClient.connectSocket(gw.port);
    clients.push(partial);
    const full = connectBytes({ clientId: 'half' });
    const started = Date.now();
    partial.send(full.subarray(0, 9));
    expect(await partial.closedByServer(3000)).to.deep.equal([]);
    const elapsed = Date.now() - started;
    expect(elapsed).to.be.at.least(250);
    expect(elapsed).to.be.below(2000);

    const silent = await RawClient.connectSocket(gw.port);
    clients.push(silent);
    const t2 = Date.now();
    await silent.closedByServer(3000);
    expect(Date.now() - t2).to.be.at.least(250);

    // The healthy client was not affected: its keepalive is 0 and the deadline is for CONNECT only.
    healthy.send({ cmd: 'publish', topic: 'd/t', payload: Buffer.from('still here'), qos: 0, retain: false, dup: false });
    expect(String((await healthy.nextOf('publish')).payload)).to.equal('still here');
  });
});
