// The load generator of the `v5-qos1` scenario: MQTT.js clients, run as a child process of the
// harness (so it has its own event loop and CPU, like mqttbench).
//
//   node dist/scripts/bench/mqttjs-load.js --port P --protocol 5|4 [--pubs N] [--total M]
//        [--size B] [--window W] [--timeout S] [--drain S] [--stall S] [--prefix STR] [--label L]
//
// mqttbench speaks only MQTT 3.1.1; this drives the same shape in MQTT 5: N publishers -> 1
// subscriber, QoS 1 on publish and subscription, each publisher keeping at most W PUBLISHes
// without PUBACK in flight. With --protocol 5 every PUBLISH carries a user property and a
// message expiry interval, and the subscriber checks that both arrived; --protocol 4 is the
// same driver speaking 3.1.1 (no properties), the reference line that makes the v5 cost visible.
//
// Payload: a 16-byte header (publisher index, sequence number, send time) then filler, so the
// subscriber counts unique messages, duplicates and latency. Throughput = messages received
// / (last delivery - start signal), as mqttbench computes it.
//
// stdout: one JSON line. Exit: 0 ok, 1 usage, 2 loss, 3 timeout/stall, 4 connect failed,
// 5 protocol problems (v5 properties missing, errors from the client).
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import mqtt from 'mqtt';

type MqttClient = ReturnType<typeof mqtt.connect>;
type ClientOptions = NonNullable<Parameters<typeof mqtt.connect>[1]>;
type PublishOptions = NonNullable<Parameters<MqttClient['publish']>[2]>;

const { values } = parseArgs({
  options: {
    host: { type: 'string', default: '127.0.0.1' },
    port: { type: 'string' },
    protocol: { type: 'string', default: '5' },
    pubs: { type: 'string', default: '10' },
    total: { type: 'string', default: '20000' },
    size: { type: 'string', default: '64' },
    window: { type: 'string', default: '16' },
    timeout: { type: 'string', default: '120' },
    drain: { type: 'string', default: '5' },
    stall: { type: 'string', default: '20' },
    prefix: { type: 'string', default: 'mqttjs' },
    label: { type: 'string', default: 'mqttjs' },
  },
  strict: true,
});

const HDR = 16;
const port = Number(values.port);
const protocol = Number(values.protocol);
const pubs = Number(values.pubs);
const total = Number(values.total);
const size = Number(values.size);
const window = Number(values.window);
const timeoutS = Number(values.timeout);
const drainS = Number(values.drain);
const stallS = Number(values.stall);
const ints = [port, pubs, total, size, window];
if (!ints.every((n) => Number.isInteger(n) && n > 0) || (protocol !== 4 && protocol !== 5) || size < HDR || total < pubs) {
  process.stderr.write('usage: mqttjs-load --port P --protocol 4|5 [--pubs N] [--total M >= N] [--size B >= 16] [--window W]\n');
  process.exit(1);
}

const USER_PROPERTY = { name: 'bench', value: 'convoy-v5' };
/** Long enough never to expire during the run: the broker must still process and forward it. */
const EXPIRY_S = 300;
const tag = Math.random().toString(36).slice(2, 8);

function connect(id: string): Promise<MqttClient> {
  const opts: ClientOptions = {
    host: values.host,
    port,
    protocolVersion: protocol as 4 | 5,
    clientId: `mjs-${tag}-${id}`,
    clean: true,
    keepalive: 60,
    reconnectPeriod: 0,
    connectTimeout: 15_000,
  };
  return new Promise((resolve, reject) => {
    const c = mqtt.connect(opts);
    c.once('connect', () => resolve(c));
    c.once('error', (err) => reject(err));
    c.once('close', () => reject(new Error(`${id}: connection closed before CONNACK`)));
  });
}

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] ?? 0;
}

async function main(): Promise<number> {
  const cpu0 = process.cpuUsage();
  const tConn0 = performance.now();
  const clients: MqttClient[] = [];
  const problems: string[] = [];
  const out: Record<string, unknown> = {
    driver: 'mqttjs',
    mqttjs_protocol: protocol,
    scenario: values.label,
    qos: 1,
    publishers: pubs,
    subscribers: 1,
    payload: size,
    window,
    expected: total,
  };
  const emit = (code: number): number => {
    for (const c of clients) c.end(true);
    if (problems.length > 0) out.error = problems.slice(0, 5).join('; ');
    process.stdout.write(`${JSON.stringify(out)}\n`);
    return code;
  };

  let stopping = false;
  let sub: MqttClient;
  const publishers: MqttClient[] = [];
  try {
    sub = await connect('sub');
    clients.push(sub);
    await sub.subscribeAsync(`${values.prefix}/#`, { qos: 1 });
    for (let i = 0; i < pubs; i++) {
      const p = await connect(`pub${i}`);
      clients.push(p);
      publishers.push(p);
    }
  } catch (err) {
    problems.push(`connect: ${err instanceof Error ? err.message : String(err)}`);
    return emit(4);
  }
  out.connect_s = Number(((performance.now() - tConn0) / 1000).toFixed(3));
  for (const c of clients) {
    c.on('error', (err) => problems.push(err.message));
    c.on('close', () => {
      if (!stopping) problems.push('connection closed during the run');
    });
  }

  // ---- subscriber
  const perPub = Array.from({ length: pubs }, (_, i) => Math.floor(total / pubs) + (i < total % pubs ? 1 : 0));
  const seen = perPub.map((n) => new Uint8Array(n));
  const latencies = new Float64Array(total);
  let received = 0;
  let unique = 0;
  let duplicates = 0;
  let foreign = 0;
  let propsOk = 0;
  let propsMissing = 0;
  let lastRx = 0;
  sub.on('message', (_topic, payload, packet) => {
    const now = performance.now();
    received++;
    lastRx = now;
    if (payload.length < HDR) {
      foreign++;
      return;
    }
    const pub = payload.readUInt32LE(0);
    const seq = payload.readUInt32LE(4);
    const marks = seen[pub];
    if (!marks || seq >= marks.length) {
      foreign++;
      return;
    }
    if (protocol === 5) {
      const up = packet.properties?.userProperties?.[USER_PROPERTY.name];
      const expiry = packet.properties?.messageExpiryInterval;
      if (up === USER_PROPERTY.value && typeof expiry === 'number' && expiry > 0 && expiry <= EXPIRY_S) propsOk++;
      else propsMissing++;
    }
    if (marks[seq]) {
      duplicates++;
      return;
    }
    marks[seq] = 1;
    latencies[unique++] = now - payload.readDoubleLE(8);
  });

  // ---- publishers: each keeps `window` QoS 1 PUBLISHes without PUBACK in flight
  const filler = Buffer.alloc(size - HDR, 0x61);
  let sent = 0;
  let acked = 0;
  let pubsDone = 0;
  let pubEnd = 0;
  const publishOpts: PublishOptions =
    protocol === 5
      ? { qos: 1, properties: { userProperties: { [USER_PROPERTY.name]: USER_PROPERTY.value }, messageExpiryInterval: EXPIRY_S } }
      : { qos: 1 };
  const start = performance.now();
  publishers.forEach((client, idx) => {
    const n = perPub[idx] ?? 0;
    const topic = `${values.prefix}/${idx}`;
    let next = 0;
    let inflight = 0;
    const pump = (): void => {
      while (inflight < window && next < n) {
        const payload = Buffer.allocUnsafe(HDR);
        payload.writeUInt32LE(idx, 0);
        payload.writeUInt32LE(next++, 4);
        payload.writeDoubleLE(performance.now(), 8);
        inflight++;
        sent++;
        client.publish(topic, Buffer.concat([payload, filler], size), publishOpts, (err) => {
          inflight--;
          if (err) problems.push(`publish: ${err.message}`);
          else acked++;
          if (next < n) pump();
          else if (inflight === 0) {
            pubsDone++;
            if (pubsDone === pubs) pubEnd = performance.now();
          }
        });
      }
    };
    pump();
  });

  // ---- wait: everything delivered, or drain / stall / timeout
  const code = await new Promise<number>((resolve) => {
    let lastProgress = start;
    let lastCount = -1;
    const timer = setInterval(() => {
      const now = performance.now();
      const progress = unique + acked;
      if (progress !== lastCount) {
        lastCount = progress;
        lastProgress = now;
      }
      if (unique >= total && pubsDone === pubs) return stop(0);
      if (pubsDone === pubs && now - Math.max(lastProgress, pubEnd) > drainS * 1000) return stop(2);
      if (now - lastProgress > stallS * 1000) return stop(3);
      if (now - start > timeoutS * 1000) return stop(3);
    }, 2);
    const stop = (c: number): void => {
      clearInterval(timer);
      stopping = true;
      resolve(c);
    };
  });

  const end = lastRx > start ? lastRx : performance.now();
  const durS = (end - start) / 1000;
  const cpu = process.cpuUsage(cpu0);
  const wallS = (performance.now() - start) / 1000;
  const lat = latencies.subarray(0, unique).sort();
  Object.assign(out, {
    sent,
    acked,
    received,
    unique,
    lost: total - unique,
    duplicates,
    foreign,
    props_ok: protocol === 5 ? propsOk : null,
    props_missing: protocol === 5 ? propsMissing : null,
    duration_s: Number(durS.toFixed(4)),
    pub_duration_s: Number((((pubEnd || end) - start) / 1000).toFixed(4)),
    throughput: durS > 0 ? Number((received / durS).toFixed(1)) : 0,
    lat_p50_us: Number((percentile(lat, 0.5) * 1000).toFixed(1)),
    lat_p99_us: Number((percentile(lat, 0.99) * 1000).toFixed(1)),
    loader_cpu_s: Number(((cpu.user + cpu.system) / 1e6).toFixed(3)),
    loader_cpu_pct: wallS > 0 ? Number(((100 * (cpu.user + cpu.system)) / 1e6 / wallS).toFixed(1)) : 0,
  });
  let exit = code;
  if (exit === 0 && unique < total) exit = 2;
  if (exit === 0 && (propsMissing > 0 || foreign > 0 || problems.length > 0)) {
    if (propsMissing > 0) problems.push(`${propsMissing} messages arrived without the v5 user property / expiry`);
    if (foreign > 0) problems.push(`${foreign} foreign messages`);
    exit = 5;
  }
  return emit(exit);
}

main().then(
  (code) => {
    process.exitCode = code;
    // MQTT.js keeps timers for a moment after end(true); do not wait for them.
    setTimeout(() => process.exit(code), 50).unref();
  },
  (err: unknown) => {
    process.stderr.write(`mqttjs-load: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
