// How many uplink PUBLISHes each truck broker keeps unacknowledged, against the receive maximum
// HQ advertised. uplink-drain compares drain rates; this says whether the two truck brokers play
// by the same rule while they do it (MQTT 5 [MQTT-3.3.4-9]: a client must not have more QoS 1/2
// PUBLISHes unacknowledged than the server's receive maximum).
//
//   node dist/scripts/bench/inflight-probe.js [--window N] [--messages M] [--brokers convoy,mosquitto]
//
// Per truck broker: HQ Mosquitto (max_inflight_messages N, which it advertises as its receive
// maximum), a counting subscriber at HQ, and between truck and HQ an MQTT-aware TCP proxy that
// passes every byte on and counts QoS 1/2 PUBLISHes towards HQ against PUBACK/PUBREC from it.
// mqttbench publishes M messages on the truck (the uplink-drain publishers). The proxy costs
// time, so the rates here are not the benchmark's; only the counts are the point. It also counts
// the bytes each truck sends towards HQ per message: what the cellular link carries (Convoy's
// gw/seq properties add to it, its topic aliases take from it).
import net from 'node:net';
import mqttPacket from 'mqtt-packet';
import { parseArgs } from 'node:util';
import {
  UPLINK_GATEWAY,
  brokerKinds,
  findRoot,
  freePort,
  freeStablePort,
  makeDataDir,
  makeTempDir,
  mosquittoHqConfig,
  removeTempDir,
  runBenchScript,
  startConfigured,
  truckUplinkConfig,
  type BrokerKind,
  type ConfiguredBroker,
} from './brokers.js';
import { ensureMqttbench, ensurePersistentSub, finishPersistentSub, num, runMqttbench, startPersistentSub } from './mqttbench.js';
import { waitFor } from './proc.js';
import { UPLINK_FILTER, UPLINK_SUB_ID, uplinkPubFlags } from './scenarios.js';

/** What the proxy saw on the truck's connections to HQ. */
export interface InflightCount {
  receiveMaximum: number | null;
  publishes: number;
  acks: number;
  maxUnacked: number;
  /** PUBLISHes sent while receiveMaximum were already unacknowledged. */
  overLimit: number;
  /** Bytes the truck sent towards HQ (every packet: the cellular link's cost). */
  bytesToHq: number;
}

/** An MQTT-aware TCP proxy to 127.0.0.1:upstreamPort that counts as InflightCount says. */
async function startCountingProxy(upstreamPort: number): Promise<{ port: number; count: InflightCount; close(): void }> {
  const count: InflightCount = { receiveMaximum: null, publishes: 0, acks: 0, maxUnacked: 0, overLimit: 0, bytesToHq: 0 };
  let unacked = 0;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((truck) => {
    const hq = net.connect(upstreamPort, '127.0.0.1');
    sockets.add(truck).add(hq);
    // A new connection starts a new session window (a resumed session's in-flight count again).
    unacked = 0;
    // Both brokers bridge with MQTT 5; mqtt-packet learns it from the CONNECT on the truck's side.
    const fromTruck = mqttPacket.parser();
    fromTruck.on('packet', (p) => {
      if (p.cmd === 'publish' && p.qos > 0) {
        if (count.receiveMaximum !== null && unacked >= count.receiveMaximum) count.overLimit++;
        count.publishes++;
        unacked++;
        if (unacked > count.maxUnacked) count.maxUnacked = unacked;
      }
    });
    const fromHq = mqttPacket.parser({ protocolVersion: 5 });
    fromHq.on('packet', (p) => {
      if (p.cmd === 'connack') count.receiveMaximum = p.properties?.receiveMaximum ?? 65535;
      else if (p.cmd === 'puback' || p.cmd === 'pubrec') {
        count.acks++;
        unacked = Math.max(0, unacked - 1);
      }
    });
    truck.on('data', (c: Buffer) => {
      count.bytesToHq += c.length;
      fromTruck.parse(c);
    });
    hq.on('data', (c: Buffer) => fromHq.parse(c));
    truck.pipe(hq);
    hq.pipe(truck);
    const close = (): void => {
      truck.destroy();
      hq.destroy();
      sockets.delete(truck);
      sockets.delete(hq);
    };
    truck.on('error', close).on('close', close);
    hq.on('error', close).on('close', close);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  return {
    port,
    count,
    close: () => {
      for (const s of sockets) s.destroy();
      server.close();
    },
  };
}

async function probe(kind: BrokerKind, window: number, messages: number, root: string, bench: string, subBinary: string): Promise<InflightCount & { delivered: number | null }> {
  const dir = makeTempDir(`probe-${kind}`);
  const brokers: ConfiguredBroker[] = [];
  let proxy: Awaited<ReturnType<typeof startCountingProxy>> | null = null;
  try {
    const hqPort = await freeStablePort();
    const hq = await startConfigured('mosquitto', 'HQ mosquitto', root, dir, 'hq', hqPort, mosquittoHqConfig(hqPort, makeDataDir(dir, 'hq'), window));
    brokers.push(hq);
    proxy = await startCountingProxy(hqPort);
    const sub = await startPersistentSub(subBinary, hqPort, messages, 120, UPLINK_SUB_ID, UPLINK_FILTER);
    const port = await freePort();
    const conf = truckUplinkConfig(kind, dir, port, proxy.port, window);
    brokers.push(await startConfigured(kind, kind, root, dir, 'truck', port, conf));
    const p = proxy;
    if (!(await waitFor(() => p.count.receiveMaximum !== null, 15_000))) throw new Error(`${kind}: no CONNACK from HQ within 15 s`);
    const r = await runMqttbench(bench, ['-H', '127.0.0.1', '-p', String(port), '-T', '1', '-Q', ...uplinkPubFlags(messages), '-t', '60'], 120_000);
    if (r.exitCode !== 0) throw new Error(`${kind}: mqttbench exit ${r.exitCode ?? r.signal ?? '?'} ${r.stderr.slice(-500)}`);
    const s = await finishPersistentSub(sub, 120_000);
    return { ...proxy.count, delivered: num(s.json, 'unique') };
  } finally {
    proxy?.close();
    for (const b of brokers.reverse()) await b.stop();
    removeTempDir(dir);
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      window: { type: 'string', default: '64' },
      messages: { type: 'string', default: '50000' },
      brokers: { type: 'string', default: 'convoy,mosquitto' },
    },
  });
  const window = Number(values.window);
  const messages = Number(values.messages);
  if (!Number.isInteger(window) || window < 1 || window > 65534) throw new Error(`--window must be 1-65534, got ${values.window}`);
  if (!Number.isInteger(messages) || messages < 100) throw new Error(`--messages must be an integer >= 100, got ${values.messages}`);
  const kinds = brokerKinds(values.brokers);
  const root = findRoot();
  const bench = ensureMqttbench(root).binary;
  const subBinary = ensurePersistentSub(root).binary;
  console.log(`in-flight probe: HQ Mosquitto with max_inflight_messages ${window}; ${messages} QoS 1 messages published on the truck (${UPLINK_GATEWAY})`);
  console.log('truck       | HQ receive maximum | QoS>0 PUBLISH to HQ | max unacknowledged | sent over the limit | delivered at HQ | bytes to HQ per message');
  for (const kind of kinds) {
    const c = await probe(kind, window, messages, root, bench, subBinary);
    console.log(
      `${kind.padEnd(11)} | ${String(c.receiveMaximum).padStart(18)} | ${String(c.publishes).padStart(19)} | ${String(c.maxUnacked).padStart(18)} | ${String(c.overLimit).padStart(19)} | ${String(c.delivered).padStart(15)} | ${(c.bytesToHq / Math.max(1, c.publishes)).toFixed(1).padStart(23)}`,
    );
    console.log(JSON.stringify({ truck: kind, window, messages, ...c }));
  }
}

runBenchScript('inflight-probe', main);
