// The outbox (bridge/outbox.ts) against every OutboxStore: the memory store on its own, the memory
// store carried by a MemoryStateStore's commits, and the SQLite store on a temporary file.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { createOutbox, recordSize, type CreateOutboxOptions, type OutboxHandle } from '../../src/bridge/outbox.js';
import type { OutboxClass, OutboxRecord } from '../../src/bridge/types.js';
import { MemoryStateStore } from '../../src/store/memory-state-store.js';
import { MemoryOutboxStore, SqliteOutboxStore, type OutboxStore } from '../../src/store/outbox-store.js';
import { SqliteStateStore } from '../../src/store/sqlite-state-store.js';
import { fieldsOf } from '../helpers/outbox-records.js';

const quiet = { info: () => {}, warn: () => {}, error: () => {} };

interface Env {
  store: OutboxStore;
  /** Resolves once everything appended or removed so far is committed. */
  commit(): Promise<void>;
  cleanup(): void;
}

const tick = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

const ENVS: Record<string, () => Env> = {
  'MemoryOutboxStore (own commits)': () => {
    const store = new MemoryOutboxStore();
    return { store, commit: async () => { await tick(); await tick(); }, cleanup: () => {} };
  },
  'MemoryOutboxStore on a MemoryStateStore': () => {
    const host = new MemoryStateStore();
    const store = new MemoryOutboxStore({ host });
    return { store, commit: () => host.commit(), cleanup: () => {} };
  },
  SqliteOutboxStore: () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'convoy-outbox-'));
    const state = new SqliteStateStore({ path: path.join(dir, 'convoy.db'), log: quiet });
    const store = new SqliteOutboxStore(state);
    return {
      store,
      commit: () => state.commit(),
      cleanup: () => {
        state.close();
        fs.rmSync(dir, { recursive: true, force: true });
      },
    };
  },
};

function rec(cls: OutboxClass, localTopic: string, payload = 'x', extra: Partial<OutboxRecord> = {}): Omit<OutboxRecord, 'seq'> {
  return {
    cls,
    localTopic,
    topic: `fleet/gw1/${localTopic}`,
    payload: Buffer.from(payload),
    qos: 1,
    createdAt: 1000,
    expiresAt: 0,
    ...extra,
  };
}

for (const [name, makeEnv] of Object.entries(ENVS)) {
  describe(`outbox on ${name}`, () => {
    let env: Env;
    let clock: number;
    let writes: number;

    function outbox(opts: Partial<CreateOutboxOptions> = {}): OutboxHandle {
      return createOutbox({
        store: env.store,
        budgetBytes: 1 << 30,
        minFreeBytes: 0,
        now: () => clock,
        onWrite: () => void writes++,
        ...opts,
      });
    }

    beforeEach(() => {
      env = makeEnv();
      clock = 10_000;
      writes = 0;
    });

    afterEach(() => env.cleanup());

    it('gives out increasing seqs; records are readable by class, in seq order, once committed', async () => {
      const o = outbox();
      const committed: number[] = [];
      o.onCommitted((seq) => committed.push(seq));
      const a = o.append(rec('telemetry', 't/1'));
      const b = o.append(rec('alarm', 'a/1'));
      const c = o.append(rec('telemetry', 't/2'));
      expect([a?.seq, b?.seq, c?.seq]).to.deep.equal([1, 2, 3]);
      expect(writes).to.equal(3);
      expect(o.next('telemetry', 0, 10)).to.deep.equal([]); // not durable yet
      expect(o.committedSeq).to.equal(0);
      await env.commit();
      expect(committed).to.deep.equal([3]);
      expect(o.committedSeq).to.equal(3);
      expect(o.next('telemetry', 0, 10).map((r) => [r.seq, r.localTopic])).to.deep.equal([
        [1, 't/1'],
        [3, 't/2'],
      ]);
      expect(o.next('alarm', 0, 10).map(fieldsOf)).to.deep.equal([fieldsOf(b!)]);
      expect(o.next('telemetry', 1, 10).map((r) => r.seq)).to.deep.equal([3]);
      expect(o.next('event', 0, 10)).to.deep.equal([]);
      const s = o.stats();
      expect(s.count).to.equal(3);
      expect(s.lastSeq).to.equal(3);
      expect(s.byClass.telemetry.count).to.equal(2);
      expect(s.bytes).to.equal(recordSize(rec('telemetry', 't/1')) * 2 + recordSize(rec('alarm', 'a/1')));
    });

    it('pages with afterSeq and limit', async () => {
      const o = outbox();
      for (let i = 0; i < 25; i++) o.append(rec(i % 2 === 0 ? 'event' : 'bulk', `e/${i}`));
      await env.commit();
      const pages: number[][] = [];
      let after = 0;
      for (;;) {
        const page = o.next('event', after, 4);
        if (page.length === 0) break;
        pages.push(page.map((r) => r.seq));
        after = page[page.length - 1]!.seq;
      }
      expect(pages.flat()).to.deep.equal(Array.from({ length: 13 }, (_, i) => 2 * i + 1));
      expect(pages.every((p) => p.length <= 4)).to.equal(true);
    });

    it('keeps payloads and properties (Buffers included)', async () => {
      const o = outbox();
      const props = {
        correlationData: Buffer.from([0, 1, 2, 255]),
        contentType: 'application/json',
        userProperties: [['k', 'v']] as [string, string][],
        messageExpiryInterval: 30,
      };
      o.append(rec('event', 'e', 'hello', { properties: props, qos: 2, expiresAt: 99_999, createdAt: 5 }));
      await env.commit();
      const [r] = o.next('event', 0, 1);
      expect(r?.payload.toString()).to.equal('hello');
      expect(r?.qos).to.equal(2);
      expect(r?.createdAt).to.equal(5);
      expect(r?.expiresAt).to.equal(99_999);
      expect(r?.properties?.correlationData?.equals(props.correlationData)).to.equal(true);
      expect(r?.properties?.contentType).to.equal('application/json');
      expect(r?.properties?.userProperties).to.deep.equal([['k', 'v']]);
    });

    it('newestPerTopic: the newest committed record of each local topic, most recent topics first cut, in seq order', async () => {
      const o = outbox();
      o.append(rec('telemetry', 'gps', 'g1')); // 1
      o.append(rec('telemetry', 'speed', 's1')); // 2
      o.append(rec('telemetry', 'gps', 'g2')); // 3
      o.append(rec('event', 'gps', 'other class')); // 4
      o.append(rec('telemetry', 'fuel', 'f1')); // 5
      o.append(rec('telemetry', 'speed', 's2')); // 6
      await env.commit();
      o.append(rec('telemetry', 'gps', 'pending')); // 7: not committed yet
      expect(o.newestPerTopic('telemetry', 10).map((r) => r.payload.toString())).to.deep.equal(['g2', 'f1', 's2']);
      expect(o.newestPerTopic('telemetry', 2).map((r) => r.seq)).to.deep.equal([5, 6]);
      await env.commit();
      expect(o.newestPerTopic('telemetry', 10).map((r) => r.seq)).to.deep.equal([5, 6, 7]);
      // A removed newest record: the topic's next newest stands in.
      o.remove(7);
      expect(o.newestPerTopic('telemetry', 10).map((r) => r.seq)).to.deep.equal([3, 5, 6]);
      expect(o.newestPerTopic('alarm', 10)).to.deep.equal([]);
    });

    it('remove: gone at once (also before its commit), counted out of the stats, unknown seqs ignored', async () => {
      const o = outbox();
      for (let i = 0; i < 5; i++) o.append(rec('event', `e/${i}`));
      await env.commit();
      writes = 0;
      o.remove(2);
      o.remove(2);
      o.remove(999);
      expect(writes, 'a removal holds no acknowledgement').to.equal(0);
      expect(o.next('event', 0, 10).map((r) => r.seq)).to.deep.equal([1, 3, 4, 5]);
      expect(o.stats().count).to.equal(4);
      const six = o.append(rec('event', 'e/6'));
      o.remove(six!.seq); // removed before it was ever committed
      await env.commit();
      expect(o.next('event', 0, 10).map((r) => r.seq)).to.deep.equal([1, 3, 4, 5]);
      expect(o.stats().count).to.equal(4);
      expect(o.stats().lastSeq).to.equal(6);
      expect(o.append(rec('event', 'e/7'))?.seq).to.equal(7);
      expect(o.stats().dropped).to.deep.equal({ expired: 0, evicted: 0, refused_full: 0 });
    });

    it('budget: evicts the oldest of the lowest class first (bulk, telemetry, event), never alarms, and counts', async () => {
      const size = recordSize(rec('bulk', 'x/0'));
      const o = outbox({ budgetBytes: size * 8 });
      o.append(rec('alarm', 'x/0')); // 1
      o.append(rec('event', 'x/0')); // 2
      o.append(rec('telemetry', 'x/0')); // 3
      o.append(rec('bulk', 'x/0')); // 4
      o.append(rec('event', 'x/0')); // 5
      o.append(rec('bulk', 'x/0')); // 6
      o.append(rec('telemetry', 'x/0')); // 7
      o.append(rec('alarm', 'x/0')); // 8: full
      await env.commit();
      const seqs = async (): Promise<Record<OutboxClass, number[]>> => {
        await env.commit();
        const out = {} as Record<OutboxClass, number[]>;
        for (const c of ['alarm', 'event', 'telemetry', 'bulk'] as const) out[c] = o.next(c, 0, 100).map((r) => r.seq);
        return out;
      };
      expect(o.append(rec('event', 'x/0'))?.seq).to.equal(9); // evicts bulk 4
      expect(await seqs()).to.deep.equal({ alarm: [1, 8], event: [2, 5, 9], telemetry: [3, 7], bulk: [6] });
      o.append(rec('alarm', 'x/0')); // 10: evicts bulk 6
      o.append(rec('alarm', 'x/0')); // 11: evicts telemetry 3
      expect(await seqs()).to.deep.equal({ alarm: [1, 8, 10, 11], event: [2, 5, 9], telemetry: [7], bulk: [] });
      o.append(rec('bulk', 'x/0')); // 12: evicts telemetry 7 (no bulk left to evict)
      o.append(rec('telemetry', 'x/0')); // 13: evicts bulk 12
      expect(await seqs()).to.deep.equal({ alarm: [1, 8, 10, 11], event: [2, 5, 9], telemetry: [13], bulk: [] });
      expect(o.stats().dropped).to.deep.equal({ expired: 0, evicted: 5, refused_full: 0 });
      expect(o.stats().bytes).to.equal(size * 8);
    });

    it('refuses with refused_full when only alarms remain (alarm newcomers too); a refusal takes no seq', async () => {
      const size = recordSize(rec('alarm', 'a'));
      const o = outbox({ budgetBytes: size * 3 });
      o.append(rec('alarm', 'a'));
      o.append(rec('telemetry', 'a'));
      o.append(rec('alarm', 'a'));
      expect(o.append(rec('alarm', 'a'))?.seq).to.equal(4); // evicts the telemetry record
      expect(o.stats().dropped.evicted).to.equal(1);
      writes = 0;
      expect(o.append(rec('telemetry', 'a'))).to.equal(null);
      expect(o.append(rec('bulk', 'a'))).to.equal(null);
      expect(o.append(rec('alarm', 'a'))).to.equal(null);
      expect(writes).to.equal(0);
      expect(o.stats().dropped).to.deep.equal({ expired: 0, evicted: 1, refused_full: 3 });
      await env.commit();
      expect(o.next('alarm', 0, 10).map((r) => r.seq)).to.deep.equal([1, 3, 4]);
      o.remove(1);
      expect(o.append(rec('event', 'a'))?.seq).to.equal(5);
    });

    it('refuses a record larger than the whole budget without evicting anything', () => {
      const o = outbox({ budgetBytes: 1000 });
      o.append(rec('bulk', 'b'));
      expect(o.append(rec('bulk', 'b', 'y'.repeat(2000)))).to.equal(null);
      expect(o.stats()).to.include({ count: 1 });
      expect(o.stats().dropped).to.deep.equal({ expired: 0, evicted: 0, refused_full: 1 });
    });

    it('evicts records appended in the same turn (not committed yet)', async () => {
      const size = recordSize(rec('bulk', 'b'));
      const o = outbox({ budgetBytes: size * 2 });
      for (let i = 0; i < 10; i++) o.append(rec('bulk', 'b'));
      expect(o.stats().count).to.equal(2);
      expect(o.stats().dropped.evicted).to.equal(8);
      await env.commit();
      expect(o.next('bulk', 0, 10).map((r) => r.seq)).to.deep.equal([9, 10]);
    });

    it('time to live: next() drops expired records and counts them', async () => {
      const o = outbox();
      o.append(rec('event', 'e', '1', { expiresAt: 20_000 }));
      o.append(rec('event', 'e', '2'));
      o.append(rec('event', 'e', '3', { expiresAt: 15_000 }));
      o.append(rec('event', 'e', '4', { expiresAt: 30_000 }));
      await env.commit();
      clock = 20_000;
      writes = 0;
      expect(o.next('event', 0, 2).map((r) => r.payload.toString())).to.deep.equal(['2', '4']);
      expect(writes, 'dropping expired records holds no acknowledgement').to.equal(0);
      expect(o.stats().dropped).to.deep.equal({ expired: 2, evicted: 0, refused_full: 0 });
      expect(o.stats().count).to.equal(2);
      clock = 30_000;
      expect(o.newestPerTopic('event', 5).map((r) => r.payload.toString())).to.deep.equal([]);
      expect(o.stats().dropped.expired).to.equal(3);
      await env.commit();
      expect(o.next('event', 0, 10).map((r) => r.payload.toString())).to.deep.equal(['2']);
    });

    it('when full, expired records go before anything is evicted (alarms with a time to live included)', async () => {
      const size = recordSize(rec('bulk', 'b'));
      const o = outbox({ budgetBytes: size * 4 });
      o.append(rec('bulk', 'b'));
      o.append(rec('alarm', 'b', 'x', { expiresAt: 12_000 }));
      o.append(rec('event', 'b', 'x', { expiresAt: 11_000 }));
      o.append(rec('telemetry', 'b'));
      await env.commit();
      clock = 13_000;
      expect(o.append(rec('bulk', 'b'))?.seq).to.equal(5);
      expect(o.stats().dropped).to.deep.equal({ expired: 2, evicted: 0, refused_full: 0 });
      expect(o.stats().count).to.equal(3);
      expect(o.append(rec('bulk', 'b'))?.seq).to.equal(6); // fits: 2 freed for 1
      expect(o.append(rec('bulk', 'b'))?.seq).to.equal(7); // evicts bulk 1
      expect(o.stats().dropped).to.deep.equal({ expired: 2, evicted: 1, refused_full: 0 });
      await env.commit();
      expect(o.next('bulk', 0, 10).map((r) => r.seq)).to.deep.equal([5, 6, 7]);
    });

    it('filesystem floor: capacity follows statfs, measured at most once per spaceCheckMs', () => {
      const size = recordSize(rec('bulk', 'b'));
      let free = size * 3 + 1000; // the floor is 1000
      let calls = 0;
      const o = outbox({
        dataDir: '/data',
        minFreeBytes: 1000,
        statfs: (dir) => {
          expect(dir).to.equal('/data');
          calls++;
          return { bavail: free, bsize: 1 };
        },
      });
      for (let i = 0; i < 5; i++) o.append(rec('bulk', 'b'));
      expect(calls).to.equal(1);
      expect(o.stats().count).to.equal(3);
      expect(o.stats().dropped.evicted).to.equal(2);
      // Someone else fills the disk: the outbox shrinks at the next measurement.
      free = 1000 - size; // below the floor by one record
      clock += 500;
      o.append(rec('bulk', 'b'));
      expect(calls).to.equal(1);
      clock += 600;
      o.append(rec('bulk', 'b'));
      expect(calls).to.equal(2);
      // Measured: 3 records held + (free - floor) = 2 records (no free pages in the file yet).
      expect(o.stats().count).to.equal(2);
      expect(o.stats().dropped.evicted).to.equal(5);
      expect(o.capacity()).to.equal(size * 2);
    });

    it('onWrite: called for accepted appends only, not for removals, reads or refusals', async () => {
      const o = outbox({ budgetBytes: recordSize(rec('alarm', 'a')) });
      o.append(rec('alarm', 'a'));
      expect(writes).to.equal(1);
      await env.commit();
      o.next('alarm', 0, 10);
      o.newestPerTopic('alarm', 10);
      expect(o.append(rec('alarm', 'a'))).to.equal(null); // full of alarms: refused
      expect(writes).to.equal(1);
      // A removal holds no publisher's acknowledgement: it commits on the store's own schedule.
      o.remove(1);
      expect(writes).to.equal(1);
      o.append(rec('alarm', 'a'));
      expect(writes).to.equal(2);
    });
  });
}
