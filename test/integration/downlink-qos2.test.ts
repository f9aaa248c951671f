// QoS 2 downlink exactly once across a restart: an order from HQ is committed to convoy.db before
// PUBREC goes to HQ, survives a gateway stopped between PUBREC and PUBREL (the crash window: no
// local delivery happens before PUBREL), and is delivered once when HQ sends PUBREL to the next
// process; its row goes in the same commit as the delivery. A scripted HQ (scripted-hq.ts) drives
// the flow packet by packet; rows are observed in the database file with a read-only connection.
import { expect } from 'chai';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import mqtt, { type MqttClient } from 'mqtt';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { ScriptedQos2Hq } from '../helpers/scripted-hq.js';

interface HeldRow {
  client_id: string;
  packet_id: number;
  topic: string;
  payload: Buffer;
  qos: number;
  properties: string | null;
}

function heldRows(dataDir: string): HeldRow[] {
  const db = new Database(join(dataDir, 'convoy.db'), { readonly: true, fileMustExist: true });
  try {
    return db.prepare('SELECT client_id, packet_id, topic, payload, qos, properties FROM uplink_incoming_qos2 ORDER BY packet_id').all() as HeldRow[];
  } finally {
    db.close();
  }
}

/** A LAN subscriber that records what it receives. */
class LanInbox {
  readonly got: Array<{ topic: string; payload: string; userProperties?: unknown }> = [];
  private waiters: Array<() => void> = [];

  private constructor(readonly client: MqttClient) {
    client.on('message', (topic, payload, packet) => {
      this.got.push({ topic, payload: payload.toString(), userProperties: packet.properties?.userProperties });
      const w = this.waiters;
      this.waiters = [];
      for (const f of w) f();
    });
  }

  static async open(port: number): Promise<LanInbox> {
    const client = await mqtt.connectAsync(`mqtt://127.0.0.1:${port}`, { protocolVersion: 5, clientId: `lan-${Math.random().toString(16).slice(2)}`, reconnectPeriod: 0 });
    const inbox = new LanInbox(client);
    await client.subscribeAsync('truck/orders/#', { qos: 2 });
    return inbox;
  }

  /** Resolves once a message with this payload arrived. */
  waitFor(payload: string, timeoutMs = 5000): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`LAN: no "${payload}" within ${timeoutMs} ms; got ${JSON.stringify(this.got)}`)), timeoutMs);
      const check = (): void => {
        if (this.got.some((m) => m.payload === payload)) {
          clearTimeout(timer);
          resolve();
        } else this.waiters.push(check);
      };
      check();
    });
  }

  close(): Promise<void> {
    return this.client.endAsync(true);
  }
}

describe('QoS 2 downlink: exactly once across a gateway restart (durable store)', function () {
  this.timeout(30_000);
  let hq: ScriptedQos2Hq;
  let dataDir: string;
  const gateways: TestGateway[] = [];
  const inboxes: LanInbox[] = [];

  const config = (port: number, store = true) => ({
    store: { enabled: store },
    uplink: {
      enabled: true, gateway_id: 'gw1', endpoints: [`127.0.0.1:${port}`], protocol_version: 5 as const, keepalive_s: 30,
      connect_timeout_ms: 2000, backoff_initial_ms: 20, backoff_max_ms: 100,
      downlink: [{ remote: 'fleet/{gateway}/orders/#', local: 'truck/orders/#', qos: 2 as const, verify: false }],
    },
  });

  async function start(port: number, store = true): Promise<TestGateway> {
    const gw = await startTestGateway(config(port, store), { dataDir });
    gateways.push(gw);
    return gw;
  }

  async function lan(gw: TestGateway): Promise<LanInbox> {
    const inbox = await LanInbox.open(gw.port);
    inboxes.push(inbox);
    return inbox;
  }

  beforeEach(() => {
    hq = new ScriptedQos2Hq(5);
    dataDir = mkdtempSync(join(tmpdir(), 'convoy-qos2-'));
  });
  afterEach(async () => {
    await Promise.all(inboxes.splice(0).map((i) => i.close()));
    for (const gw of gateways.splice(0)) await gw.stop();
    await hq.close();
    rmSync(dataDir, { recursive: true, force: true });
  });

  it('commits the order before PUBREC, keeps it over a restart, delivers it once on PUBREL, then answers a repeated PUBREL with nothing more', async () => {
    const port = await hq.listen();
    const gw1 = await start(port);
    const c1 = await hq.connection(0);
    const lan1 = await lan(gw1);

    c1.publishQos2(7, 'fleet/gw1/orders/17', 'deliver to dock 4', { userProperties: { order: '17' }, correlationData: Buffer.from([1, 2, 3]) });
    await c1.waitFor('pubrec', (p) => p.messageId === 7);
    // PUBREC went out: the order must already be committed.
    const atPubrec = heldRows(dataDir);
    expect(atPubrec.map((r) => [r.client_id, r.packet_id, r.topic, r.payload.toString(), r.qos])).to.deep.equal([
      ['convoy-gw1', 7, 'fleet/gw1/orders/17', 'deliver to dock 4', 2],
    ]);
    expect(atPubrec[0]!.properties).to.contain('"order":"17"');

    // The crash window: the gateway goes away between PUBREC and PUBREL. MQTT.js delivers a QoS 2
    // message only on PUBREL, so nothing reached the LAN (the stop is graceful, but what it
    // commits holds nothing for this order).
    await gateways.pop()!.stop();
    expect(lan1.got, 'delivered before PUBREL').to.deep.equal([]);
    expect(heldRows(dataDir).map((r) => r.packet_id), 'held after the stop').to.deep.equal([7]);

    hq.sessionPresent = true;
    const gw2 = await start(port);
    const c2 = await hq.connection(1);
    const lan2 = await lan(gw2);
    c2.send({ cmd: 'pubrel', messageId: 7 });
    await c2.waitFor('pubcomp', (p) => p.messageId === 7);
    // PUBCOMP waits for the commit of the delivery, which deleted the row.
    expect(heldRows(dataDir), 'held after PUBCOMP').to.deep.equal([]);
    await lan2.waitFor('deliver to dock 4');

    // HQ repeats PUBREL (its PUBCOMP was lost, say): answered, nothing delivered again.
    c2.send({ cmd: 'pubrel', messageId: 7 });
    await c2.waitFor('pubcomp', (p) => p.messageId === 7);
    // An order after it proves the LAN has seen everything the gateway would send.
    await c2.order(8, 'fleet/gw1/orders/18', 'sentinel');
    await lan2.waitFor('sentinel');
    expect(lan2.got.map((m) => [m.topic, m.payload])).to.deep.equal([
      ['truck/orders/17', 'deliver to dock 4'],
      ['truck/orders/18', 'sentinel'],
    ]);
    expect(lan2.got[0]!.userProperties).to.deep.equal({ order: '17' });
    expect(heldRows(dataDir)).to.deep.equal([]);
  });

  it('an order matching no downlink route is dropped for good: its held copy is gone before PUBCOMP', async () => {
    const port = await hq.listen();
    const gw = await start(port);
    const c1 = await hq.connection(0);
    const lan1 = await lan(gw);
    c1.publishQos2(11, 'fleet/gw1/unrouted/1', 'nowhere');
    await c1.waitFor('pubrec', (p) => p.messageId === 11);
    expect(heldRows(dataDir).map((r) => r.packet_id)).to.deep.equal([11]);
    c1.send({ cmd: 'pubrel', messageId: 11 });
    await c1.waitFor('pubcomp', (p) => p.messageId === 11);
    expect(heldRows(dataDir), 'held after PUBCOMP').to.deep.equal([]);
    // A routed order after it proves the LAN saw everything it would.
    await c1.order(12, 'fleet/gw1/orders/19', 'after');
    await lan1.waitFor('after');
    expect(lan1.got.map((m) => m.payload)).to.deep.equal(['after']);
  });

  it('drops the held orders when HQ reports no session (session present = 0)', async () => {
    const port = await hq.listen();
    await start(port);
    const c1 = await hq.connection(0);
    c1.publishQos2(9, 'fleet/gw1/orders/old', 'stale');
    await c1.waitFor('pubrec', (p) => p.messageId === 9);
    expect(heldRows(dataDir).map((r) => r.packet_id)).to.deep.equal([9]);
    await gateways.pop()!.stop();

    hq.sessionPresent = false;
    const gw2 = await start(port);
    const c2 = await hq.connection(1);
    const lan2 = await lan(gw2);
    // A PUBREL of the lost session finds nothing: PUBCOMP, no delivery.
    c2.send({ cmd: 'pubrel', messageId: 9 });
    await c2.waitFor('pubcomp', (p) => p.messageId === 9);
    // The next order's PUBREC follows a commit that came after the clear.
    c2.publishQos2(10, 'fleet/gw1/orders/new', 'fresh');
    await c2.waitFor('pubrec', (p) => p.messageId === 10);
    expect(heldRows(dataDir).map((r) => r.packet_id), 'held after a session-less CONNACK').to.deep.equal([10]);
    c2.send({ cmd: 'pubrel', messageId: 10 });
    await c2.waitFor('pubcomp', (p) => p.messageId === 10);
    await lan2.waitFor('fresh');
    expect(lan2.got.map((m) => m.payload)).to.deep.equal(['fresh']);
    expect(heldRows(dataDir)).to.deep.equal([]);
  });

  it('without a store: a QoS 2 order survives a reconnect within the process (PUBREL on the next connection)', async () => {
    const port = await hq.listen();
    const gw = await start(port, false);
    const c1 = await hq.connection(0);
    const inbox = await lan(gw);
    c1.publishQos2(11, 'fleet/gw1/orders/r', 'over a reconnect');
    await c1.waitFor('pubrec', (p) => p.messageId === 11);
    c1.destroy();
    const c2 = await hq.connection(1);
    c2.send({ cmd: 'pubrel', messageId: 11 });
    await c2.waitFor('pubcomp', (p) => p.messageId === 11);
    await c2.order(12, 'fleet/gw1/orders/s', 'sentinel');
    await inbox.waitFor('sentinel');
    expect(inbox.got.map((m) => m.payload)).to.deep.equal(['over a reconnect', 'sentinel']);
  });
});
