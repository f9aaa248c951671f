// What taking a truck's backlog costs HQ, per message, in instructions: the HQ Mosquitto runs under
// valgrind's callgrind while each truck broker drains the same backlog into it. uplink-drain's
// rates on a 2-core machine are bound by HQ (about one core at 11-12 µs per message), so what a
// message costs HQ to parse sets the drain rate as much as the truck's own CPU does. Instruction
// counts repeat (two runs agreed to the instruction), where CPU seconds on a shared machine swing
// by 20 % or more.
//
//   node dist/scripts/bench/hq-cost.js [--messages M] [--brokers convoy,mosquitto]
//
// Per truck broker: HQ Mosquitto and the counting subscriber's session made with the link up
// (a warm-up pass), HQ stopped, M messages published on the truck, then HQ started under
// callgrind and the subscriber waits for all M. A second HQ start under callgrind with nothing
// queued gives the fixed cost (start, session restore, stop), which is subtracted.
// Needs valgrind (Debian: apt-get install valgrind).
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
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
import { sleep, stopProcess } from './proc.js';
import { UPLINK_FILTER, UPLINK_SUB_ID, uplinkPubFlags } from './scenarios.js';

const WARMUP_MESSAGES = 2000;
/** Under callgrind HQ runs some 50 times slower: generous waits. */
const VALGRIND_READY_MS = 60_000;
const VALGRIND_STOP_MS = 60_000;

export interface HqCost {
  truck: BrokerKind;
  messages: number;
  /** HQ instructions for the drain, and for a start and stop with nothing queued. */
  drainInstructions: number;
  fixedInstructions: number;
  perMessage: number;
  /** Unique messages the subscriber counted (must be `messages`). */
  delivered: number | null;
}

/** The total instruction count callgrind wrote at exit. */
function callgrindTotal(file: string): number {
  const m = /^(?:summary|totals): (\d+)/m.exec(readFileSync(file, 'utf8'));
  if (!m) throw new Error(`no instruction total in ${file}`);
  return Number(m[1]);
}

async function measure(kind: BrokerKind, messages: number, root: string, bench: string, subBinary: string): Promise<HqCost> {
  const dir = makeTempDir(`hqcost-${kind}`);
  const cgDir = makeDataDir(dir, 'callgrind');
  let hq: ConfiguredBroker | null = null;
  let truck: ConfiguredBroker | null = null;
  try {
    const hqPort = await freeStablePort();
    let port = await freePort();
    while (port === hqPort) port = await freePort();
    // Started as root, Mosquitto drops to the user `mosquitto`, and callgrind could then not
    // write its output at exit: this HQ stays root (a throw-away test broker).
    const runAs = process.getuid?.() === 0 ? 'user root\n' : '';
    const hqConf = mosquittoHqConfig(hqPort, makeDataDir(dir, 'hq')) + runAs;
    const startHq = (wrap: readonly string[] = []): Promise<ConfiguredBroker> =>
      startConfigured('mosquitto', 'HQ mosquitto', root, dir, 'hq', hqPort, hqConf, wrap.length > 0 ? VALGRIND_READY_MS : 20_000, wrap);
    const underCallgrind = (name: string): string[] => ['valgrind', '--tool=callgrind', `--callgrind-out-file=${path.join(cgDir, name)}`];

    hq = await startHq();
    truck = await startConfigured(kind, kind, root, dir, 'truck', port, truckUplinkConfig(kind, dir, port, hqPort));
    const publish = async (label: string, n: number): Promise<void> => {
      const r = await runMqttbench(bench, ['-H', '127.0.0.1', '-p', String(port), '-T', '1', '-Q', '-l', label, ...uplinkPubFlags(n), '-t', '120'], 180_000);
      if (r.exitCode !== 0) throw new Error(`${kind}: mqttbench (${label}) exit ${r.exitCode ?? r.signal ?? '?'} ${r.stderr.slice(-500)}`);
    };
    // The link up, and the subscriber's session at HQ made.
    const warm = await startPersistentSub(subBinary, hqPort, WARMUP_MESSAGES, 120, UPLINK_SUB_ID, UPLINK_FILTER);
    await publish('hqcost-warmup', WARMUP_MESSAGES);
    const w = await finishPersistentSub(warm, 60_000);
    if (num(w.json, 'lost') !== 0) throw new Error(`${kind}: the warm-up did not reach HQ: ${JSON.stringify(w.json)}`);

    // HQ down (SIGTERM: it saves the session), the backlog on the truck, HQ back under callgrind.
    await hq.stop();
    hq = null;
    await sleep(300);
    await publish('hqcost-backlog', messages);
    hq = await startHq(underCallgrind('drain.out'));
    const sub = await startPersistentSub(subBinary, hqPort, messages, 600, UPLINK_SUB_ID, UPLINK_FILTER);
    const d = await finishPersistentSub(sub, 600_000);
    await stopProcess(hq.proc, VALGRIND_STOP_MS);
    hq = null;
    const drainInstructions = callgrindTotal(path.join(cgDir, 'drain.out'));

    // The same start, session restore and stop with nothing queued.
    hq = await startHq(underCallgrind('fixed.out'));
    const idle = await startPersistentSub(subBinary, hqPort, 1, 5, UPLINK_SUB_ID, UPLINK_FILTER);
    await stopProcess(idle, 3000);
    await stopProcess(hq.proc, VALGRIND_STOP_MS);
    hq = null;
    const fixedInstructions = callgrindTotal(path.join(cgDir, 'fixed.out'));
    return {
      truck: kind, messages, drainInstructions, fixedInstructions,
      perMessage: Math.round((drainInstructions - fixedInstructions) / messages),
      delivered: num(d.json, 'unique'),
    };
  } finally {
    if (truck) await truck.stop();
    if (hq) await stopProcess(hq.proc, VALGRIND_STOP_MS);
    removeTempDir(dir);
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      messages: { type: 'string', default: '20000' },
      brokers: { type: 'string', default: 'convoy,mosquitto' },
    },
  });
  const messages = Number(values.messages);
  if (!Number.isInteger(messages) || messages < 1000) throw new Error(`--messages must be an integer >= 1000, got ${values.messages}`);
  const kinds = brokerKinds(values.brokers);
  if (spawnSync('valgrind', ['--version']).status !== 0) throw new Error('valgrind is not installed (Debian: apt-get install valgrind)');
  const root = findRoot();
  const bench = ensureMqttbench(root).binary;
  const subBinary = ensurePersistentSub(root).binary;
  console.log(`HQ cost: HQ Mosquitto under callgrind takes a backlog of ${messages} QoS 1 messages from the truck (${UPLINK_GATEWAY}), MQTT 5`);
  console.log('truck       | HQ instructions per message | drain total   | fixed (start, restore, stop) | delivered at HQ');
  const results: HqCost[] = [];
  for (const kind of kinds) {
    const c = await measure(kind, messages, root, bench, subBinary);
    results.push(c);
    console.log(
      `${kind.padEnd(11)} | ${c.perMessage.toLocaleString('en-US').padStart(27)} | ${c.drainInstructions.toLocaleString('en-US').padStart(13)} | ${c.fixedInstructions.toLocaleString('en-US').padStart(28)} | ${String(c.delivered).padStart(15)}`,
    );
    console.log(JSON.stringify(c));
  }
  const [a, b] = results;
  if (a && b) console.log(`${a.truck}/${b.truck}: ${(a.perMessage / b.perMessage).toFixed(2)} (HQ instructions per message)`);
  for (const c of results) if (c.delivered !== c.messages) process.exitCode = 1;
}

runBenchScript('hq-cost', main);
