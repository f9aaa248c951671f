// A subscriber that never reads while a publisher floods QoS 0 and QoS 1: the broker keeps
// answering other clients, counts every message it does not deliver, and its memory stays bounded
// by the configured limits rather than by the size of the flood.
import { expect } from 'chai';
import net from 'node:net';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import mqttPacket from 'mqtt-packet';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { RawClient } from '../helpers/raw-client.js';

const MESSAGES = 200_000;
const BATCH = 5_000;
const MAX_OUTBOUND = 64 * 1024;
const MAX_QUEUED = 100;
const TOPIC = 'flood/data';
// Small messages, but together far more than loopback socket buffers absorb (tcp_rmem can reach
// 32 MB), so the broker's own limits are what the flood runs into.
const PAYLOAD = Buffer.alloc(100, 0x61);

/** A forced full GC, so heap figures are live data and not garbage awaiting collection. */
function collect(): void {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as (() => void) | undefined;
  if (typeof gc === 'function') gc();
}

/** QoS 0 and QoS 1 PUBLISH packets alternating, `count` of them starting at message `first`. */
function floodBatch(first: number, count: number): { bytes: Buffer; qos1: number } {
  const topic = Buffer.from(TOPIC);
  const size0 = 2 + 2 + topic.length + PAYLOAD.length;
  const size1 = size0 + 2;
  const bytes = Buffer.allocUnsafe(count * size1);
  let pos = 0;
  let qos1 = 0;
  for (let i = first; i < first + count; i++) {
    const q1 = i % 2 === 1;
    bytes[pos++] = q1 ? 0x32 : 0x30;
    bytes[pos++] = (q1 ? size1 : size0) - 2; // < 128: a 1-byte Remaining Length
    bytes[pos++] = 0;
    bytes[pos++] = topic.length;
    pos += topic.copy(bytes, pos);
    if (q1) {
      const id = (i % 65535) + 1;
      bytes[pos++] = id >> 8;
      bytes[pos++] = id & 0xff;
      qos1++;
    }
    pos += PAYLOAD.copy(bytes, pos);
  }
  return { bytes: bytes.subarray(0, pos), qos1 };
}

/** A publisher on a bare socket: it reads (so it is not throttled) but only counts bytes. */
class FloodPublisher {
  received = 0;
  private waiter: (() => void) | null = null;
  private target = 0;

  private constructor(readonly socket: net.Socket) {
    socket.on('data', (d: Buffer) => {
      this.received += d.length;
      if (this.waiter && this.received >= this.target) {
        const w = this.waiter;
        this.waiter = null;
        w();
      }
    });
    socket.on('error', () => undefined);
  }

  static async open(port: number): Promise<FloodPublisher> {
    const socket = await new Promise<net.Socket>((resolve, reject) => {
      const s = net.connect({ port, host: '127.0.0.1' }, () => resolve(s));
      s.once('error', reject);
    });
    const p = new FloodPublisher(socket);
    socket.write(mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, clientId: 'flooder', keepalive: 0 }));
    await p.bytes(4, 3000); // CONNACK
    return p;
  }

  write(b: Buffer): Promise<void> {
    return new Promise((resolve, reject) => this.socket.write(b, (err) => (err ? reject(err) : resolve())));
  }

  /** Resolves once `n` bytes in total have arrived. */
  bytes(n: number, timeoutMs: number): Promise<void> {
    if (this.received >= n) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`publisher got ${this.received} of ${n} bytes`)), timeoutMs);
      this.target = n;
      this.waiter = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }
}

async function pingRoundTrip(c: RawClient): Promise<number> {
  const started = Date.now();
  c.send({ cmd: 'pingreq' });
  await c.nextOf('pingresp', 5000);
  return Date.now() - started;
}

describe('slow subscriber under a flood', function () {
  this.timeout(60_000);
  let gw: TestGateway;
  const closers: Array<() => Promise<void> | void> = [];

  before(async () => {
    gw = await startTestGateway({ limits: { max_outbound_bytes: MAX_OUTBOUND, max_queued_messages: MAX_QUEUED } });
  });
  after(async () => {
    for (const c of closers.splice(0)) await c();
    await gw.stop();
  });

  it(`stays responsive, counts drops and bounds memory while ${MESSAGES} messages flood a subscriber that never reads`, async () => {
    const slow = await RawClient.connect(gw.port, { clientId: 'slow-sub' });
    closers.push(() => slow.close());
    slow.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'flood/#', qos: 1 }] });
    expect((await slow.nextOf('suback')).granted).to.deep.equal([1]);
    // From here on the subscriber never reads: the kernel buffers fill, then the broker's.
    slow.socket.pause();

    const observer = await RawClient.connect(gw.port, { clientId: 'observer' });
    closers.push(() => observer.close());
    const publisher = await FloodPublisher.open(gw.port);
    closers.push(() => void publisher.socket.destroy());

    collect();
    const heapBefore = process.memoryUsage().heapUsed;
    let heapPeak = heapBefore;
    let worstPing = 0;
    let qos1Total = 0;
    for (let first = 0; first < MESSAGES; first += BATCH) {
      const { bytes, qos1 } = floodBatch(first, Math.min(BATCH, MESSAGES - first));
      qos1Total += qos1;
      await publisher.write(bytes);
      if ((first / BATCH) % 4 === 0) {
        worstPing = Math.max(worstPing, await pingRoundTrip(observer));
        heapPeak = Math.max(heapPeak, process.memoryUsage().heapUsed);
      }
    }
    // Everything before this PINGREQ has been processed once its PINGRESP arrives: one PUBACK
    // (4 bytes) per QoS 1 message, then PINGRESP (2 bytes), after the CONNACK (4 bytes).
    await publisher.write(Buffer.from([0xc0, 0x00]));
    await publisher.bytes(4 + 4 * qos1Total + 2, 30_000);
    expect(publisher.received).to.equal(4 + 4 * qos1Total + 2);

    worstPing = Math.max(worstPing, await pingRoundTrip(observer));
    expect(worstPing, 'observer PINGREQ round trip (ms)').to.be.below(2000);

    // Drops are counted, and every message is accounted for.
    const m = gw.broker.metrics;
    const session = gw.broker.sessions.get('slow-sub')!;
    const qos0Total = MESSAGES - qos1Total;
    expect(m.dropped.slow_subscriber, 'QoS 0 drops').to.be.greaterThan(0);
    expect(m.dropped.queue_full, 'QoS 1 drops').to.be.greaterThan(0);
    expect(session.queuedCount).to.be.at.most(MAX_QUEUED);
    expect(session.inflight.size).to.be.at.most(gw.broker.limits.maxInflight);
    // QoS 1: never acknowledged, so each one is in flight, queued or dropped.
    expect(m.dropped.queue_full + session.inflight.size + session.queuedCount, 'QoS 1 accounting').to.equal(qos1Total);
    // QoS 0: sent or dropped (the only other sends are the QoS 1 messages in flight).
    expect(m.publishSent - session.inflight.size + m.dropped.slow_subscriber, 'QoS 0 accounting').to.equal(qos0Total);

    // The bytes held for the slow subscriber stay near max_outbound_bytes.
    const conn = gw.broker.clients.get('slow-sub')!;
    expect(conn.pendingBytes).to.be.below(MAX_OUTBOUND + 256 * 1024);

    collect();
    const heapAfter = process.memoryUsage().heapUsed;
    const growth = heapAfter - heapBefore;
    expect(growth, `heap growth ${(growth / 1048576).toFixed(1)} MB`).to.be.below(32 * 1024 * 1024);
    expect(heapPeak - heapBefore, `peak heap growth ${((heapPeak - heapBefore) / 1048576).toFixed(1)} MB`).to.be.below(256 * 1024 * 1024);

    // The slow subscriber is still connected (slow is not an error), and still served once it reads.
    expect(slow.closed).to.equal(false);
    expect(gw.broker.clients.has('slow-sub')).to.equal(true);
  });
});
