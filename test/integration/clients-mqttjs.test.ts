// MQTT.js (an independent client implementation) against Convoy, MQTT 3.1.1 and 3.1.
import { expect } from 'chai';
import mqtt from 'mqtt';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { ClientPool, ack, expectNothingMore, nextPublish, publish, subscribe, unique, type QoS } from '../helpers/flows.js';

type MqttClient = ReturnType<typeof mqtt.connect>;
type ClientOptions = NonNullable<Parameters<typeof mqtt.connect>[1]>;

interface Received {
  topic: string;
  payload: string;
  qos: number;
  retain: boolean;
  dup: boolean;
}

/** Collects messages and lets a test await the n-th one (no sleeps). */
class Inbox {
  readonly messages: Received[] = [];
  private waiters: Array<() => void> = [];

  constructor(client: MqttClient) {
    client.on('message', (topic, payload, packet) => {
      this.messages.push({ topic, payload: payload.toString(), qos: packet.qos, retain: packet.retain, dup: packet.dup });
      const w = this.waiters;
      this.waiters = [];
      for (const f of w) f();
    });
  }

  count(n: number, timeoutMs = 3000): Promise<Received[]> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`timed out waiting for ${n} messages, got ${JSON.stringify(this.messages)}`)), timeoutMs);
      const check = (): void => {
        if (this.messages.length >= n) {
          clearTimeout(timer);
          resolve(this.messages.slice(0, n));
        } else {
          this.waiters.push(check);
        }
      };
      check();
    });
  }
}

describe('MQTT.js 5 clients (protocolVersion 4 and 3)', () => {
  let gw: TestGateway;
  const clients: MqttClient[] = [];
  const pool = new ClientPool();

  before(async () => {
    gw = await startTestGateway();
  });
  afterEach(async () => {
    await Promise.all(clients.splice(0).map((c) => c.endAsync(true)));
    await pool.closeAll();
  });
  after(async () => {
    await gw.stop();
  });

  /** Connects (no automatic reconnects); the inbox is attached before CONNACK so nothing is missed. */
  async function connect(opts: ClientOptions = {}): Promise<{ client: MqttClient; inbox: Inbox; sessionPresent: boolean }> {
    const client = mqtt.connect({
      host: '127.0.0.1', port: gw.port, protocolVersion: 4, reconnectPeriod: 0, connectTimeout: 3000,
      clientId: unique('js'), ...opts,
    });
    clients.push(client);
    const inbox = new Inbox(client);
    const connack = await new Promise<{ sessionPresent: boolean }>((resolve, reject) => {
      client.once('connect', resolve);
      client.once('error', reject);
      client.once('close', () => reject(new Error('MQTT.js connection closed before CONNACK')));
    });
    return { client, inbox, sessionPresent: connack.sessionPresent };
  }

  for (const qos of [0, 1, 2] as QoS[]) {
    it(`publishes and subscribes at QoS ${qos} between two MQTT.js clients [MQTT-4.3.${qos + 1}]`, async () => {
      const t = unique('js/qos');
      const { client: sub, inbox } = await connect();
      const granted = await sub.subscribeAsync(t, { qos });
      expect(granted.map((g) => g.qos)).to.deep.equal([qos]);
      const { client: pub } = await connect();
      // For QoS 1/2 publishAsync resolves on PUBACK / PUBCOMP from Convoy.
      await pub.publishAsync(t, `js q${qos}`, { qos });
      await pub.publishAsync(t, `js q${qos} again`, { qos });
      expect(await inbox.count(2)).to.deep.equal([
        { topic: t, payload: `js q${qos}`, qos, retain: false, dup: false },
        { topic: t, payload: `js q${qos} again`, qos, retain: false, dup: false },
      ]);
    });
  }

  it('delivers to MQTT.js at the lower of published and granted QoS [MQTT-3.8.4-6]', async () => {
    const t = unique('js/min');
    const { client: sub, inbox } = await connect();
    await sub.subscribeAsync({ [`${t}/1`]: { qos: 1 }, [`${t}/0`]: { qos: 0 } });
    const { client: pub } = await connect();
    await pub.publishAsync(`${t}/1`, 'two to one', { qos: 2 });
    await pub.publishAsync(`${t}/0`, 'two to zero', { qos: 2 });
    const got = await inbox.count(2);
    expect(got.map((m) => [m.topic, m.qos])).to.deep.equal([[`${t}/1`, 1], [`${t}/0`, 0]]);
  });

  it('completes a QoS 2 PUBLISH from MQTT.js seen by a raw subscriber exactly once [MQTT-4.3.3-2]', async () => {
    const t = unique('js/q2raw');
    const raw = await pool.connect(gw.port);
    await subscribe(raw, [{ topic: t, qos: 2 }]);
    const { client } = await connect();
    await client.publishAsync(t, Buffer.from([1, 2, 3]), { qos: 2 });
    const p = await nextPublish(raw);
    expect(p.qos).to.equal(2);
    expect([...(p.payload as Buffer)]).to.deep.equal([1, 2, 3]);
    await ack(raw, p);
    await expectNothingMore(raw);
  });

  it('receives retained messages with retain set on subscribe, and without it live [MQTT-3.3.1-8] [MQTT-3.3.1-9]', async () => {
    const t = unique('js/retained');
    const { client: pub } = await connect();
    await pub.publishAsync(t, 'stored', { qos: 1, retain: true });
    const { client: sub, inbox } = await connect();
    await sub.subscribeAsync(t, { qos: 1 });
    await pub.publishAsync(t, 'live', { qos: 1, retain: true });
    expect((await inbox.count(2)).map((m) => [m.payload, m.retain])).to.deep.equal([['stored', true], ['live', false]]);
  });

  it('resumes a persistent MQTT.js session: Session Present 1, queued QoS 1/2 messages delivered [MQTT-3.2.2-2] [MQTT-3.1.2-5]', async () => {
    const t = unique('js/persist');
    const clientId = unique('jspersist');
    const first = await connect({ clientId, clean: false });
    expect(first.sessionPresent).to.equal(false);
    await first.client.subscribeAsync(`${t}/#`, { qos: 2 });
    await first.client.endAsync();
    expect(gw.broker.clients.has(clientId)).to.equal(false);

    const { client: pub } = await connect();
    await pub.publishAsync(`${t}/a`, 'away 1', { qos: 1 });
    await pub.publishAsync(`${t}/b`, 'away 2', { qos: 2 });
    await pub.publishAsync(`${t}/c`, 'away qos0', { qos: 0 });
    await pub.publishAsync(`${t}/d`, 'away 3', { qos: 1 });

    const second = await connect({ clientId, clean: false });
    expect(second.sessionPresent).to.equal(true);
    // MQTT.js hands a QoS 2 message to the application on PUBREL, so compare regardless of order.
    const got = await second.inbox.count(3);
    expect(got.map((m) => [m.topic, m.payload, m.qos]).sort()).to.deep.equal([
      [`${t}/a`, 'away 1', 1], [`${t}/b`, 'away 2', 2], [`${t}/d`, 'away 3', 1],
    ]);
    // Still subscribed after the resume, without subscribing again.
    await pub.publishAsync(`${t}/e`, 'live', { qos: 1 });
    expect((await second.inbox.count(4))[3]!.payload).to.equal('live');
    expect(second.inbox.messages).to.have.length(4); // the QoS 0 message was not queued
  });

  it('starts over with clean: true after a persistent session [MQTT-3.1.2-6]', async () => {
    const t = unique('js/cleanafter');
    const clientId = unique('jsclean');
    const first = await connect({ clientId, clean: false });
    await first.client.subscribeAsync(t, { qos: 1 });
    await first.client.endAsync();
    const second = await connect({ clientId, clean: true });
    expect(second.sessionPresent).to.equal(false);
    const raw = await pool.connect(gw.port);
    await publish(raw, t, 'nobody', 1);
    // A raw client subscribed afterwards proves the message was routed; MQTT.js got nothing.
    await second.client.subscribeAsync(`${t}-probe`, { qos: 1 });
    await publish(raw, `${t}-probe`, 'probe', 1);
    expect((await second.inbox.count(1)).map((m) => m.payload)).to.deep.equal(['probe']);
  });

  it('works as an MQTT 3.1 (MQIsdp) client with QoS 2', async () => {
    const t = unique('js/v31');
    const { client: sub, inbox } = await connect({ protocolVersion: 3, protocolId: 'MQIsdp', clientId: unique('j31').slice(0, 23) });
    await sub.subscribeAsync(t, { qos: 2 });
    const { client: pub } = await connect({ protocolVersion: 3, protocolId: 'MQIsdp', clientId: unique('k31').slice(0, 23) });
    await pub.publishAsync(t, 'three-one', { qos: 2 });
    expect((await inbox.count(1))[0]).to.deep.equal({ topic: t, payload: 'three-one', qos: 2, retain: false, dup: false });
  });

  it('receives a will published for an MQTT.js client whose connection drops [MQTT-3.1.2-8]', async () => {
    const t = unique('js/will');
    const { client: sub, inbox } = await connect();
    await sub.subscribeAsync(t, { qos: 1 });
    const { client: doomed } = await connect({ will: { topic: t, payload: Buffer.from('dropped'), qos: 1, retain: false } });
    doomed.stream.destroy();
    const [m] = await inbox.count(1);
    expect(m).to.deep.include({ topic: t, payload: 'dropped', qos: 1, retain: false });
  });

  it("receives a raw client's PUBLISHes to 30 topics through one '+' subscription [MQTT-4.7.1-3]", async () => {
    const t = unique('js/wild');
    const { client: sub, inbox } = await connect();
    await sub.subscribeAsync(`${t}/+/v`, { qos: 1 });
    const raw = await pool.connect(gw.port);
    for (let i = 0; i < 30; i++) await publish(raw, `${t}/d${i}/v`, String(i), 1, { messageId: i + 1 });
    const got = await inbox.count(30);
    // Order across different topics is not required by the spec: compare as sets.
    expect(got.map((m) => m.topic).sort()).to.deep.equal(Array.from({ length: 30 }, (_, i) => `${t}/d${i}/v`).sort());
    expect(got.every((m) => m.qos === 1 && m.topic === `${t}/d${m.payload}/v`)).to.equal(true);
  });
});
