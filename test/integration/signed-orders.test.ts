// Signed orders end to end: a real Mosquitto as HQ, a Convoy gateway (SQLite store) with a downlink
// route marked verify, and a LAN subscriber. A correctly signed order reaches the LAN; forged,
// altered, unsigned, unknown-key, replayed (also after a Convoy restart), expired and wrong-truck
// orders never do. Absence is proven by a valid order published right after each bad one arriving
// alone (the downlink is one ordered stream: anything delivered from the bad one would come first).
// Each refusal is counted by reason and reported on convoy/alarms/orders.
import { expect } from 'chai';
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt, { type IClientOptions, type IClientPublishOptions, type MqttClient } from 'mqtt';
import { addTrustedKey } from '../../src/security/keys.js';
import type { OrderRejectReason } from '../../src/security/order-verifier.js';
import { encodeEnvelope, keyId, signatureProperties, signOrder, type SignedOrder } from '../../src/security/signing.js';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { startMosquitto, type Mosquitto } from '../helpers/mosquitto.js';
import { until } from '../helpers/until.js';

const hqKey = generateKeyPairSync('ed25519');
const stranger = generateKeyPairSync('ed25519');

interface Got {
  topic: string;
  payload: Buffer;
  retain: boolean;
  user: Record<string, string | string[]>;
}

class Inbox {
  readonly got: Got[] = [];
  private watchers: Array<() => void> = [];

  constructor(c: MqttClient) {
    c.on('message', (topic, payload, packet) => {
      this.got.push({ topic, payload: Buffer.from(payload), retain: packet.retain, user: packet.properties?.userProperties ?? {} });
      for (const w of this.watchers.splice(0)) w();
    });
  }

  waitFor(pred: (got: Got[]) => boolean, what: string, timeoutMs = 10_000): Promise<void> {
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`timed out waiting for ${what}; got ${JSON.stringify(this.got.map((g) => [g.topic, g.payload.toString()]))}`)), timeoutMs);
      const check = (): void => {
        if (pred(this.got)) {
          clearTimeout(t);
          resolve();
        } else this.watchers.push(check);
      };
      check();
    });
  }
}

function connect(port: number, opts: IClientOptions = {}): Promise<MqttClient> {
  return new Promise((resolve, reject) => {
    const c = mqtt.connect({ host: '127.0.0.1', port, reconnectPeriod: 0, connectTimeout: 3000, protocolVersion: 5, ...opts });
    c.once('connect', () => resolve(c));
    c.once('error', (err) => {
      c.end(true);
      reject(err);
    });
  });
}

function end(c: MqttClient): Promise<void> {
  return new Promise((r) => c.end(true, {}, () => r()));
}

function subscribe(c: MqttClient, topic: string): Promise<void> {
  return new Promise((resolve, reject) => c.subscribe(topic, { qos: 1 }, (err) => (err ? reject(err) : resolve())));
}

function publish(c: MqttClient, topic: string, payload: Buffer | string, opts: IClientPublishOptions = { qos: 1 }): Promise<void> {
  return new Promise((resolve, reject) => c.publish(topic, payload, opts, (err) => (err ? reject(err) : resolve())));
}

const nowS = (): number => Math.floor(Date.now() / 1000);

interface SignOpts {
  gw?: string;
  topic?: string;
  exp?: number;
  key?: KeyObject;
}

function sign(payload: string, seq: number, o: SignOpts = {}): SignedOrder {
  return signOrder({
    gatewayId: o.gw ?? 'gw1', topic: o.topic ?? 'fleet/gw1/orders/o1', payload, seq, exp: o.exp ?? nowS() + 300, privateKey: o.key ?? hqKey.privateKey,
  });
}

/** Publishes a signed order at HQ the MQTT 5 way (detached signature in user properties). */
function sendDetached(hq: MqttClient, o: SignedOrder, payload: Buffer = o.payload, topic = o.topic, extra: Array<[string, string]> = []): Promise<void> {
  const userProperties: Record<string, string> = { order: payload.toString() };
  for (const [k, v] of [...signatureProperties(o), ...extra]) userProperties[k] = v;
  return publish(hq, topic, payload, { qos: 1, properties: { userProperties } });
}

type Scenario = { protocol: 4 | 5 };

for (const { protocol } of [{ protocol: 5 }, { protocol: 4 }] as Scenario[]) {
  describe(`signed orders with Mosquitto as HQ (uplink MQTT ${protocol === 5 ? '5, user properties' : '3.1.1, envelope'})`, function () {
    this.timeout(60_000);
    let hq: Mosquitto;
    let gw: TestGateway | null = null;
    let dataDir: string;
    let keysDir: string;
    let hqPub: MqttClient;
    let lan: MqttClient;
    let orders: Inbox;
    let alarms: Inbox;
    let seq = 100;
    const clients: MqttClient[] = [];

    /** Sends `o` the way this scenario's HQ does: user properties (MQTT 5) or an envelope (3.1.1). */
    function send(o: SignedOrder, tamper: { payload?: Buffer; topic?: string } = {}): Promise<void> {
      if (protocol === 5) return sendDetached(hqPub, o, tamper.payload ?? o.payload, tamper.topic ?? o.topic);
      let env = encodeEnvelope(o);
      if (tamper.payload) env = Buffer.concat([env.subarray(0, env.length - o.payload.length), tamper.payload]);
      return publish(hqPub, tamper.topic ?? o.topic, env);
    }

    async function startGw(): Promise<TestGateway> {
      const g = await startTestGateway({
        store: { enabled: true },
        uplink: {
          enabled: true,
          gateway_id: 'gw1',
          endpoints: [hq.endpoint],
          protocol_version: protocol,
          keepalive_s: 5,
          connect_timeout_ms: 2000,
          backoff_initial_ms: 50,
          backoff_max_ms: 300,
          downlink: [
            { remote: 'fleet/{gateway}/orders/#', local: 'truck/orders/#', qos: 1, verify: true },
            { remote: 'fleet/{gateway}/notes/#', local: 'truck/notes/#', qos: 1 },
          ],
          signing: { trusted_keys_dir: join(keysDir, 'trusted'), max_clock_skew_s: 60, alarm_interval_s: 1 },
        },
      }, { dataDir });
      gw = g;
      await until(() => g.bridge?.link.isUp === true, 'link up');
      lan = await connect(g.port, { clientId: `lan-${Date.now()}` });
      clients.push(lan);
      orders = new Inbox(lan);
      await subscribe(lan, 'truck/orders/#');
      await subscribe(lan, 'truck/notes/#');
      const watcher = await connect(g.port, { clientId: `alarms-${Date.now()}` });
      clients.push(watcher);
      alarms = new Inbox(watcher);
      await subscribe(watcher, 'convoy/alarms/orders');
      // The downlink subscriptions at HQ are in place once an (unsigned) note gets through. Not a
      // signed order: that would advance the sequence and hide a replay after a restart.
      const before = orders.got.length;
      await publish(hqPub, 'fleet/gw1/notes/ready', 'ready');
      await orders.waitFor((got) => got.length > before, 'the ready note');
      return g;
    }

    async function stopGw(): Promise<void> {
      await Promise.all(clients.splice(1).map(end)); // all but hqPub
      await gw?.stop();
      gw = null;
    }

    /** Publishes a valid order and expects it to be the only new order on the LAN. */
    async function sendValidAndExpectAlone(label: string): Promise<void> {
      const before = orders.got.length;
      const o = sign(`valid ${label}`, ++seq);
      await send(o);
      await orders.waitFor((g) => g.length > before, `valid order "${label}" on the LAN`);
      // A PINGREQ round trip on the LAN connection: anything queued behind it would have arrived.
      await new Promise<void>((r) => {
        const onPacket = (p: { cmd: string }): void => {
          if (p.cmd !== 'pingresp') return;
          lan.removeListener('packetreceive', onPacket);
          r();
        };
        lan.on('packetreceive', onPacket);
        lan.sendPing();
      });
      const fresh = orders.got.slice(before);
      expect(fresh.map((g) => [g.topic, g.payload.toString()]), `only the valid order after "${label}"`).to.deep.equal([['truck/orders/o1', `valid ${label}`]]);
    }

    /** Sends a bad message, then proves it was not delivered, counted and alarmed. */
    async function expectRefused(label: string, reason: OrderRejectReason, sendBad: () => Promise<void>): Promise<void> {
      const counted = gw!.bridge!.stats().orders!.rejected[reason];
      const alarmCount = alarms.got.length;
      await sendBad();
      await until(() => gw!.bridge!.stats().orders!.rejected[reason] === counted + 1, `${label} counted as ${reason}`);
      await sendValidAndExpectAlone(label);
      // The alarm comes at once (first refusal of a window) or in the window's summary (≤ 1 s).
      await alarms.waitFor(
        (g) => g.slice(alarmCount).some((a) => {
          if (a.retain) return false;
          const body = JSON.parse(a.payload.toString()) as Record<string, unknown>;
          return body.name === 'orders' && (body.reason === reason || Number(body[`window_${reason}`] ?? 0) > 0);
        }),
        `alarm for ${label} (${reason})`,
        5000,
      );
    }

    before(async () => {
      hq = await startMosquitto();
      keysDir = mkdtempSync(join(tmpdir(), 'convoy-keys-'));
      addTrustedKey(join(keysDir, 'trusted'), 'hq', hqKey.publicKey.export({ type: 'spki', format: 'pem' }).toString());
      dataDir = mkdtempSync(join(tmpdir(), 'convoy-signed-'));
      hqPub = await connect(hq.port, { clientId: 'hq-orders', protocolVersion: protocol === 5 ? 5 : 4 });
      clients.push(hqPub);
      await startGw();
    });

    after(async () => {
      await stopGw();
      await Promise.all(clients.splice(0).map(end));
      await hq?.stop();
      rmSync(dataDir, { recursive: true, force: true });
      rmSync(keysDir, { recursive: true, force: true });
    });

    it('delivers a correctly signed order to the LAN subscriber (payload as signed, unwrapped)', async () => {
      const before = orders.got.length;
      const o = sign('deliver parcel 17 to dock 4', ++seq, { topic: 'fleet/gw1/orders/17' });
      await send(o);
      await orders.waitFor((g) => g.length > before, 'the order');
      const got = orders.got[before]!;
      expect(got.topic).to.equal('truck/orders/17');
      expect(got.payload.toString()).to.equal('deliver parcel 17 to dock 4');
      if (protocol === 5) expect(got.user.kid).to.equal(keyId(hqKey.publicKey));
      expect(gw!.bridge!.stats().orders!.accepted).to.be.greaterThan(0);
    });

    it('leaves routes without verify alone (unsigned notes still flow)', async () => {
      const before = orders.got.length;
      await publish(hqPub, 'fleet/gw1/notes/n1', 'plain note');
      await orders.waitFor((g) => g.length > before, 'the note');
      expect(orders.got[before]!.topic).to.equal('truck/notes/n1');
    });

    it('never delivers an unsigned order (malformed)', async () => {
      await expectRefused('unsigned', 'malformed', () => publish(hqPub, 'fleet/gw1/orders/o1', 'deliver parcel 17 to the thief'));
    });

    it('never delivers an order signed by an unknown key (unknown_key)', async () => {
      await expectRefused('unknown key', 'unknown_key', () => send(sign('deliver to the thief', ++seq, { key: stranger.privateKey })));
    });

    it('never delivers a forgery claiming the trusted key id (bad_signature)', async () => {
      await expectRefused('forged', 'bad_signature', () => {
        const forged = sign('deliver to the thief', ++seq, { key: stranger.privateKey });
        return send({ ...forged, kid: keyId(hqKey.publicKey) });
      });
    });

    it('never delivers an altered payload (bad_signature)', async () => {
      const o = sign('deliver parcel 17 to dock 4', ++seq);
      await expectRefused('altered payload', 'bad_signature', () => send(o, { payload: Buffer.from('deliver parcel 17 to dock 9') }));
    });

    it('never delivers a signed order moved to another topic (bad_signature)', async () => {
      const o = sign('cancel parcel 17', ++seq, { topic: 'fleet/gw1/orders/cancel' });
      await expectRefused('altered topic', 'bad_signature', () => send(o, { topic: 'fleet/gw1/orders/o1' }));
    });

    it('never delivers the same message published again (replayed)', async () => {
      const o = sign('cancel parcel 18', ++seq);
      const before = orders.got.length;
      await send(o);
      await orders.waitFor((g) => g.length > before, 'the original');
      await expectRefused('replay', 'replayed', () => send(o));
      await expectRefused('older sequence', 'replayed', () => send(sign('an older order', seq - 3)));
    });

    it('never delivers an expired order (expired)', async () => {
      await expectRefused('expired', 'expired', () => send(sign('deliver yesterday', ++seq, { exp: nowS() - 3600 })));
    });

    it('never delivers an order for another truck (wrong_gateway)', async () => {
      await expectRefused('wrong truck', 'wrong_gateway', () => send(sign('deliver to dock 4', ++seq, { gw: 'gw2' })));
    });

    it('never delivers a replay after a Convoy restart (the last sequence is in convoy.db)', async () => {
      const o = sign('cancel parcel 19', ++seq);
      const before = orders.got.length;
      await send(o);
      await orders.waitFor((g) => g.length > before, 'the original');
      await stopGw();
      await startGw();
      expect(gw!.bridge!.stats().orders!.accepted).to.equal(0); // a new process: nothing accepted since
      await expectRefused('replay after restart', 'replayed', () => send(o));
    });

    it('a flood of forgeries is counted in full but raises few alarms', async () => {
      const counted = gw!.bridge!.stats().orders!.rejected.unknown_key;
      const alarmCount = alarms.got.length;
      for (let i = 0; i < 100; i++) void send(sign(`flood ${i}`, ++seq, { key: stranger.privateKey }));
      await until(() => gw!.bridge!.stats().orders!.rejected.unknown_key === counted + 100, '100 refusals counted');
      await sendValidAndExpectAlone('after the flood');
      await new Promise((r) => setTimeout(r, 1200)); // the window's summary
      const live = alarms.got.slice(alarmCount).filter((a) => !a.retain);
      expect(live.length).to.be.within(1, 4);
      const folded = live.map((a) => JSON.parse(a.payload.toString()) as Record<string, unknown>)
        .reduce((n, b) => n + (b.reason === 'unknown_key' ? 1 : 0) + Number(b.window_unknown_key ?? 0), 0);
      expect(folded).to.equal(100);
    });
  });
}
