// Crash soak: a real Convoy process (bin/convoy, SQLite store on a fixed data dir) under QoS 1 and
// QoS 2 load from MQTT.js publishers (3.1.1 and 5) is killed with SIGKILL at a random moment, round
// after round; at the end it is started once more and the persistent subscriber sessions must
// receive every message the broker ever acknowledged (test/chaos/crash-checker.ts has the rules).
//
//   node dist/scripts/crash-soak.js --rounds 200 [--seed N] [--window 32] [--keep]
//
// test/chaos/crash.test.ts runs the same harness with fewer rounds.
//
// Where ownership passes: QoS 1 at PUBACK; QoS 2 at PUBREC (the broker acknowledges a QoS 2
// PUBLISH with PUBREC only once it is durable, and the publisher may forget the message after
// PUBREC, only keeping the packet id for PUBREL). So a QoS 2 message counts as acknowledged when
// its PUBREC arrived, even if the broker died before PUBCOMP: the stricter choice.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import mqtt from 'mqtt';
import { Proc } from '../test/helpers/processes.js';
import { checkDeliveries, type AckedMessage, type CrashReport, type QoS, type ReceivedMessage } from '../test/chaos/crash-checker.js';
import { prng } from '../test/helpers/prng.js';
import { runAsScript } from './run-as-script.js';

type MqttClient = ReturnType<typeof mqtt.connect>;
type ClientOptions = NonNullable<Parameters<typeof mqtt.connect>[1]>;
type Connack = { sessionPresent: boolean; returnCode?: number; reasonCode?: number };

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const convoyBin = join(root, 'bin', 'convoy');

/**
 * Starts bin/convoy on `dataDir` (SQLite store on, port 0, unbounded queues) with its config in
 * `dir`; resolves with the port from its "listening" log line. `track` gets the process at once,
 * so a caller's cleanup can kill it even if the start fails.
 */
export async function startConvoy(dir: string, dataDir: string, commitWindowMs: number, track: (p: Proc) => void): Promise<{ proc: Proc; port: number; startMs: number }> {
  const config = join(dir, 'convoy.toml');
  writeFileSync(config, [
    `data_dir = ${JSON.stringify(dataDir)}`,
    '[[listeners]]', 'type = "tcp"', 'host = "127.0.0.1"', 'port = 0', 'allow_anonymous = true',
    '[log]', 'level = "info"',
    // Unbounded queues: a full queue drops messages by design, which is not what is tested here.
    '[limits]', 'max_queued_messages = 0', 'max_queued_bytes = 0',
    '[store]', 'enabled = true', `commit_window_ms = ${commitWindowMs}`,
    '[sys]', 'interval_s = 0', '',
  ].join('\n'));
  const t0 = Date.now();
  const proc = new Proc(convoyBin, ['run', '--config', config]);
  track(proc);
  await proc.waitForStdout(/"msg":"listening"/, 60000);
  for (const line of proc.stdout.split('\n')) {
    if (!line.includes('"listening"')) continue;
    const rec = JSON.parse(line) as { msg?: string; listener?: string };
    const m = rec.msg === 'listening' ? /:(\d+)$/.exec(rec.listener ?? '') : null;
    if (m) return { proc, port: Number(m[1]), startMs: Date.now() - t0 };
  }
  throw new Error(`no port in the listening line: ${proc.stdout}`);
}

export interface SoakOptions {
  rounds: number;
  /** PRNG seed: the same seed gives the same kill delays and subscriber moments. */
  seed?: number;
  /** Unacknowledged publishes per publisher (MQTT.js has no window of its own). */
  window?: number;
  /** Bound on the final "receive everything" phase. */
  drainTimeoutMs?: number;
  /** Keep the temporary directory (database, config) after cleanup, for analysis. */
  keep?: boolean;
  log?: (line: string) => void;
}

export interface RoundStat {
  round: number;
  killDelayMs: number;
  commitWindowMs: number;
  startMs: number;
  published: number;
  acked: number;
  /** Acknowledgements that arrived after SIGKILL was sent (already in the socket). */
  ackedAfterKill: number;
  subscriberMidRound: 'no' | 'killed while consuming' | 'left before the kill' | 'not reached';
  subscriberReceived: number;
}

export interface SubResult {
  clientId: string;
  protocolVersion: 4 | 5;
  grantedQos: QoS;
  sessionPresentAtEnd: boolean;
  drained: boolean;
  report: CrashReport;
}

export interface SoakResult {
  seed: number;
  rounds: number;
  durationMs: number;
  published: number;
  acked: number;
  ackedQos1: number;
  ackedQos2: number;
  perRound: RoundStat[];
  subs: SubResult[];
  retained: { firstAcked: boolean; firstDelivered: string | null; latestAckedRound: number; latestDelivered: number | null };
  dataDir: string;
  /** Everything that failed; empty when the run passed. */
  problems: string[];
}

interface SubSession {
  clientId: string;
  protocolVersion: 4 | 5;
  qos: 1 | 2;
  /** The subscriber's QoS 2 state (received, not yet released) must outlive each connection, as
   *  a real client's would: one store shared by every connection of this session. */
  incomingStore: SessionStore;
  received: ReceivedMessage[];
  receivedKeys: Set<string>;
  onMessage: (() => void) | null;
}

/**
 * A client's QoS 2 state that outlives its connections (as on a real device's disk): MQTT.js
 * closes its stores when a client ends, so this one ignores close.
 */
class SessionStore extends mqtt.Store {
  override close(cb: () => void): this {
    cb();
    return this;
  }
}

function keyOf(payload: Buffer | string): string {
  const s = typeof payload === 'string' ? payload : payload.toString('utf8');
  return s.slice(0, s.indexOf('|'));
}

/** Resolves on the client's 'close' (socket gone), at once if already closed. */
function closed(c: MqttClient): Promise<void> {
  if (c.disconnected || (!c.connected && !c.reconnecting && c.stream?.destroyed)) return Promise.resolve();
  return new Promise((res) => c.once('close', () => res()));
}

function endForce(c: MqttClient): Promise<void> {
  return new Promise((res) => c.end(true, {}, () => res()));
}

class Publisher {
  seq = 0;
  outstanding = 0;
  stopped = false;
  private readonly idToKey = new Map<number, { key: string; qos: 1 | 2 }>();

  constructor(private readonly soak: CrashSoak, readonly client: MqttClient, readonly id: string, private readonly round: number, private readonly window: number) {
    client.on('packetsend', (p) => {
      if (p.cmd === 'publish' && p.qos > 0 && p.topic.startsWith('crash/')) {
        this.idToKey.set(p.messageId!, { key: keyOf(p.payload), qos: p.qos as 1 | 2 });
      }
    });
    client.on('packetreceive', (p) => {
      if (p.cmd !== 'puback' && p.cmd !== 'pubrec') return;
      if (p.reasonCode !== undefined && p.reasonCode >= 0x80) return; // refused: not owned by the broker
      const m = this.idToKey.get(p.messageId!);
      if (m && ((p.cmd === 'puback') === (m.qos === 1))) {
        this.idToKey.delete(p.messageId!);
        this.soak.recordAck({ key: m.key, qos: m.qos, round: this.round });
      }
    });
  }

  /** Flat out: keeps `window` publishes unacknowledged; each completion sends the next. */
  pump(): void {
    while (!this.stopped && this.client.connected && this.outstanding < this.window) {
      const seq = this.seq++;
      const qos: 1 | 2 = seq % 2 === 0 ? 1 : 2;
      const key = `${this.id}:${seq}`;
      this.soak.published.add(key);
      this.outstanding++;
      this.client.publish(`crash/${this.id}`, `${key}|q${qos}|${'x'.repeat(64)}`, { qos }, () => {
        this.outstanding--;
        this.pump();
      });
    }
  }
}

export class CrashSoak {
  readonly dir: string;
  readonly dataDir: string;
  readonly published = new Set<string>();
  readonly acked: AckedMessage[] = [];
  private readonly ackedKeys = new Set<string>();
  private readonly rng: () => number;
  readonly seed: number;
  private readonly procs: Proc[] = [];
  private readonly clients = new Set<MqttClient>();
  private readonly subs: SubSession[];
  private readonly problems: string[] = [];
  private readonly perRound: RoundStat[] = [];
  private incarnation = 0;
  private current: RoundStat | null = null;
  private killSent = false;
  private ackListener: (() => void) | null = null;
  private retained = { firstAcked: false, firstDelivered: null as string | null, latestAckedRound: 0, latestDelivered: null as number | null };
  private readonly log: (line: string) => void;

  constructor(private readonly opts: SoakOptions) {
    this.seed = opts.seed ?? Math.floor(Math.random() * 2 ** 31);
    this.rng = prng(this.seed);
    this.log = opts.log ?? (() => {});
    this.dir = mkdtempSync(join(tmpdir(), 'convoy-crash-'));
    this.dataDir = join(this.dir, 'data');
    mkdirSync(this.dataDir);
    this.subs = [
      { clientId: 'crash-sub-v4-q1', protocolVersion: 4, qos: 1 },
      { clientId: 'crash-sub-v5-q2', protocolVersion: 5, qos: 2 },
    ].map((s) => ({ ...s, protocolVersion: s.protocolVersion as 4 | 5, qos: s.qos as 1 | 2, incomingStore: new SessionStore(), received: [], receivedKeys: new Set<string>(), onMessage: null }));
  }

  recordAck(a: AckedMessage): void {
    if (this.ackedKeys.has(a.key)) return;
    this.ackedKeys.add(a.key);
    this.acked.push(a);
    if (this.current) {
      this.current.acked++;
      if (this.killSent) this.current.ackedAfterKill++;
    }
    this.ackListener?.();
  }

  // --- processes and clients -----------------------------------------------------------------

  private async startBroker(commitWindowMs: number): Promise<{ proc: Proc; port: number; startMs: number }> {
    this.incarnation++;
    return startConvoy(this.dir, this.dataDir, commitWindowMs, (p) => this.procs.push(p));
  }

  private connect(port: number, opts: ClientOptions): { client: MqttClient; connected: Promise<Connack> } {
    const client = mqtt.connect({ host: '127.0.0.1', port, reconnectPeriod: 0, connectTimeout: 30000, keepalive: 0, ...opts });
    this.clients.add(client);
    client.on('error', () => {}); // ECONNRESET after SIGKILL; outcomes are judged from acks and closes
    const connected = new Promise<Connack>((res, rej) => {
      client.once('connect', (ack) => res(ack as Connack));
      client.once('close', () => rej(new Error(`${String(opts.clientId)}: closed before CONNACK`)));
    });
    connected.catch(() => undefined);
    return { client, connected };
  }

  private connectSub(port: number, sub: SubSession): { client: MqttClient; connected: Promise<Connack> } {
    const opts: ClientOptions = {
      clientId: sub.clientId, protocolVersion: sub.protocolVersion, clean: false, incomingStore: sub.incomingStore, resubscribe: false,
    };
    if (sub.protocolVersion === 5) opts.properties = { sessionExpiryInterval: 0xffffffff };
    const r = this.connect(port, opts);
    const incarnation = this.incarnation;
    r.client.on('message', (topic, payload, packet) => {
      if (!topic.startsWith('crash/')) return;
      const key = keyOf(payload);
      sub.received.push({ key, qos: packet.qos, dup: packet.dup, incarnation, packetId: packet.messageId });
      sub.receivedKeys.add(key);
      sub.onMessage?.();
    });
    return r;
  }

  private publishOnce(c: MqttClient, topic: string, payload: string, opts: { qos: 1 | 2; retain?: boolean }): Promise<boolean> {
    return new Promise((res) => c.publish(topic, payload, opts, (err) => res(!err)));
  }

  // --- the run -------------------------------------------------------------------------------

  async run(): Promise<SoakResult> {
    const t0 = Date.now();
    this.log(`crash soak: seed ${this.seed}, ${this.opts.rounds} rounds, data dir ${this.dataDir}`);
    for (let r = 1; r <= this.opts.rounds; r++) await this.round(r);
    const subs = await this.finalCheck();
    const ackedQos1 = this.acked.filter((a) => a.qos === 1).length;
    const result: SoakResult = {
      seed: this.seed,
      rounds: this.opts.rounds,
      durationMs: Date.now() - t0,
      published: this.published.size,
      acked: this.acked.length,
      ackedQos1,
      ackedQos2: this.acked.length - ackedQos1,
      perRound: this.perRound,
      subs,
      retained: this.retained,
      dataDir: this.dataDir,
      problems: [...this.problems],
    };
    for (const s of subs) for (const p of s.report.problems) result.problems.push(`${s.clientId}: ${p}`);
    return result;
  }

  private async round(r: number): Promise<void> {
    const commitWindowMs = [0, 0, 1, 5][Math.floor(this.rng() * 4)]!;
    // The kill delay is the test's input, the one deliberate timer: 20-300 ms after publishing starts.
    const killDelayMs = 20 + Math.floor(this.rng() * 281);
    const consume = this.rng() < 0.5 || r % 4 === 0;
    const consumeAfterAcks = Math.floor(this.rng() * 150);
    const consumeCount = 20 + Math.floor(this.rng() * 600);
    const { proc, port, startMs } = await this.startBroker(commitWindowMs);
    const stat: RoundStat = {
      round: r, killDelayMs, commitWindowMs, startMs, published: 0, acked: 0, ackedAfterKill: 0,
      subscriberMidRound: consume ? 'not reached' : 'no', subscriberReceived: 0,
    };
    this.current = stat;
    this.killSent = false;
    const roundClients: MqttClient[] = [];

    if (r === 1) {
      // The subscriptions, made once: nothing at the end subscribes again.
      for (const sub of this.subs) {
        const { client, connected } = this.connectSub(port, sub);
        await connected;
        const granted = await client.subscribeAsync('crash/#', { qos: sub.qos });
        if (granted[0]?.qos !== sub.qos) throw new Error(`${sub.clientId}: subscription granted ${JSON.stringify(granted)}`);
        await client.endAsync();
        this.clients.delete(client);
      }
    }

    const pubs: Publisher[] = [];
    for (const v of [4, 5] as const) {
      const id = `r${r}v${v}`;
      const { client, connected } = this.connect(port, { clientId: `crash-pub-${id}`, protocolVersion: v, clean: true });
      await connected;
      roundClients.push(client);
      pubs.push(new Publisher(this, client, id, r, this.opts.window ?? 32));
    }
    const retainer = pubs[0]!.client;
    if (r === 1) {
      this.retained.firstAcked = await this.publishOnce(retainer, 'crashret/first', 'set in round 1', { qos: 1, retain: true });
      if (!this.retained.firstAcked) throw new Error('the round 1 retained message was refused');
    }
    void this.publishOnce(retainer, 'crashret/latest', String(r), { qos: 1, retain: true }).then((ok) => {
      if (ok) this.retained.latestAckedRound = Math.max(this.retained.latestAckedRound, r);
    });

    // Sometimes the subscribers come online mid-round, once the publishers have had a given number
    // of acknowledgements (an event, not a timer), consume a while and leave (or are killed).
    const consumers: MqttClient[] = [];
    if (consume) {
      const base = this.acked.length;
      this.ackListener = () => {
        if (this.acked.length - base < consumeAfterAcks || this.killSent) return;
        this.ackListener = null;
        stat.subscriberMidRound = 'killed while consuming';
        for (const sub of this.subs) {
          const { client, connected } = this.connectSub(port, sub);
          consumers.push(client);
          const before = sub.received.length;
          connected.then((ack) => {
            if (!ack.sessionPresent) this.problems.push(`round ${r}: ${sub.clientId} reconnected without its session (sessionPresent 0)`);
          }, () => undefined);
          sub.onMessage = () => {
            stat.subscriberReceived++;
            if (sub.received.length - before >= consumeCount && !this.killSent) {
              sub.onMessage = null;
              stat.subscriberMidRound = 'left before the kill';
              client.end(false); // a clean DISCONNECT: queued messages pile up again
            }
          };
        }
      };
    }

    for (const p of pubs) p.pump();
    await delay(killDelayMs);
    this.killSent = true;
    await proc.kill();
    // Acks the broker wrote before it died may still be in our sockets: read until each closes.
    await Promise.all([...roundClients, ...consumers].map((c) => closed(c)));
    this.ackListener = null;
    for (const sub of this.subs) sub.onMessage = null;
    for (const p of pubs) p.stopped = true;
    for (const c of [...roundClients, ...consumers]) {
      await endForce(c);
      this.clients.delete(c);
    }
    stat.published = pubs.reduce((n, p) => n + p.seq, 0);
    this.perRound.push(stat);
    this.current = null;
    this.log(`round ${r}: start ${startMs} ms, commit window ${commitWindowMs} ms, killed after ${killDelayMs} ms, ` +
      `published ${stat.published}, acked ${stat.acked} (${stat.ackedAfterKill} read after the kill), subscriber ${stat.subscriberMidRound}` +
      (consume ? ` (${stat.subscriberReceived} received)` : ''));
  }

  private async finalCheck(): Promise<SubResult[]> {
    const drainTimeoutMs = this.opts.drainTimeoutMs ?? 30000;
    const { port, startMs } = await this.startBroker(0);
    this.log(`final start: ${startMs} ms`);
    const results: SubResult[] = [];

    // Both sessions come back without subscribing; a probe published now must reach them through
    // the stored subscriptions, after everything queued before it (a session's queue is FIFO).
    const conns = this.subs.map((sub) => ({ sub, ...this.connectSub(port, sub) }));
    const acks = await Promise.all(conns.map((c) => c.connected));
    const { client: prober, connected } = this.connect(port, { clientId: 'crash-final-probe', protocolVersion: 5, clean: true });
    await connected;
    const probes = ['final:q1', 'final:q2'];
    for (const [i, key] of probes.entries()) {
      const qos = (i + 1) as 1 | 2;
      this.published.add(key);
      if (await this.publishOnce(prober, `crash/final/${qos}`, `${key}|q${qos}|`, { qos })) {
        this.recordAck({ key, qos, round: this.opts.rounds + 1 });
      } else {
        this.problems.push(`final probe ${key} refused`);
      }
    }

    const drained = await Promise.all(conns.map(({ sub }) => new Promise<boolean>((res) => {
      // The acknowledged keys this session still lacks, counted down as messages arrive (a scan of
      // every acknowledged key per message would make the checker, not the broker, the bottleneck).
      const missing = new Set(this.acked.filter((a) => !sub.receivedKeys.has(a.key)).map((a) => a.key));
      const timer = setTimeout(() => {
        sub.onMessage = null;
        res(false);
      }, drainTimeoutMs);
      const check = (): void => {
        const last = sub.received[sub.received.length - 1];
        if (last !== undefined) missing.delete(last.key);
        if (missing.size > 0) return;
        clearTimeout(timer);
        sub.onMessage = null;
        res(true);
      };
      sub.onMessage = check;
      if (missing.size === 0) check();
    })));

    // A fresh subscription gets the retained messages.
    const { client: fresh, connected: freshConnected } = this.connect(port, { clientId: 'crash-final-retained', protocolVersion: 4, clean: true });
    await freshConnected;
    const gotRetained = new Promise<void>((res) => {
      const timer = setTimeout(res, 10000);
      fresh.on('message', (topic, payload, packet) => {
        if (!packet.retain) return;
        if (topic === 'crashret/first') this.retained.firstDelivered = payload.toString();
        if (topic === 'crashret/latest') this.retained.latestDelivered = Number(payload.toString());
        if (this.retained.firstDelivered !== null && this.retained.latestDelivered !== null) {
          clearTimeout(timer);
          res();
        }
      });
    });
    await fresh.subscribeAsync('crashret/#', { qos: 1 });
    await gotRetained;
    if (this.retained.firstDelivered !== 'set in round 1') {
      this.problems.push(`retained crashret/first (acked in round 1) not delivered on a fresh subscription (got ${String(this.retained.firstDelivered)})`);
    }
    if (this.retained.latestAckedRound > 0 && (this.retained.latestDelivered === null || this.retained.latestDelivered < this.retained.latestAckedRound)) {
      this.problems.push(`retained crashret/latest: acked up to round ${this.retained.latestAckedRound}, delivered ${String(this.retained.latestDelivered)}`);
    }

    for (const [i, { sub }] of conns.entries()) {
      const sessionPresent = acks[i]!.sessionPresent;
      if (!sessionPresent) this.problems.push(`${sub.clientId}: session not present at the final start (sessionPresent 0)`);
      const report = checkDeliveries(this.acked, sub.received, { grantedQos: sub.qos, published: this.published });
      results.push({ clientId: sub.clientId, protocolVersion: sub.protocolVersion, grantedQos: sub.qos, sessionPresentAtEnd: sessionPresent, drained: drained[i]!, report });
    }
    return results;
  }

  /** Kills every child and closes every client; removes the temporary directory unless kept. */
  async cleanup(): Promise<void> {
    await Promise.all(this.procs.map((p) => p.kill()));
    await Promise.all([...this.clients].map((c) => endForce(c)));
    this.clients.clear();
    // With --keep, each broker's log goes next to the data: what a failed run needs explained.
    if (this.opts.keep) this.procs.forEach((p, i) => writeFileSync(join(this.dir, `convoy-${i + 1}.log`), p.stdout + p.stderr));
    else rmSync(this.dir, { recursive: true, force: true });
  }
}

export function summarize(r: SoakResult): string {
  const lines = [
    `seed ${r.seed}: ${r.rounds} rounds in ${(r.durationMs / 1000).toFixed(1)} s; published ${r.published}, acknowledged ${r.acked} (QoS 1 ${r.ackedQos1}, QoS 2 ${r.ackedQos2})`,
  ];
  for (const s of r.subs) {
    const rep = s.report;
    lines.push(`${s.clientId} (v${s.protocolVersion}, granted QoS ${s.grantedQos}): received ${rep.receivedCopies} copies of ${rep.receivedDistinct} messages; ` +
      `lost ${rep.lost.length}; QoS 1 duplicates ${rep.qos1Duplicates.length} messages / ${rep.qos1ExtraCopies} extra copies ` +
      `(${rep.qos1RedeliveredAfterRestartWithoutDup} resent after a restart without DUP); QoS 2 duplicates ${rep.qos2Duplicates.length}; ` +
      `unacknowledged but delivered ${rep.unackedDelivered}; drained ${s.drained}`);
    for (const d of rep.qos2Duplicates.slice(0, 5)) lines.push(`  QoS 2 duplicate ${d.key}: ${JSON.stringify(d.arrivals)}`);
  }
  lines.push(`retained: first ${JSON.stringify(r.retained.firstDelivered)}, latest acked round ${r.retained.latestAckedRound}, delivered ${String(r.retained.latestDelivered)}`);
  lines.push(r.problems.length === 0 ? 'no problems' : `PROBLEMS:\n  ${r.problems.join('\n  ')}`);
  return lines.join('\n');
}

async function main(argv: string[]): Promise<number> {
  const arg = (name: string): string | undefined => {
    const i = argv.indexOf(`--${name}`);
    return i >= 0 ? argv[i + 1] : undefined;
  };
  const soak = new CrashSoak({
    rounds: Number(arg('rounds') ?? 200),
    seed: arg('seed') !== undefined ? Number(arg('seed')) : undefined,
    window: arg('window') !== undefined ? Number(arg('window')) : undefined,
    keep: argv.includes('--keep'),
    log: (l) => console.log(l),
  });
  const stop = (): void => void soak.cleanup().finally(() => process.exit(130));
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  // An exception thrown inside a client callback must not leave a Convoy child running.
  process.once('uncaughtException', (err) => {
    console.error(err);
    stop();
  });
  try {
    const result = await soak.run();
    console.log(summarize(result));
    if (soak.dataDir && argv.includes('--keep')) console.log(`kept ${soak.dir}`);
    return result.problems.length === 0 ? 0 : 1;
  } finally {
    await soak.cleanup();
  }
}

runAsScript(import.meta.url, main);
