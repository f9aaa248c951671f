// Uplink soak (issue 6): Convoy runs from examples/truck.toml with a real Mosquitto as HQ behind the
// fault proxy, and is killed with SIGKILL at random moments, round after round:
//   drain    while it drains a backlog to HQ, after a random number of deliveries at HQ;
//   accept   while HQ is unreachable and a LAN publisher builds a backlog, after a random number
//            of PUBACKs (the publishes cut short may or may not have been stored);
//   live     while it drains and a LAN publisher sends events and alarms at the same time;
//   startup  a random moment (0-300 ms) after it was started again: opening the store, loading
//            the outbox, linking up.
// At the end HQ must have every message Convoy ever acknowledged, duplicates only after link-ups
// and within 4 × inflight_window per link-up (forwarder.ts), order kept within each class (the
// newest telemetry per topic may go first after a link-up), and the gateway's seq contiguous
// (test/helpers/uplink-checker.ts has the rules). A publish cut short by a kill counts as
// accepted if it reaches HQ: it was stored, only its PUBACK was lost.
//
//   node dist/scripts/uplink-soak.js --rounds 50 [--seed N]
//
// test/integration/uplink-scenarios.test.ts kills Convoy 5 times during a drain in CI; this is
// the longer run.
import { setTimeout as delay } from 'node:timers/promises';
import { runAsScript } from './run-as-script.js';
import { prng } from '../test/helpers/prng.js';
import type { AcceptedMessage } from '../test/helpers/uplink-checker.js';
import {
  convoyEnv,
  endMqtt,
  LINK_UP,
  mixed,
  orderWithNewestFirst,
  Scene,
  summary,
  Waiters,
  type LanPublisher,
  type Outgoing,
} from '../test/helpers/uplink-scene.js';

export type RoundKind = 'drain' | 'accept' | 'live' | 'startup';
const KINDS: readonly RoundKind[] = ['drain', 'accept', 'live', 'startup'];

/** Messages per backlog chunk (built while HQ is unreachable). */
const CHUNK = 1500;
/** Duplicates a crash may cause per link-up: 4 × the truck's inflight_window of 64. */
const DUPLICATES_PER_LINK_UP = 4 * 64;

export interface UplinkSoakOptions {
  rounds: number;
  seed?: number;
  /** The kinds of the rounds in order (repeated); default: drawn at random. */
  schedule?: readonly RoundKind[];
  log: (line: string) => void;
}

export interface UplinkSoakResult {
  seed: number;
  rounds: Record<RoundKind, number>;
  accepted: number;
  /** Publishes cut short by a kill that reached HQ anyway (counted as accepted). */
  cutShortDelivered: number;
  cutShortTotal: number;
  linkUps: number;
  report: Record<string, unknown>;
  problems: string[];
}

export class UplinkSoak {
  private readonly scene = new Scene();
  private readonly rnd: () => number;
  readonly seed: number;
  private next = 0;

  constructor(private readonly opts: UplinkSoakOptions) {
    this.seed = opts.seed ?? Math.floor(Math.random() * 2 ** 31);
    this.rnd = prng(this.seed);
  }

  private int(lo: number, hi: number): number {
    return lo + Math.floor(this.rnd() * (hi - lo + 1));
  }

  private chunk(n: number, liveOnly = false): Outgoing[] {
    const msgs = mixed('u', this.next, n, 100);
    this.next += n;
    // Live traffic during a drain: no telemetry, which would be newer than the backlog's newest per topic.
    return liveOnly ? msgs.filter((m) => m.cls !== 'telemetry') : msgs;
  }

  async run(): Promise<UplinkSoakResult> {
    const { scene, opts } = this;
    const gw = 'gw-soak';
    opts.log(`uplink soak: ${opts.rounds} rounds, seed ${this.seed} (--seed ${this.seed} reproduces the kill moments)`);
    const hq = await scene.hq();
    const proxy = await scene.proxy(hq);
    const hqSub = await scene.hqSubscriber(hq, gw);
    const convoy = await scene.convoy(convoyEnv(gw, proxy.endpoint));
    const publishers: LanPublisher[] = [];
    const topicOf = new Map<string, string>();
    const newPublisher = async (): Promise<LanPublisher> => {
      const p = await scene.publisher(convoy);
      publishers.push(p);
      return p;
    };
    /** Publishes `msgs`, killing Convoy once `killAfter` of them were acknowledged (never, if undefined). */
    const publish = async (msgs: Outgoing[], killAfter?: number): Promise<void> => {
      for (const m of msgs) topicOf.set(m.key, m.topic);
      const pub = await newPublisher();
      const done = pub.publish(msgs, 32);
      if (killAfter === undefined) {
        await done;
      } else {
        const acks = new Waiters();
        pub.client.on('packetreceive', () => acks.wake());
        const start = pub.accepted.length;
        // Either enough PUBACKs, or the whole chunk went through first.
        let finished = false;
        void done.then(() => {
          finished = true;
          acks.wake();
        }, () => {
          finished = true;
          acks.wake();
        });
        await acks.until(() => finished || pub.accepted.length - start >= killAfter, `${killAfter} PUBACKs`, 30_000);
        await convoy.kill();
      }
      await endMqtt(pub.client);
    };

    // A first backlog, built with HQ unreachable.
    proxy.refuse(true);
    await publish(this.chunk(CHUNK));
    const rounds: Record<RoundKind, number> = { drain: 0, accept: 0, live: 0, startup: 0 };
    for (let r = 1; r <= opts.rounds; r++) {
      const schedule = opts.schedule;
      const kind = schedule !== undefined && schedule.length > 0 ? schedule[(r - 1) % schedule.length]! : KINDS[Math.floor(this.rnd() * KINDS.length)]!;
      rounds[kind]++;
      const t0 = Date.now();
      let detail: string;
      if (kind === 'accept') {
        // HQ unreachable: new connections refused, and the current one (if any) dropped.
        proxy.refuse(true);
        await proxy.drop();
        const k = this.int(50, CHUNK - 100);
        await publish(this.chunk(CHUNK), k);
        detail = `killed after ${k} PUBACKs`;
      } else if (kind === 'startup') {
        const ms = this.int(0, 300);
        await delay(ms); // the random kill moment
        await convoy.kill();
        detail = `killed ${ms} ms after the start`;
      } else {
        proxy.refuse(false);
        // Keep a backlog to drain: when less than a chunk waits, add one first (HQ unreachable).
        if (scene.accepted.length - hqSub.seen.size < 400) {
          proxy.refuse(true);
          await proxy.drop();
          await publish(this.chunk(CHUNK));
          proxy.refuse(false);
        }
        const k = this.int(30, 350);
        const base = hqSub.seen.size;
        if (kind === 'drain') {
          await hqSub.until(() => hqSub.seen.size >= base + k, `${k} more deliveries at HQ`, 30_000);
          await convoy.kill();
          detail = `killed after ${k} deliveries`;
        } else {
          const live = this.chunk(300, true);
          await publish(live, this.int(10, live.length - 10));
          detail = `killed during live traffic, ${hqSub.seen.size - base} deliveries meanwhile`;
        }
      }
      await convoy.restart();
      opts.log(`round ${r}: ${kind}, ${detail}; accepted ${scene.accepted.length}, at HQ ${hqSub.seen.size}, link-ups ${convoy.count(LINK_UP)}, ${Date.now() - t0} ms`);
    }

    proxy.refuse(false);
    // Publishes cut short by a kill that HQ has: they were stored (their PUBACK was lost).
    const acceptedKeys = new Set(scene.accepted.map((a) => a.key));
    const cutShort: AcceptedMessage[] = [];
    for (const p of publishers) {
      // Accepted (stored) at the latest when sent: what a link-up could send as the newest of its topic.
      for (const [key, s] of p.sent) if (!acceptedKeys.has(key)) cutShort.push({ key, cls: s.cls, localSeq: s.localSeq, at: s.at });
    }
    await hqSub.delivered(scene.accepted.map((a) => a.key), 120_000);
    // Markers of every class, published now that the link is up and stays up: each arrives after
    // everything stored before it in its class, cut-short publishes included.
    const markers = this.chunk(10);
    await publish(markers);
    await hqSub.delivered(markers.map((m) => m.key), 30_000);
    const delivered = cutShort.filter((c) => hqSub.seen.has(c.key));
    scene.accepted.push(...delivered);
    const linkUps = convoy.count(LINK_UP);
    const report = scene.check(hqSub, convoy, gw, { window: DUPLICATES_PER_LINK_UP });
    const order = orderWithNewestFirst(scene.accepted, hqSub.got, topicOf, linkUps);
    // Order is judged message by message (several link-ups happen before a class's backlog moves).
    const problems = [...report.problems.filter((p) => !/order violation/.test(p)), ...order.violations.map((v) => `order: ${v}`)];
    return {
      seed: this.seed,
      rounds,
      accepted: scene.accepted.length,
      cutShortDelivered: delivered.length,
      cutShortTotal: cutShort.length,
      linkUps,
      report: { ...summary(report), newestFirstExempt: order.exempt },
      problems,
    };
  }

  cleanup(): Promise<void> {
    return this.scene.cleanup();
  }
}

async function main(argv: string[]): Promise<number> {
  const arg = (name: string): string | undefined => {
    const i = argv.indexOf(`--${name}`);
    return i >= 0 ? argv[i + 1] : undefined;
  };
  const rounds = Number(arg('rounds') ?? 50);
  const seed = arg('seed');
  if (!Number.isInteger(rounds) || rounds < 1 || (seed !== undefined && !Number.isInteger(Number(seed)))) {
    console.error('usage: uplink-soak [--rounds N (default 50)] [--seed N]');
    return 2;
  }
  const soak = new UplinkSoak({ rounds, ...(seed !== undefined ? { seed: Number(seed) } : {}), log: (l) => console.log(l) });
  const stop = (): void => void soak.cleanup().finally(() => process.exit(130));
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  try {
    const r = await soak.run();
    console.log(JSON.stringify({ ...r, problems: undefined }));
    console.log(r.problems.length === 0 ? 'no problems' : `PROBLEMS:\n  ${r.problems.join('\n  ')}`);
    return r.problems.length === 0 ? 0 : 1;
  } finally {
    await soak.cleanup();
  }
}

runAsScript(import.meta.url, main);
