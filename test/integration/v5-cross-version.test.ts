// MQTT 5 and MQTT 3.1.1 clients on one broker: messages cross in both directions, v5-only
// properties are dropped towards 3.1.1 and nothing is invented towards 5.
import { expect } from 'chai';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { RawClient, type AnyPacket } from '../helpers/raw-client.js';
import { ClientPool, unique } from '../helpers/flows.js';

function props(p: AnyPacket): Record<string, unknown> {
  return (p.properties ?? {}) as Record<string, unknown>;
}

async function subscribe(c: RawClient, topic: string, qos: 0 | 1 | 2): Promise<void> {
  c.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic, qos }] });
  expect((await c.nextOf('suback')).granted).to.deep.equal([qos]);
}

describe('MQTT 5 and 3.1.1 clients together', () => {
  let gw: TestGateway;
  const pool = new ClientPool();

  before(async () => {
    gw = await startTestGateway();
  });
  afterEach(async () => {
    await pool.closeAll();
  });
  after(async () => {
    await gw.stop();
  });

  it('delivers an MQTT 5 publication with properties to a 3.1.1 subscriber as a plain 3.1.1 PUBLISH', async () => {
    const t = unique('x/5to4');
    const sub = await pool.connect(gw.port, { version: 4 });
    await subscribe(sub, t, 1);
    const received: Buffer[] = [];
    sub.socket.on('data', (d: Buffer) => received.push(d));
    const pub = await pool.connect(gw.port, { version: 5 });
    pub.send({
      cmd: 'publish', topic: t, payload: Buffer.from('from five'), qos: 1, messageId: 3, retain: false, dup: false,
      properties: {
        contentType: 'text/plain', payloadFormatIndicator: true, messageExpiryInterval: 60, responseTopic: 'r/t',
        correlationData: Buffer.from('c'), userProperties: { k: 'v' }, topicAlias: 1,
      },
    });
    await pub.nextOf('puback');
    const p = await sub.nextOf('publish');
    expect([p.topic, String(p.payload), p.qos, p.retain]).to.deep.equal([t, 'from five', 1, false]);
    expect(p.properties).to.equal(undefined);
    // The exact 3.1.1 layout: fixed header, topic, packet id, payload — no property block.
    const topicLen = Buffer.byteLength(t);
    const frame = Buffer.concat(received);
    expect(frame[0]).to.equal(0x32);
    expect(frame[1]).to.equal(2 + topicLen + 2 + 'from five'.length);
    sub.send({ cmd: 'puback', messageId: p.messageId as number });
    expect(await sub.nothingPendingAfterPing()).to.deep.equal([]);
  });

  it('delivers a 3.1.1 publication to an MQTT 5 subscriber without invented properties', async () => {
    const t = unique('x/4to5');
    const sub = await pool.connect(gw.port, { version: 5 });
    await subscribe(sub, t, 2);
    const pub = await pool.connect(gw.port, { version: 4 });
    pub.send({ cmd: 'publish', topic: t, payload: Buffer.from('from four'), qos: 1, messageId: 4, retain: false, dup: false });
    await pub.nextOf('puback');
    const p = await sub.nextOf('publish');
    expect([p.topic, String(p.payload), p.qos]).to.deep.equal([t, 'from four', 1]);
    expect(props(p)).to.deep.equal({});
  });

  it('delivers a retained MQTT 5 message to a 3.1.1 subscriber with RETAIN set and no properties [MQTT-3.3.1-8]', async () => {
    const t = unique('x/ret');
    const pub = await pool.connect(gw.port, { version: 5 });
    pub.send({
      cmd: 'publish', topic: t, payload: Buffer.from('kept'), qos: 0, retain: true, dup: false,
      properties: { contentType: 'text/plain', userProperties: { a: 'b' } },
    });
    expect(await pub.nothingPendingAfterPing()).to.deep.equal([]);
    const sub = await pool.connect(gw.port, { version: 4 });
    sub.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: t, qos: 0 }] });
    await sub.nextOf('suback');
    const p = await sub.nextOf('publish');
    expect([String(p.payload), p.retain, p.properties]).to.deep.equal(['kept', true, undefined]);
  });

  it('publishes the will of an MQTT 5 client to a 3.1.1 subscriber', async () => {
    const t = unique('x/will');
    const sub = await pool.connect(gw.port, { version: 4 });
    await subscribe(sub, t, 0);
    const c = await pool.connect(gw.port, {
      version: 5, will: { topic: t, payload: Buffer.from('bye'), qos: 0, retain: false, properties: { contentType: 'text/plain' } },
    });
    await c.close();
    const p = await sub.nextOf('publish');
    expect([p.topic, String(p.payload), p.properties]).to.deep.equal([t, 'bye', undefined]);
  });
});
