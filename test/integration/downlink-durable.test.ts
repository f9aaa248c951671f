// HQ's PUBACK for an order is sent only after the order is committed locally (queued for an
// offline persistent LAN session), so a power cut right after cannot lose an order HQ thinks
// delivered. Real Mosquitto as HQ, real SQLite store.
import { expect } from 'chai';
import mqtt, { type MqttClient } from 'mqtt';
import { startMosquitto, type Mosquitto } from '../helpers/mosquitto.js';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';

describe('downlink acknowledged to HQ only once durable', function () {
  this.timeout(30_000);
  let hq: Mosquitto;
  let gw: TestGateway | undefined;
  const clients: MqttClient[] = [];

  before(async () => {
    hq = await startMosquitto();
  });
  after(async () => {
    await Promise.all(clients.splice(0).map((c) => c.endAsync(true)));
    await gw?.stop();
    await hq.stop();
  });

  it('commits the order before HQ gets PUBACK, and delivers it to the session when it returns', async () => {
    gw = await startTestGateway({
      store: { enabled: true },
      uplink: {
        enabled: true, gateway_id: 'gw9', endpoints: [hq.endpoint], protocol_version: 5, backoff_initial_ms: 50, backoff_max_ms: 200,
        downlink: [{ remote: 'fleet/{gateway}/orders/#', local: 'truck/orders/#', qos: 1, verify: false }],
      },
    });
    // An offline persistent LAN session that wants orders.
    const lan = await mqtt.connectAsync(`mqtt://127.0.0.1:${gw.port}`, { protocolVersion: 5, clientId: 'tablet', clean: false, properties: { sessionExpiryInterval: 3600 } });
    await lan.subscribeAsync('truck/orders/#', { qos: 1 });
    await lan.endAsync();
    // Wait for the uplink to be up: the retained link state says so.
    const watch = await mqtt.connectAsync(`mqtt://127.0.0.1:${gw.port}`, { protocolVersion: 5, clientId: 'watch' });
    clients.push(watch);
    await new Promise<void>((resolve) => {
      watch.on('message', (_t, p) => {
        if ((JSON.parse(p.toString()) as { state: string }).state === 'up') resolve();
      });
      void watch.subscribeAsync('convoy/uplink/state');
    });

    const store = gw.broker.journal!.store;
    const commit = store.commit.bind(store);
    let commits = 0;
    store.commit = async () => {
      await commit();
      commits++;
    };
    // Record how many commits had completed when Convoy's link sends its PUBACK to HQ.
    type Sender = { _sendPacket: (packet: { cmd: string }, ...rest: unknown[]) => void };
    const hqClient = (gw.bridge!.link as unknown as { client: Sender }).client;
    const send = hqClient._sendPacket.bind(hqClient);
    const pubackAt = new Promise<number>((resolve) => {
      hqClient._sendPacket = (packet, ...rest) => {
        if (packet.cmd === 'puback') resolve(commits);
        send(packet, ...rest);
      };
    });
    const before = commits;
    const hqPub = await mqtt.connectAsync(`mqtt://127.0.0.1:${hq.port}`, { protocolVersion: 5, clientId: 'dispatcher' });
    clients.push(hqPub);
    await hqPub.publishAsync('fleet/gw9/orders/17', 'deliver to dock 4', { qos: 1 });
    expect(await pubackAt, 'commits completed when the PUBACK went to HQ').to.be.greaterThan(before);

    // The queued order may arrive in the same read as CONNACK: listen before connecting.
    const back = mqtt.connect(`mqtt://127.0.0.1:${gw.port}`, { protocolVersion: 5, clientId: 'tablet', clean: false, properties: { sessionExpiryInterval: 3600 } });
    clients.push(back);
    const [topic, payload] = await new Promise<[string, Buffer]>((resolve) => back.on('message', (t, p) => resolve([t, p])));
    expect([topic, payload.toString()]).to.deep.equal(['truck/orders/17', 'deliver to dock 4']);
  });
});
