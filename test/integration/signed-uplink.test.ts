// Uplink routes with sign = true: HQ can verify which truck sent a message with the gateway's
// public key (`convoy keys show`). Real Mosquitto as HQ, MQTT 5 and 3.1.1.
import { expect } from 'chai';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt, { type MqttClient } from 'mqtt';
import { initGatewayKey, type GatewayKey } from '../../src/security/keys.js';
import { decodeEnvelope, parseDetached, verifyFields } from '../../src/security/signing.js';
import { startMosquitto, type Mosquitto } from '../helpers/mosquitto.js';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';

interface Received { topic: string; payload: Buffer; userProperties: Record<string, string | string[]> | undefined }

describe('signed uplink messages (gateway key)', function () {
  this.timeout(30_000);
  let hq: Mosquitto;
  let keysDir: string;
  let key: GatewayKey;
  const clients: MqttClient[] = [];
  let gw: TestGateway | undefined;

  before(async () => {
    hq = await startMosquitto();
    keysDir = mkdtempSync(join(tmpdir(), 'convoy-keys-'));
    key = initGatewayKey(keysDir);
  });
  afterEach(async () => {
    await Promise.all(clients.splice(0).map((c) => c.endAsync(true)));
    await gw?.stop();
    gw = undefined;
  });
  after(async () => {
    await hq.stop();
    rmSync(keysDir, { recursive: true, force: true });
  });

  async function run(protocolVersion: 4 | 5): Promise<Received> {
    gw = await startTestGateway({
      uplink: {
        enabled: true, gateway_id: 'truck-7', endpoints: [hq.endpoint], protocol_version: protocolVersion,
        backoff_initial_ms: 50, backoff_max_ms: 200,
        signing: { gateway_key: join(keysDir, 'gateway.key') },
        routes: [
          { local: 'truck/events/#', remote: 'fleet/{gateway}/events/#', qos: 1, class: 'event', ttl_s: 0, store_qos0: true, sign: true },
        ],
      },
    });
    const hqSub = await mqtt.connectAsync(`mqtt://127.0.0.1:${hq.port}`, { protocolVersion: 5, clientId: `hq-${protocolVersion}` });
    clients.push(hqSub);
    await hqSub.subscribeAsync('fleet/truck-7/events/#', { qos: 1 });
    const got = new Promise<Received>((resolve) => hqSub.on('message', (topic, payload, packet) => {
      resolve({ topic, payload, userProperties: packet.properties?.userProperties });
    }));
    const lan = await mqtt.connectAsync(`mqtt://127.0.0.1:${gw.port}`, { protocolVersion: 5, clientId: `lan-${protocolVersion}` });
    clients.push(lan);
    await lan.publishAsync('truck/events/delivered', 'parcel 42 delivered', { qos: 1 });
    return got;
  }

  it('MQTT 5: sig, kid and exp user properties verify with the gateway public key', async () => {
    const m = await run(5);
    const up = Object.entries(m.userProperties ?? {}).flatMap(([k, v]) => (Array.isArray(v) ? v.map((x) => [k, x] as [string, string]) : [[k, v] as [string, string]]));
    const order = parseDetached(m.topic, m.payload, { userProperties: up });
    expect(order.gatewayId).to.equal('truck-7');
    expect(order.kid).to.equal(key.kid);
    expect(verifyFields(order, order.signature, key.publicKey)).to.equal(true);
    // Altered in transit: the signature no longer verifies.
    expect(verifyFields({ ...order, payload: Buffer.from('parcel 43 delivered') }, order.signature, key.publicKey)).to.equal(false);
    expect(verifyFields({ ...order, gatewayId: 'truck-8' }, order.signature, key.publicKey)).to.equal(false);
  });

  it('MQTT 3.1.1: the signed envelope verifies and carries the payload', async () => {
    const m = await run(4);
    const order = decodeEnvelope(m.topic, m.payload);
    expect(order.payload.toString()).to.equal('parcel 42 delivered');
    expect(order.gatewayId).to.equal('truck-7');
    expect(verifyFields(order, order.signature, key.publicKey)).to.equal(true);
  });
});
