// A real crash in the QoS 2 downlink flow: a Convoy child process (bin/convoy, SQLite store) is
// SIGKILLed (1) right after it sent PUBREC for an order, and (2) right as HQ sends PUBREL for the
// next one (the kill races the local delivery and its commit). After each restart the scripted HQ
// resumes the session and sends PUBREL again; the persistent LAN session, offline the whole time,
// must then hold every order exactly once.
import { expect } from 'chai';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt, { type MqttClient } from 'mqtt';
import { ConvoyProcess } from '../helpers/convoy-process.js';
import { ScriptedQos2Hq } from '../helpers/scripted-hq.js';

function configToml(hqPort: number): string {
  return `
data_dir = "\${CONVOY_DATA:-}"

[log]
level = "info"

[[listeners]]
type = "tcp"
host = "127.0.0.1"
port = "\${CONVOY_LAN_PORT:-0}"
allow_anonymous = true

[store]
enabled = true

[uplink]
enabled = true
gateway_id = "gw1"
endpoints = ["127.0.0.1:${hqPort}"]
protocol_version = 5
backoff_initial_ms = 20
backoff_max_ms = 100

[[uplink.downlink]]
remote = "fleet/{gateway}/orders/#"
local = "truck/orders/#"
qos = 2
`;
}

describe('crash: SIGKILL inside the QoS 2 downlink flow', function () {
  this.timeout(60_000);
  let dir = '';
  let hq: ScriptedQos2Hq | undefined;
  const clients: MqttClient[] = [];

  afterEach(async () => {
    await Promise.all(clients.splice(0).map((c) => c.endAsync(true)));
    await ConvoyProcess.killAll();
    await hq?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('an order acknowledged with PUBREC survives SIGKILL and reaches the LAN exactly once', async () => {
    dir = mkdtempSync(join(tmpdir(), 'convoy-qos2-crash-'));
    hq = new ScriptedQos2Hq(5);
    const hqPort = await hq.listen();
    const config = join(dir, 'convoy.toml');
    writeFileSync(config, configToml(hqPort));
    const proc = await ConvoyProcess.start({ config });
    const c0 = await hq.connection(0);

    // The driver's tablet: a persistent session that is offline while the orders arrive.
    const tabletOpts = {
      protocolVersion: 5 as const, clientId: 'tablet', clean: false, reconnectPeriod: 0, properties: { sessionExpiryInterval: 3600 },
    };
    const tablet = await mqtt.connectAsync(`mqtt://127.0.0.1:${proc.port}`, tabletOpts);
    await tablet.subscribeAsync('truck/orders/#', { qos: 2 });
    await tablet.endAsync();

    // (1) Killed between PUBREC and PUBREL.
    c0.publishQos2(21, 'fleet/gw1/orders/a', 'order A');
    await c0.waitFor('pubrec', (p) => p.messageId === 21);
    await proc.kill();
    await proc.restart();
    const c1 = await hq.connection(1);
    c1.send({ cmd: 'pubrel', messageId: 21 });
    await c1.waitFor('pubcomp', (p) => p.messageId === 21);

    // (2) Killed as PUBREL goes out: delivered and committed, or neither; HQ sends PUBREL again.
    c1.publishQos2(22, 'fleet/gw1/orders/b', 'order B');
    await c1.waitFor('pubrec', (p) => p.messageId === 22);
    c1.send({ cmd: 'pubrel', messageId: 22 });
    await proc.kill();
    await proc.restart();
    const c2 = await hq.connection(2);
    c2.send({ cmd: 'pubrel', messageId: 22 });
    await c2.waitFor('pubcomp', (p) => p.messageId === 22);
    c2.send({ cmd: 'pubrel', messageId: 21 });
    await c2.waitFor('pubcomp', (p) => p.messageId === 21);
    await c2.order(23, 'fleet/gw1/orders/z', 'sentinel');

    // The tablet returns: its queue holds each order once, the sentinel last.
    const got: string[] = [];
    const back = mqtt.connect(`mqtt://127.0.0.1:${proc.port}`, tabletOpts);
    clients.push(back);
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`tablet: no sentinel within 10 s; got ${JSON.stringify(got)}`)), 10_000);
      back.on('message', (_t, payload) => {
        got.push(payload.toString());
        if (payload.toString() === 'sentinel') {
          clearTimeout(timer);
          resolve();
        }
      });
    });
    expect(got).to.deep.equal(['order A', 'order B', 'sentinel']);
  });
});
