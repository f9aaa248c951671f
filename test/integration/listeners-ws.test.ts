// WebSocket and secure WebSocket listeners over real sockets: MQTT.js over ws:// and wss:// sharing
// the publish path with tcp clients, subprotocol and path checks, the maximum payload, text frames.
import { expect } from 'chai';
import http from 'node:http';
import mqtt from 'mqtt';
import { WebSocket } from 'ws';
import { listener, startListenerGateway, type ListenerGateway } from '../helpers/listener-gateway.js';
import { createTestPki, type TestPki } from '../helpers/test-pki.js';
import { unique } from '../helpers/flows.js';

type MqttClient = ReturnType<typeof mqtt.connect>;
type ClientOptions = NonNullable<Parameters<typeof mqtt.connect>[1]>;

const MAX_PACKET = 8192;
/** An MQTT 3.1.1 CONNECT with client id "" and clean session. */
const CONNECT = Buffer.from('100c00044d5154540402003c0000', 'hex');

describe('WebSocket listeners', function () {
  this.timeout(20000);
  let pki: TestPki;
  let gw: ListenerGateway;
  let wsPort: number;
  let wssPort: number;
  let wssMutualPort: number;
  const clients: MqttClient[] = [];
  const sockets: WebSocket[] = [];

  before(async () => {
    pki = createTestPki();
    gw = await startListenerGateway([
      listener({ type: 'ws', path: '/mqtt' }),
      listener({ type: 'wss', path: '/mqtt', cert: pki.server.cert, key: pki.server.key }),
      listener({
        type: 'wss', path: '/secure', cert: pki.server.cert, key: pki.server.key, ca: pki.ca, crl: pki.crl,
        require_client_cert: true, use_identity_as_username: true,
      }),
    ], { limits: { max_packet_size: MAX_PACKET } });
    wsPort = gw.under[0]!.port;
    wssPort = gw.under[1]!.port;
    wssMutualPort = gw.under[2]!.port;
  });
  afterEach(async () => {
    for (const s of sockets.splice(0)) s.terminate();
    await Promise.all(clients.splice(0).map((c) => c.endAsync(true)));
  });
  after(async () => {
    await gw?.stop();
    pki?.cleanup();
  });

  async function connect(opts: ClientOptions): Promise<MqttClient> {
    const client = mqtt.connect({
      host: '127.0.0.1', protocolVersion: 4, reconnectPeriod: 0, connectTimeout: 3000, clientId: unique('ws'), ...opts,
    });
    clients.push(client);
    await new Promise<void>((resolve, reject) => {
      client.once('connect', () => resolve());
      client.once('error', reject);
      client.once('close', () => reject(new Error('closed before CONNACK')));
    });
    return client;
  }

  function messages(client: MqttClient, n: number, timeoutMs = 5000): Promise<Array<{ topic: string; payload: Buffer }>> {
    const got: Array<{ topic: string; payload: Buffer }> = [];
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`got ${got.length} of ${n} messages`)), timeoutMs);
      const on = (topic: string, payload: Buffer): void => {
        got.push({ topic, payload });
        if (got.length === n) {
          clearTimeout(timer);
          client.removeListener('message', on);
          resolve(got);
        }
      };
      client.on('message', on);
    });
  }

  /** A raw WebSocket; resolves once open, rejects with the HTTP status if the upgrade is refused. */
  function rawSocket(port: number, protocols: string[], path = '/mqtt'): Promise<WebSocket> {
    const ws = new WebSocket(`ws://127.0.0.1:${port}${path}`, protocols);
    sockets.push(ws);
    return new Promise((resolve, reject) => {
      ws.once('open', () => resolve(ws));
      ws.once('unexpected-response', (_req, res: http.IncomingMessage) => reject(new Error(`HTTP ${res.statusCode}`)));
      ws.once('error', reject);
    });
  }

  function closed(ws: WebSocket): Promise<number> {
    return new Promise((resolve) => ws.once('close', (code) => resolve(code)));
  }

  for (const protocolVersion of [4, 5] as const) {
    it(`MQTT.js over ws:// (protocolVersion ${protocolVersion}) publishes to and receives from tcp clients`, async () => {
      const ws = await connect({ protocol: 'ws', port: wsPort, path: '/mqtt', protocolVersion });
      const tcp = await connect({ protocol: 'mqtt', port: gw.tcpPort, protocolVersion: 4 });
      const up = `up/${unique('t')}`;
      const down = `down/${unique('t')}`;
      await tcp.subscribeAsync(up, { qos: 1 });
      await ws.subscribeAsync(down, { qos: 1 });
      const atTcp = messages(tcp, 1);
      await ws.publishAsync(up, 'from-ws', { qos: 1 });
      expect((await atTcp)[0]!.payload.toString()).to.equal('from-ws');
      const atWs = messages(ws, 1);
      await tcp.publishAsync(down, 'from-tcp', { qos: 1 });
      const [m] = await atWs;
      expect(m!.topic).to.equal(down);
      expect(m!.payload.toString()).to.equal('from-tcp');
      expect(gw.broker.clients.get(ws.options.clientId!)?.remoteAddress).to.match(/^127\.0\.0\.1:\d+$/);
    });
  }

  it('accepts MQTT 3.1 clients with the mqttv3.1 subprotocol', async () => {
    const c = await connect({ protocol: 'ws', port: wsPort, path: '/mqtt', protocolVersion: 3, protocolId: 'MQIsdp' });
    const topic = `v31/${unique('t')}`;
    await c.subscribeAsync(topic, { qos: 0 });
    const got = messages(c, 1);
    await c.publishAsync(topic, 'old', { qos: 0 });
    expect((await got)[0]!.payload.toString()).to.equal('old');
  });

  it('carries a burst larger than the socket buffers in order (backpressure through the stream)', async () => {
    const sub = await connect({ protocol: 'ws', port: wsPort, path: '/mqtt' });
    const pub = await connect({ protocol: 'mqtt', port: gw.tcpPort });
    const topic = `burst/${unique('t')}`;
    await sub.subscribeAsync(topic, { qos: 1 });
    const n = 300;
    const got = messages(sub, n, 15000);
    const body = Buffer.alloc(MAX_PACKET - 200, 0x61);
    await Promise.all(Array.from({ length: n }, (_, i) => pub.publishAsync(topic, Buffer.concat([Buffer.from(`${i}:`), body]), { qos: 1 })));
    const seqs = (await got).map((m) => Number(m.payload.subarray(0, 8).toString().split(':')[0]));
    expect(seqs).to.deep.equal(Array.from({ length: n }, (_, i) => i));
  });

  it('MQTT.js over wss:// works', async () => {
    const c = await connect({ protocol: 'wss', port: wssPort, path: '/mqtt', ca: pki.read(pki.ca), protocolVersion: 5 });
    const tcp = await connect({ protocol: 'mqtt', port: gw.tcpPort });
    const topic = `wss/${unique('t')}`;
    await tcp.subscribeAsync(topic, { qos: 1 });
    const got = messages(tcp, 1);
    await c.publishAsync(topic, 'secure-ws', { qos: 1 });
    expect((await got)[0]!.payload.toString()).to.equal('secure-ws');
  });

  it('wss with client certificates: identity from the CN, revoked certificate refused', async () => {
    const clientId = unique('wsscn');
    await connect({
      protocol: 'wss', port: wssMutualPort, path: '/secure', clientId,
      ca: pki.read(pki.ca), cert: pki.read(pki.client.cert), key: pki.read(pki.client.key),
    });
    expect(gw.broker.clients.get(clientId)?.certificateIdentity).to.equal('truck-sensor-1');
    const bad = mqtt.connect({
      host: '127.0.0.1', protocol: 'wss', port: wssMutualPort, path: '/secure', reconnectPeriod: 0, connectTimeout: 3000,
      ca: pki.read(pki.ca), cert: pki.read(pki.revokedClient.cert), key: pki.read(pki.revokedClient.key),
    });
    clients.push(bad);
    await new Promise<void>((resolve, reject) => {
      bad.once('connect', () => reject(new Error('revoked certificate accepted')));
      bad.once('error', () => resolve());
      bad.once('close', () => resolve());
    });
  });

  it('wss: a reload whose CRL revokes an open connection\'s certificate closes that connection (0x87) only', async () => {
    const device = pki.issueClient('tablet-stolen');
    const wss = (c: { cert: string; key: string }): ClientOptions => ({
      protocol: 'wss', port: wssMutualPort, path: '/secure', protocolVersion: 5,
      ca: pki.read(pki.ca), cert: pki.read(c.cert), key: pki.read(c.key),
    });
    const open = await connect(wss(device));
    const bystander = await connect(wss(pki.client));
    const cut = new Promise<number | undefined>((resolve) => open.once('disconnect', (p) => resolve(p.reasonCode)));
    const closed = new Promise<void>((resolve) => open.once('close', () => resolve()));
    pki.revoke(device.cert);
    await gw.reload();
    expect(await cut).to.equal(0x87);
    await closed;
    expect(bystander.connected).to.equal(true);
  });

  it('a message above the maximum payload closes that connection only', async () => {
    const other = await connect({ protocol: 'ws', port: wsPort, path: '/mqtt' });
    const ws = await rawSocket(wsPort, ['mqtt']);
    const code = closed(ws);
    ws.send(Buffer.alloc(MAX_PACKET + 1024 + 1));
    expect(await code).to.equal(1009);
    // Within the limit, an MQTT packet too large for the broker is the broker's refusal instead.
    const topic = `alive/${unique('t')}`;
    await other.subscribeAsync(topic, { qos: 1 });
    const got = messages(other, 1);
    await other.publishAsync(topic, 'still-up', { qos: 1 });
    expect((await got)[0]!.payload.toString()).to.equal('still-up');
  });

  it('refuses a wrong or missing subprotocol, and a wrong path', async () => {
    await rawSocket(wsPort, ['foo']).then(() => expect.fail('upgrade with subprotocol foo accepted'), (err: Error) => {
      expect(err.message).to.equal('HTTP 400');
    });
    await rawSocket(wsPort, []).then(() => expect.fail('upgrade without subprotocol accepted'), (err: Error) => {
      expect(err.message).to.equal('HTTP 400');
    });
    await rawSocket(wsPort, ['mqtt'], '/other').then(() => expect.fail('upgrade on a wrong path accepted'), (err: Error) => {
      expect(err.message).to.equal('HTTP 404');
    });
    const ok = await rawSocket(wsPort, ['foo', 'mqtt']);
    expect(ok.protocol).to.equal('mqtt');
  });

  it('closes the connection on a text message without passing its bytes to the broker', async () => {
    const ws = await rawSocket(wsPort, ['mqtt']);
    const frames: Buffer[] = [];
    ws.on('message', (d: Buffer) => frames.push(d));
    const code = closed(ws);
    const bytesBefore = gw.broker.metrics.bytesReceived;
    ws.send(CONNECT.toString('latin1'));
    expect(await code).to.equal(1003);
    expect(frames).to.have.length(0);
    expect(gw.broker.metrics.bytesReceived - bytesBefore).to.equal(0);
    // The same CONNECT in a binary message gets its CONNACK.
    const good = await rawSocket(wsPort, ['mqtt']);
    const connack = new Promise<Buffer>((resolve) => good.once('message', (d: Buffer) => resolve(d)));
    good.send(CONNECT);
    expect((await connack)[0]).to.equal(0x20);
  });

  it('answers a plain HTTP request without an upgrade', async () => {
    const status = await new Promise<number | undefined>((resolve, reject) => {
      http.get(`http://127.0.0.1:${wsPort}/mqtt`, (res) => {
        res.resume();
        resolve(res.statusCode);
      }).once('error', reject);
    });
    expect(status).to.equal(426);
  });
});
