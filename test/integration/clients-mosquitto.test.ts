// Mosquitto's own command-line clients (libmosquitto, an independent MQTT implementation) against Convoy.
import { expect } from 'chai';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { ClientPool, expectNothingMore, publish, receive, subscribe, summary, unique, type QoS } from '../helpers/flows.js';
import { ProcPool, type Proc } from '../helpers/processes.js';

type Version = 'mqttv311' | 'mqttv31';

/** Lines printed by mosquitto_sub with our -F format: topic, QoS, retain, payload. */
function messages(stdout: string): Array<{ topic: string; qos: number; retain: boolean; payload: string }> {
  return stdout.split('\n').filter((l) => l.startsWith('M|')).map((l) => {
    const [, topic, qos, retain, ...payload] = l.split('|');
    return { topic: topic!, qos: Number(qos), retain: retain === '1', payload: payload.join('|') };
  });
}

describe('Mosquitto command-line clients (mosquitto_pub / mosquitto_sub 2.x)', () => {
  let gw: TestGateway;
  const pool = new ClientPool();
  const procs = new ProcPool();

  before(async () => {
    gw = await startTestGateway();
  });
  afterEach(async () => {
    await procs.killAll();
    await pool.closeAll();
  });
  after(async () => {
    await gw.stop();
  });

  const common = (): string[] => ['-h', '127.0.0.1', '-p', String(gw.port)];

  function pub(topic: string, message: string | null, qos: QoS, extra: string[] = [], version: Version = 'mqttv311'): Proc {
    const body = message === null ? ['-n'] : ['-m', message];
    return procs.start('mosquitto_pub', [...common(), '-V', version, '-t', topic, '-q', String(qos), ...body, ...extra]);
  }

  /** mosquitto_sub, resolved once its SUBACK arrived (printed by -d). */
  async function sub(topic: string, qos: QoS, count: number, extra: string[] = [], version: Version = 'mqttv311'): Promise<Proc> {
    // stdbuf: line-buffered stdout, so the SUBACK line is seen when it is printed (stdbuf execs, same pid).
    const p = procs.start('stdbuf', ['-oL', 'mosquitto_sub', ...common(), '-V', version, '-d', '-t', topic, '-q', String(qos), '-C', String(count),
      '-F', 'M|%t|%q|%r|%p', ...extra]);
    await p.waitForStdout(/received SUBACK/);
    return p;
  }

  for (const qos of [0, 1, 2] as QoS[]) {
    it(`accepts a QoS ${qos} PUBLISH from mosquitto_pub and routes it at QoS ${qos} [MQTT-4.3.${qos + 1}]`, async () => {
      const t = unique('mq/pub');
      const c = await pool.connect(gw.port);
      await subscribe(c, [{ topic: t, qos: 2 }]);
      const r = await pub(t, `from mosquitto q${qos}`, qos).exit();
      expect(r.code, r.stderr).to.equal(0); // for QoS 1/2 it exits only after PUBACK / PUBCOMP
      expect(summary(await receive(c))).to.deep.equal({ topic: t, payload: `from mosquitto q${qos}`, qos, retain: false });
      await expectNothingMore(c);
    });

    it(`delivers QoS ${qos} to mosquitto_sub subscribed at QoS ${qos}`, async () => {
      const t = unique('mq/sub');
      const s = await sub(t, qos, 2);
      const c = await pool.connect(gw.port);
      await publish(c, t, 'first', 2, { messageId: 1 });
      await publish(c, t, 'second', 2, { messageId: 2 });
      const r = await s.exit();
      expect(r.code, r.stderr).to.equal(0);
      expect(messages(r.stdout)).to.deep.equal([
        { topic: t, qos, retain: false, payload: 'first' },
        { topic: t, qos, retain: false, payload: 'second' },
      ]);
    });
  }

  for (const version of ['mqttv311', 'mqttv31'] as Version[]) {
    it(`carries QoS 2 from mosquitto_pub to mosquitto_sub over ${version === 'mqttv31' ? 'MQTT 3.1' : 'MQTT 3.1.1'}`, async () => {
      const t = unique('mq/e2e');
      const s = await sub(`${t}/+`, 2, 3, [], version);
      for (const [i, q] of ([[1, 0], [2, 1], [3, 2]] as Array<[number, QoS]>)) {
        const r = await pub(`${t}/m${i}`, `msg ${i}`, q, [], version).exit();
        expect(r.code, r.stderr).to.equal(0);
      }
      const r = await s.exit();
      expect(r.code, r.stderr).to.equal(0);
      expect(messages(r.stdout)).to.deep.equal([
        { topic: `${t}/m1`, qos: 0, retain: false, payload: 'msg 1' },
        { topic: `${t}/m2`, qos: 1, retain: false, payload: 'msg 2' },
        { topic: `${t}/m3`, qos: 2, retain: false, payload: 'msg 3' },
      ]);
    });
  }

  it('stores a retained message from mosquitto_pub -r, sends it to mosquitto_sub with retain 1, and clears it with -r -n [MQTT-3.3.1-8] [MQTT-3.3.1-10]', async () => {
    const t = unique('mq/retained');
    const set = await pub(t, 'sticky', 1, ['-r']).exit();
    expect(set.code, set.stderr).to.equal(0);
    const s = await sub(t, 2, 1);
    const r = await s.exit();
    expect(r.code, r.stderr).to.equal(0);
    expect(messages(r.stdout)).to.deep.equal([{ topic: t, qos: 1, retain: true, payload: 'sticky' }]);

    const clear = await pub(t, null, 1, ['-r']).exit();
    expect(clear.code, clear.stderr).to.equal(0);
    const c = await pool.connect(gw.port);
    await subscribe(c, [{ topic: t, qos: 1 }]);
    await expectNothingMore(c);
  });

  it('queues QoS 1 messages for a mosquitto_sub persistent session (-c) and delivers them when it returns [MQTT-3.1.2-5] [MQTT-3.2.2-2]', async () => {
    const t = unique('mq/persist');
    const id = unique('mqsub');
    const first = await sub(t, 1, 1, ['-c', '-i', id, '-E']);
    expect((await first.exit()).code).to.equal(0);
    expect(gw.broker.sessions.get(id)?.subscriptions.has(t)).to.equal(true);
    for (const m of ['while away 1', 'while away 2']) expect((await pub(t, m, 1).exit()).code).to.equal(0);
    const again = procs.start('mosquitto_sub', [...common(), '-V', 'mqttv311', '-c', '-i', id, '-t', t, '-q', '1', '-C', '2', '-F', 'M|%t|%q|%r|%p']);
    const r = await again.exit();
    expect(r.code, r.stderr).to.equal(0);
    expect(messages(r.stdout).map((m) => m.payload)).to.deep.equal(['while away 1', 'while away 2']);
  });

  it('delivers a will to mosquitto_sub when a mosquitto_sub with --will-* is killed [MQTT-3.1.2-8]', async () => {
    const t = unique('mq/will');
    const watcher = await sub(t, 1, 1);
    const doomed = await sub(unique('mq/unused'), 0, 1, ['--will-topic', t, '--will-payload', 'killed', '--will-qos', '1']);
    await doomed.kill(); // SIGKILL: no DISCONNECT
    const r = await watcher.exit();
    expect(r.code, r.stderr).to.equal(0);
    expect(messages(r.stdout)).to.deep.equal([{ topic: t, qos: 1, retain: false, payload: 'killed' }]);
  });

  it('delivers 50 QoS 1 messages to mosquitto_sub in publish order [MQTT-4.6.0-6]', async () => {
    const t = unique('mq/order');
    const s = await sub(t, 1, 50);
    const c = await pool.connect(gw.port);
    for (let i = 0; i < 50; i++) await publish(c, t, `n${i}`, 1, { messageId: i + 1 });
    const r = await s.exit();
    expect(r.code, r.stderr).to.equal(0);
    expect(messages(r.stdout).map((m) => m.payload)).to.deep.equal(Array.from({ length: 50 }, (_, i) => `n${i}`));
  });
});
