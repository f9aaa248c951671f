// The uplink over mutual TLS to a real Mosquitto TLS listener: the truck checks HQ's certificate
// against the configured CA (and its name), HQ checks the truck's client certificate. The
// connection is Convoy's own HqStream (src/bridge/hq-stream.ts) under MQTT.js.
import { expect } from 'chai';
import { chmodSync, copyFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt, { type MqttClient } from 'mqtt';
import { freePort, startMosquitto, type Mosquitto } from '../helpers/mosquitto.js';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { createTestPki, type TestPki } from '../helpers/test-pki.js';

function connect(port: number, clientId: string): Promise<MqttClient> {
  return new Promise((resolve, reject) => {
    const c = mqtt.connect({ host: '127.0.0.1', port, protocolVersion: 5, clientId, reconnectPeriod: 0, connectTimeout: 3000 });
    c.once('connect', () => resolve(c));
    c.once('error', (err) => {
      c.end(true);
      reject(err);
    });
  });
}

function until(pred: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  return new Promise((resolve, reject) => {
    const deadline = Date.now() + timeoutMs;
    const tick = (): void => {
      if (pred()) return resolve();
      if (Date.now() > deadline) return reject(new Error(`timed out waiting for ${what}`));
      setTimeout(tick, 20);
    };
    tick();
  });
}

describe('uplink over mutual TLS to Mosquitto', function () {
  this.timeout(30_000);
  let pki: TestPki;
  /** The PKI files where the mosquitto user can read them. */
  let shared: string;
  let hq: Mosquitto;
  let tlsPort: number;
  let gw: TestGateway | null = null;
  const clients: MqttClient[] = [];

  before(async () => {
    pki = createTestPki();
    shared = mkdtempSync(join(tmpdir(), 'convoy-hq-tls-'));
    chmodSync(shared, 0o755);
    for (const [from, to] of [
      [pki.ca, 'ca.pem'],
      [pki.server.cert, 'server.pem'],
      [pki.server.key, 'server.key'],
    ] as const) {
      copyFileSync(from, join(shared, to));
      chmodSync(join(shared, to), 0o644);
    }
    tlsPort = await freePort();
    hq = await startMosquitto({
      extraConfig: [
        `listener ${tlsPort} 127.0.0.1`,
        'allow_anonymous true',
        `cafile ${join(shared, 'ca.pem')}`,
        `certfile ${join(shared, 'server.pem')}`,
        `keyfile ${join(shared, 'server.key')}`,
        'require_certificate true',
      ],
    });
  });

  afterEach(async () => {
    await Promise.all(clients.splice(0).map((c) => new Promise<void>((r) => c.end(true, {}, () => r()))));
    await gw?.stop();
    gw = null;
  });

  after(async () => {
    await hq?.stop();
    pki?.cleanup();
    if (shared) rmSync(shared, { recursive: true, force: true });
  });

  function uplink(tls: { ca: string; cert: string; key: string; servername?: string }): Parameters<typeof startTestGateway>[0] {
    return {
      uplink: {
        enabled: true,
        gateway_id: 'gw-tls',
        endpoints: [`127.0.0.1:${tlsPort}`],
        protocol_version: 5,
        connect_timeout_ms: 2000,
        backoff_initial_ms: 50,
        backoff_max_ms: 300,
        tls: { enabled: true, servername: '', ...tls },
        routes: [{ local: 'truck/telemetry/#', remote: 'fleet/{gateway}/telemetry/#', qos: 1, class: 'telemetry', ttl_s: 0, store_qos0: true, sign: false }],
        downlink: [],
      },
    };
  }

  it('connects with the client certificate, checks HQ against the CA, and delivers QoS 1 uplink messages', async () => {
    const hqApp = await connect(hq.port, 'hq-app-tls');
    clients.push(hqApp);
    const got: string[] = [];
    hqApp.on('message', (topic, payload) => {
      if (topic.startsWith('fleet/gw-tls/telemetry/')) got.push(payload.toString());
    });
    await new Promise<void>((resolve, reject) => hqApp.subscribe('fleet/gw-tls/#', { qos: 1 }, (err) => (err ? reject(err) : resolve())));

    gw = await startTestGateway(uplink({ ca: pki.ca, cert: pki.client.cert, key: pki.client.key }));
    const bridge = gw.bridge!;
    await until(() => bridge.link.isUp, 'link up over TLS');
    const lan = await connect(gw.port, 'lan-tls');
    clients.push(lan);
    for (let i = 1; i <= 50; i++) await lan.publishAsync('truck/telemetry/speed', `v${i}`, { qos: 1 });
    await until(() => got.length >= 50, '50 messages at HQ');
    expect(got).to.deep.equal(Array.from({ length: 50 }, (_, i) => `v${i + 1}`));
    await until(() => bridge.stats().forwarder.acked === 50, 'all acknowledged by HQ');
  });

  it('refuses an HQ whose certificate the configured CA did not sign, and keeps retrying', async () => {
    gw = await startTestGateway(uplink({ ca: pki.wrongCaClient.ca, cert: pki.client.cert, key: pki.client.key }));
    const link = gw.bridge!.link;
    await until(() => link.status().attempts >= 2, 'two failed attempts');
    expect(link.isUp).to.equal(false);
    expect(link.status().lastError).to.match(/certificate/i);
  });

  it('refuses an HQ certificate issued for another name (servername check)', async () => {
    gw = await startTestGateway(uplink({ ca: pki.ca, cert: pki.client.cert, key: pki.client.key, servername: 'hq.example.net' }));
    const link = gw.bridge!.link;
    await until(() => link.status().attempts >= 1, 'a failed attempt');
    expect(link.isUp).to.equal(false);
    expect(link.status().lastError).to.match(/hq\.example\.net|altname|certificate/i);
  });
});
