// Crash test (issue 5): a real Convoy child process (bin/convoy, SQLite store on one data dir)
// under QoS 1 and QoS 2 load from MQTT.js publishers (3.1.1 and 5) is killed with SIGKILL at a
// random moment, round after round, sometimes while the persistent subscribers are consuming.
// Then it starts once more and the checker (crash-checker.ts) proves that every acknowledged
// message reaches both persistent sessions (QoS 1 session over 3.1.1, QoS 2 session over 5), that
// QoS 2 arrives exactly once, that every QoS 1 copy after the first carries DUP, that the
// subscriptions survived (nothing subscribes again) and that retained messages survived. The harness is scripts/crash-soak.ts, which also runs longer:
//   node dist/scripts/crash-soak.js --rounds 200
//
// CRASH_ROUNDS and CRASH_SEED override the round count and the seed (printed on every run, so a
// failure can be replayed).
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import mqtt from 'mqtt';
import { CrashSoak, startConvoy, summarize, type SoakResult } from '../../scripts/crash-soak.js';
import type { Proc } from '../helpers/processes.js';

type MqttClient = ReturnType<typeof mqtt.connect>;

const rounds = Number(process.env.CRASH_ROUNDS ?? 20);
const seed = process.env.CRASH_SEED !== undefined ? Number(process.env.CRASH_SEED) : undefined;

describe('crash: SIGKILL under QoS 1/2 load, restart on the same SQLite store', function () {
  this.timeout(180000);
  let soak: CrashSoak | undefined;
  let result: SoakResult | undefined;

  after(async () => {
    await soak?.cleanup(); // kills every child and client, removes the temporary directory
  });

  it(`loses no acknowledged message over ${rounds} kills; QoS 2 exactly once; subscriptions and retained messages survive`, async () => {
    soak = new CrashSoak({ rounds, seed, log: (l) => console.log(`      ${l}`) });
    result = await soak.run();
    console.log(summarize(result).replace(/^/gm, '      '));

    // The run exercised something: acknowledged messages of both QoS in several rounds.
    expect(result.ackedQos1, 'QoS 1 messages acknowledged').to.be.greaterThan(0);
    expect(result.ackedQos2, 'QoS 2 messages acknowledged').to.be.greaterThan(0);
    expect(result.perRound.filter((r) => r.acked > 0).length, 'rounds with acknowledged messages').to.be.greaterThan(rounds / 2);

    for (const s of result.subs) {
      expect(s.sessionPresentAtEnd, `${s.clientId}: session present at the final start`).to.equal(true);
      expect(s.report.lost.map((l) => `${l.key} (QoS ${l.qos}, round ${l.round})`), `${s.clientId}: acknowledged but lost`).to.deep.equal([]);
      expect(s.report.qos2Duplicates.map((d) => `${d.key} ${JSON.stringify(d.arrivals)}`), `${s.clientId}: QoS 2 delivered more than once`).to.deep.equal([]);
      // Every QoS 1 copy after the first carries DUP, also when a restarted broker sent it.
      expect(s.report.qos1RedeliveredAfterRestartWithoutDup, `${s.clientId}: QoS 1 copies resent after a restart without DUP`).to.equal(0);
    }
    expect(result.retained.firstDelivered, 'retained message from round 1').to.equal('set in round 1');
    expect(result.problems, `seed ${result.seed}`).to.deep.equal([]);
  });

  describe('a subscription with no publish traffic after it', () => {
    const procs: Proc[] = [];
    const clients: MqttClient[] = [];
    let dir = '';

    afterEach(async () => {
      await Promise.all(procs.splice(0).map((p) => p.kill()));
      await Promise.all(clients.splice(0).map((c) => c.endAsync(true)));
      if (dir) rmSync(dir, { recursive: true, force: true });
    });

    // The main test always publishes right after subscribing, so the grouped commit that holds
    // the publishes carries the subscription too. Here nothing follows the SUBACK but the
    // subscriber's DISCONNECT: the session must still be there after SIGKILL.
    for (const protocolVersion of [4, 5] as const) {
      it(`persistent session and subscription survive a SIGKILL after SUBACK and DISCONNECT (MQTT ${protocolVersion === 4 ? '3.1.1' : '5'})`, async () => {
        dir = mkdtempSync(join(tmpdir(), 'convoy-crash-sub-'));
        const dataDir = join(dir, 'data');
        mkdirSync(dataDir);
        const opts = {
          host: '127.0.0.1', clientId: 'crash-idle-sub', protocolVersion, clean: false, reconnectPeriod: 0,
          ...(protocolVersion === 5 ? { properties: { sessionExpiryInterval: 0xffffffff } } : {}),
        };
        const first = await startConvoy(dir, dataDir, 0, (p) => procs.push(p));
        const sub = await mqtt.connectAsync({ ...opts, port: first.port });
        clients.push(sub);
        const granted = await sub.subscribeAsync('idle/#', { qos: 1 });
        expect(granted[0]?.qos).to.equal(1);
        await sub.endAsync();
        await first.proc.kill();

        const second = await startConvoy(dir, dataDir, 0, (p) => procs.push(p));
        const again = mqtt.connect({ ...opts, port: second.port });
        clients.push(again);
        const connack = await new Promise<{ sessionPresent: boolean }>((res) => again.once('connect', res));
        expect(connack.sessionPresent, 'session present after SIGKILL').to.equal(true);
        // And the subscription still routes (no SUBSCRIBE on this connection).
        const pub = await mqtt.connectAsync({ host: '127.0.0.1', port: second.port, clientId: 'crash-idle-pub', reconnectPeriod: 0 });
        clients.push(pub);
        const arrived = new Promise<string>((res) => again.once('message', (_t, payload) => res(payload.toString())));
        await pub.publishAsync('idle/x', 'after restart', { qos: 1 });
        expect(await arrived).to.equal('after restart');
      });
    }
  });
});
