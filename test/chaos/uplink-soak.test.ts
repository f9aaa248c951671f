// Uplink crash test (issue 6): Convoy (examples/truck.toml) with a real Mosquitto as HQ behind the
// fault proxy is killed with SIGKILL in every kind of moment the uplink has: while it drains a
// backlog, while HQ is unreachable and a backlog is being accepted, during live traffic, and right
// after a restart. At the end HQ must have every acknowledged message, with duplicates within
// 4 × inflight_window per link-up, order kept within each class and a contiguous seq. The harness
// is scripts/uplink-soak.ts, which also runs longer: node dist/scripts/uplink-soak.js --rounds 50
//
// UPLINK_SOAK_SEED overrides the seed of the kill moments (printed on every run).
import { expect } from 'chai';
import { UplinkSoak, type RoundKind, type UplinkSoakResult } from '../../scripts/uplink-soak.js';

const seed = process.env.UPLINK_SOAK_SEED !== undefined ? Number(process.env.UPLINK_SOAK_SEED) : undefined;
const SCHEDULE: readonly RoundKind[] = ['drain', 'accept', 'startup', 'live', 'accept', 'drain', 'live', 'startup'];

describe('uplink crash: SIGKILL while draining, accepting, forwarding live traffic and starting', function () {
  this.timeout(120_000);
  let soak: UplinkSoak | undefined;

  after(async () => {
    await soak?.cleanup(); // kills Convoy, stops Mosquitto and the proxy, removes the data dir
  });

  it(`loses no acknowledged message over ${SCHEDULE.length} kills of every kind`, async () => {
    soak = new UplinkSoak({ rounds: SCHEDULE.length, schedule: SCHEDULE, ...(seed !== undefined ? { seed } : {}), log: (l) => console.log(`      ${l}`) });
    const r: UplinkSoakResult = await soak.run();
    console.log(`      ${JSON.stringify({ ...r, problems: undefined })}`);

    expect(r.rounds).to.deep.equal({ drain: 2, accept: 2, live: 2, startup: 2 });
    // Every kill restarted the link at least once more, and messages of every round arrived.
    expect(r.linkUps, 'link-ups').to.be.greaterThan(2);
    expect(r.report.lost, 'acknowledged but lost').to.equal(0);
    expect(r.report.seqMissing, 'seq gaps').to.equal('0');
    expect(r.problems, `seed ${r.seed}`).to.deep.equal([]);
  });
});
