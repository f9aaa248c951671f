// The SQLite outbox on real files: durability across reopen and a simulated power cut, seq
// numbering that survives an emptied outbox, the segments on disk (one per class per commit, a
// bitmap of deleted records, freed once all are deleted), the migrations from a database without
// an outbox and from one-row-per-message outboxes, and the outbox committing in the same
// transaction as the broker's journal (commit participants).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import Database from 'better-sqlite3';
import { createOutbox } from '../../src/bridge/outbox.js';
import type { OutboxClass, OutboxRecord } from '../../src/bridge/types.js';
import { MemoryStateStore } from '../../src/store/memory-state-store.js';
import { MIGRATIONS, SCHEMA_VERSION } from '../../src/store/migrations.js';
import { MemoryOutboxStore, SqliteOutboxStore } from '../../src/store/outbox-store.js';
import { decodeSegment, isGone, SegmentRow } from '../../src/store/outbox-segment.js';
import { SqliteStateStore, type CommitParticipant } from '../../src/store/sqlite-state-store.js';
import { StoreError } from '../../src/store/state-store.js';
import { message } from '../unit/state-store-conformance.js';
import { fieldsOf } from '../helpers/outbox-records.js';

const quiet = { info: () => {}, warn: () => {}, error: () => {} };

/** Live seqs in the database file, read with SQL and the segment layout (not through the store). */
function liveSeqsOnDisk(db: Database.Database): number[] {
  const gone = new Map<number, Uint8Array>();
  for (const [segment, bits] of db.prepare('SELECT segment, bits FROM outbox_gone').raw(true).all() as [number, Buffer][]) gone.set(segment, bits);
  const out: number[] = [];
  for (const [id, records] of db.prepare('SELECT id, records FROM outbox_segments ORDER BY id').raw(true).all() as [number, Buffer][]) {
    decodeSegment(records, 'event').forEach((r, i) => {
      if (!isGone(gone.get(id) ?? null, i)) out.push(r.seq);
    });
  }
  return out.sort((a, b) => a - b);
}

function countRows(db: Database.Database, table: string): number {
  return db.prepare(`SELECT count(*) FROM ${table}`).pluck().get() as number;
}

function rec(cls: OutboxClass, localTopic: string, payload: string, extra: Partial<OutboxRecord> = {}): Omit<OutboxRecord, 'seq'> {
  return { cls, localTopic, topic: `fleet/gw1/${localTopic}`, payload: Buffer.from(payload), qos: 1, createdAt: 1, expiresAt: 0, ...extra };
}

describe('SQLite outbox on disk', () => {
  let dir: string;
  let file: string;
  const open: SqliteStateStore[] = [];

  function openStore(at = file): { state: SqliteStateStore; store: SqliteOutboxStore } {
    const state = new SqliteStateStore({ path: at, log: quiet });
    open.push(state);
    return { state, store: new SqliteOutboxStore(state) };
  }

  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'convoy-outbox-'));
    file = path.join(dir, 'convoy.db');
  });

  afterEach(() => {
    for (const s of open.splice(0)) {
      try {
        s.close();
      } catch {
        // already closed
      }
    }
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('records, totals and the seq survive a reopen; numbering continues after the highest seq', async () => {
    const { state, store } = openStore();
    const o = createOutbox({ store, budgetBytes: 1 << 20, minFreeBytes: 0 });
    const classes: OutboxClass[] = ['alarm', 'event', 'telemetry', 'bulk'];
    const appended: OutboxRecord[] = [];
    for (let i = 0; i < 40; i++) {
      const r = o.append(
        rec(classes[i % 4]!, `t/${i % 3}`, `p${i}`, {
          properties: { correlationData: Buffer.from([i, 255]), userProperties: [['n', String(i)]] },
          expiresAt: i === 5 ? 10_000_000_000_000 : 0,
        }),
      );
      appended.push(r!);
    }
    o.remove(2);
    await state.commit();
    const before = o.stats();
    state.close();

    const again = openStore();
    const o2 = createOutbox({ store: again.store, budgetBytes: 1 << 20, minFreeBytes: 0 });
    expect(o2.stats()).to.deep.equal(before);
    for (const cls of classes) {
      const got = o2.next(cls, 0, 100);
      expect(got.map(fieldsOf)).to.deep.equal(appended.filter((r) => r.cls === cls && r.seq !== 2).map(fieldsOf), cls);
    }
    expect(o2.committedSeq).to.equal(40);
    expect(o2.append(rec('event', 'x', 'after'))?.seq).to.equal(41);
  });

  it('reads the newest rows from memory and older ones from the table, each live row once and in order', async () => {
    const state = new SqliteStateStore({ path: file, log: quiet });
    open.push(state);
    // A tail of about 10 rows of ~120 B: most of what follows leaves it again. A reader is
    // there (the clock stands still after its first read), so commits keep a tail.
    const store = new SqliteOutboxStore(state, 1200, () => 0);
    const o = createOutbox({ store, budgetBytes: 1 << 20, minFreeBytes: 0 });
    expect(o.next('event', 0, 1)).to.deep.equal([]);
    const seqs: number[] = [];
    for (let batch = 0; batch < 5; batch++) {
      for (let i = 0; i < 12; i++) seqs.push(o.append(rec('event', 't', `b${batch}-${i}`))!.seq);
      await state.commit();
    }
    expect(store.tailBytes).to.be.greaterThan(0);
    expect(store.tailBytes, 'the tail stays within its budget').to.be.at.most(1200);
    // Acknowledged ones go, from the tail (newest) and from the table (oldest).
    const removed = new Set([1, 2, 30, 59, 60]);
    for (const seq of removed) o.remove(seq);
    await state.commit();
    const live = seqs.filter((q) => !removed.has(q));
    // Read as the forwarder does: in steps, each after the last seq it got.
    const got: number[] = [];
    let after = 0;
    for (;;) {
      const page = o.next('event', after, 7).map((r) => r.seq);
      if (page.length === 0) break;
      got.push(...page);
      after = page[page.length - 1]!;
    }
    expect(got).to.deep.equal(live);
    // What the table holds agrees (the tail is only a copy).
    expect(liveSeqsOnDisk(state.db)).to.deep.equal(live);
  });

  it('hands out records of one class from the tail and from the table, with the publisher\'s properties', async () => {
    const state = new SqliteStateStore({ path: file, log: quiet });
    open.push(state);
    // A tail of about 4 rows: the first ones leave it and are read back from the table.
    const store = new SqliteOutboxStore(state, 500, () => 0);
    const o = createOutbox({ store, budgetBytes: 1 << 20, minFreeBytes: 0 });
    expect(o.next('event', 0, 1)).to.deep.equal([]);
    const props = { userProperties: [['k', 'v']] as [string, string][], contentType: 'text/plain' };
    const appended: OutboxRecord[] = [];
    for (let i = 0; i < 12; i++) {
      appended.push(o.append(rec('event', `t/${i}`, `p${i}`, i === 11 ? { properties: props } : {}))!);
      await state.commit();
    }
    const got = o.next('event', 0, 100);
    expect(got.map(fieldsOf)).to.deep.equal(appended.map(fieldsOf));
    // One record class on every path: the send path is compiled once (see afterCommit).
    for (const r of got) expect(r).to.be.instanceOf(SegmentRow);
    // The newest one came from the tail: its properties are the publisher's object, not a parse of their JSON.
    expect(got[11]!.properties).to.equal(appended[11]!.properties);
    expect(store.tailBytes).to.be.greaterThan(0);
  });

  it('an outbox emptied by acknowledgements does not restart its numbering', async () => {
    const { state, store } = openStore();
    const o = createOutbox({ store, budgetBytes: 1 << 20, minFreeBytes: 0 });
    for (let i = 0; i < 5; i++) o.append(rec('telemetry', 'gps', String(i)));
    await state.commit();
    for (let seq = 1; seq <= 5; seq++) o.remove(seq);
    await state.commit();
    expect(countRows(state.db, 'outbox_segments')).to.equal(0);
    state.close();
    const again = openStore();
    expect(again.store.lastSeq).to.equal(5);
    const o2 = createOutbox({ store: again.store, budgetBytes: 1 << 20, minFreeBytes: 0 });
    expect(o2.append(rec('telemetry', 'gps', 'new'))?.seq).to.equal(6);
    expect(o2.stats().lastSeq).to.equal(6);
  });

  it('a power cut loses only what was not committed (never readable), and its seqs are given out again', async () => {
    const { state, store } = openStore();
    const o = createOutbox({ store, budgetBytes: 1 << 20, minFreeBytes: 0 });
    for (let i = 0; i < 3; i++) o.append(rec('event', 'e', `committed ${i}`));
    await state.commit();
    o.append(rec('event', 'e', 'lost 1'));
    o.append(rec('event', 'e', 'lost 2'));
    expect(o.next('event', 0, 10)).to.have.length(3); // the pending ones are not readable
    // The files as a power cut would leave them: the database and its WAL, without the pending batch.
    const copyDir = fs.mkdtempSync(path.join(dir, 'cut-'));
    for (const suffix of ['', '-wal']) {
      if (fs.existsSync(file + suffix)) fs.copyFileSync(file + suffix, path.join(copyDir, `convoy.db${suffix}`));
    }
    const after = openStore(path.join(copyDir, 'convoy.db'));
    const o2 = createOutbox({ store: after.store, budgetBytes: 1 << 20, minFreeBytes: 0 });
    expect(o2.next('event', 0, 10).map((r) => r.payload.toString())).to.deep.equal(['committed 0', 'committed 1', 'committed 2']);
    expect(o2.append(rec('event', 'e', 'next'))?.seq).to.equal(4);
  });

  it('migrates a database written before the outbox existed', () => {
    const raw = new Database(file);
    raw.pragma('journal_mode = WAL');
    raw.exec(MIGRATIONS[0]!.sql);
    raw.pragma('user_version = 1');
    raw.close();
    const { state, store } = openStore();
    expect(state.db.pragma('user_version', { simple: true })).to.equal(SCHEMA_VERSION);
    expect(store.lastSeq).to.equal(0);
    expect(store.totals().alarm).to.deep.equal({ count: 0, bytes: 0 });
  });

  it('writes one segment per class per commit; deleted records are a bitmap until the whole segment goes', async () => {
    const { state, store } = openStore();
    const o = createOutbox({ store, budgetBytes: 1 << 20, minFreeBytes: 0 });
    // One commit: 6 telemetry and 2 alarms, interleaved.
    const classes: OutboxClass[] = ['telemetry', 'telemetry', 'alarm', 'telemetry', 'telemetry', 'alarm', 'telemetry', 'telemetry'];
    for (const [i, cls] of classes.entries()) o.append(rec(cls, `t/${i}`, `p${i}`));
    await state.commit();
    const segments = (): number[][] => state.db.prepare('SELECT id, cls, last_seq, count FROM outbox_segments ORDER BY id').raw(true).all() as number[][];
    expect(segments()).to.deep.equal([[1, 2, 8, 6], [3, 0, 6, 2]]);
    expect(countRows(state.db, 'outbox_gone')).to.equal(0);

    // Some records of each: bitmaps; all of the alarms: their segment goes (no bitmap left behind).
    for (const seq of [1, 2, 7, 3, 6]) o.remove(seq);
    await state.commit();
    expect(segments()).to.deep.equal([[1, 2, 8, 6]]);
    expect(state.db.prepare('SELECT segment, hex(bits) FROM outbox_gone').raw(true).all()).to.deep.equal([[1, '13']]); // bits 0, 1, 4
    expect(liveSeqsOnDisk(state.db)).to.deep.equal([4, 5, 8]);

    // A reopen counts the bitmap in, and the rest of the segment can go.
    const before = o.stats();
    state.close();
    const again = openStore();
    const o2 = createOutbox({ store: again.store, budgetBytes: 1 << 20, minFreeBytes: 0 });
    expect(o2.stats()).to.deep.equal(before);
    expect(o2.next('telemetry', 0, 10).map((r) => r.seq)).to.deep.equal([4, 5, 8]);
    for (const seq of [4, 5, 8]) o2.remove(seq);
    await again.state.commit();
    expect([countRows(again.state.db, 'outbox_segments'), countRows(again.state.db, 'outbox_gone')]).to.deep.equal([0, 0]);
    expect(o2.stats().count).to.equal(0);
  });

  it('keeps no tail while nobody reads (the link is down), one again once reads come back; every row read once, in order', async () => {
    const state = new SqliteStateStore({ path: file, log: quiet });
    open.push(state);
    let t = 0;
    const store = new SqliteOutboxStore(state, undefined, () => t);
    const o = createOutbox({ store, budgetBytes: 1 << 20, minFreeBytes: 0 });
    const seqs: number[] = [];
    const appendBatch = async (n: number): Promise<void> => {
      for (let i = 0; i < n; i++) seqs.push(o.append(rec('event', 't', `r${seqs.length}`))!.seq);
      await state.commit();
    };
    const got: number[] = [];
    const readAll = (): void => {
      for (;;) {
        const page = o.next('event', got[got.length - 1] ?? 0, 7).map((r) => r.seq);
        if (page.length === 0) return;
        got.push(...page);
      }
    };
    // Never read: nothing held in memory after the commits.
    await appendBatch(30);
    await appendBatch(20);
    expect(store.tailBytes).to.equal(0);
    readAll();
    // Read just now: the next commits keep their rows.
    await appendBatch(10);
    expect(store.tailBytes).to.be.greaterThan(0);
    readAll();
    // Two seconds without a read: the tail is emptied at the next commit and stays empty.
    t += 2000;
    await appendBatch(10);
    expect(store.tailBytes).to.equal(0);
    await appendBatch(5);
    expect(store.tailBytes).to.equal(0);
    readAll();
    expect(got).to.deep.equal(seqs);
    expect(seqs.length).to.equal(75);
  });

  for (const tail of [undefined, 1200]) {
    it(`merges runs of small segments (a low message rate), keeping every live record, its order and its deletes (tail ${tail ?? 'default'})`, async () => {
      // With a tail of ~10 records the segments merged are read back from the table.
      const state = new SqliteStateStore({ path: file, log: quiet });
      open.push(state);
      const store = new SqliteOutboxStore(state, tail);
      const o = createOutbox({ store, budgetBytes: 1 << 20, minFreeBytes: 0 });
      const live: number[] = [];
      // 200 commits of one telemetry record each (an event now and then); HQ acknowledges as it goes.
      for (let i = 0; i < 200; i++) {
        const r = o.append(rec(i % 50 === 7 ? 'event' : 'telemetry', `t/${i % 3}`, `p${i}`))!;
        if (r.cls === 'telemetry') live.push(r.seq);
        await state.commit();
        // The forwarder reads (hands out) what is there; HQ acknowledges one every fifth commit.
        expect(o.next('telemetry', 0, 1000).map((r) => r.seq)).to.deep.equal(live);
        if (i % 5 === 4) o.remove(live.splice(live.length - 3, 1)[0]!);
      }
      await state.commit();
      const rows = state.db.prepare('SELECT count(*) FROM outbox_segments WHERE cls = 2').pluck().get() as number;
      expect(rows, 'telemetry segments').to.be.below(40);
      const read = (): number[] => o.next('telemetry', 0, 1000).map((r) => r.seq);
      expect(read()).to.deep.equal(live);
      expect(liveSeqsOnDisk(state.db).filter((q) => live.includes(q))).to.deep.equal(live);
      // Deletes of merged records, then a reopen: the same view from the table.
      for (const seq of live.splice(0, 10)) o.remove(seq);
      await state.commit();
      expect(read()).to.deep.equal(live);
      const before = o.stats();
      state.close();
      const again = openStore();
      const o2 = createOutbox({ store: again.store, budgetBytes: 1 << 20, minFreeBytes: 0 });
      expect(o2.stats()).to.deep.equal(before);
      expect(o2.next('telemetry', 0, 1000).map((r) => r.seq)).to.deep.equal(live);
      expect(o2.next('telemetry', 0, 1000).map((r) => r.payload.toString())).to.deep.equal(live.map((q) => `p${q - 1}`));
    });
  }

  it('migrates an outbox of one row per message (schema 7) into segments of up to 256 per class, records and numbering intact', () => {
    const raw = new Database(file);
    raw.pragma('journal_mode = WAL');
    for (const m of MIGRATIONS.slice(0, 7)) raw.exec(m.sql);
    raw.pragma('user_version = 7');
    const insert = raw.prepare(
      'INSERT INTO outbox (seq, cls, local_topic, topic, payload, qos, properties, created_at, expires_at, size) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
    );
    // A binary payload with NUL bytes, a non-ASCII topic, properties, an expiry, an empty payload.
    insert.run(3, 2, 'truck/gps/é', 'fleet/gw1/gps/é', Buffer.from([0, 1, 0, 255]), 1, '{"contentType":"x"}', 1000, 0, 60);
    insert.run(5, 0, 'truck/alarm', 'fleet/gw1/alarm', Buffer.alloc(0), 2, null, 1001, 99_000_000_000_000, 50);
    insert.run(9, 2, 'truck/gps/é', 'fleet/gw1/gps/é', Buffer.from('second'), 0, null, 1002, 0, 61);
    // And 600 bulk rows with NUL bytes everywhere in their payloads: three segments (256, 256, 88).
    for (let i = 0; i < 600; i++) insert.run(100 + i, 3, 'b', 'fleet/gw1/b', Buffer.from([0, i & 255, 0, i >> 8]), 1, null, 2000 + i, 0, 40);
    raw.prepare('UPDATE outbox_meta SET last_seq = 4').run();
    raw.close();

    const { state, store } = openStore();
    expect(state.db.pragma('user_version', { simple: true })).to.equal(SCHEMA_VERSION);
    expect(store.lastSeq).to.equal(699);
    expect(store.totals().telemetry).to.deep.equal({ count: 2, bytes: 121 });
    expect(store.totals().alarm).to.deep.equal({ count: 1, bytes: 50 });
    const gps = store.readCommitted('telemetry', 0, 10);
    expect(gps.map((r) => [r.seq, r.localTopic, r.topic, [...r.payload], r.qos, r.createdAt, r.expiresAt, r.size, r.properties])).to.deep.equal([
      [3, 'truck/gps/é', 'fleet/gw1/gps/é', [0, 1, 0, 255], 1, 1000, 0, 60, { contentType: 'x' }],
      [9, 'truck/gps/é', 'fleet/gw1/gps/é', [...Buffer.from('second')], 0, 1002, 0, 61, undefined],
    ]);
    const [alarm] = store.readCommitted('alarm', 0, 10);
    expect([alarm?.seq, alarm?.payload.length, alarm?.qos, alarm?.expiresAt]).to.deep.equal([5, 0, 2, 99_000_000_000_000]);
    expect(state.db.prepare("SELECT count(*) FROM sqlite_schema WHERE name = 'outbox'").pluck().get()).to.equal(0);
    // Segments of up to 256 records of a class.
    expect(state.db.prepare('SELECT id, cls, last_seq, count, min_expires FROM outbox_segments ORDER BY id').raw(true).all()).to.deep.equal([
      [3, 2, 9, 2, 0],
      [5, 0, 5, 1, 99_000_000_000_000],
      [100, 3, 355, 256, 0],
      [356, 3, 611, 256, 0],
      [612, 3, 699, 88, 0],
    ]);
    const bulk = store.readCommitted('bulk', 0, 1000);
    expect(bulk.map((r) => [r.seq, [...r.payload], r.createdAt])).to.deep.equal(
      Array.from({ length: 600 }, (_, i) => [100 + i, [0, i & 255, 0, i >> 8], 2000 + i]),
    );
    expect(store.totals().bulk).to.deep.equal({ count: 600, bytes: 600 * 40 });
  });

  it('deletes alone wait for a commit: until flushDeletes(), an append, 1,024 of them, or 20 ms', async () => {
    const { state, store } = openStore();
    const o = createOutbox({ store, budgetBytes: 1 << 24, minFreeBytes: 0 });
    for (let i = 0; i < 1100; i++) o.append(rec('event', 'e', `m${i}`));
    await state.commit();
    let commits = 0;
    store.onDeletesCommitted(() => commits++);
    const committed = (): Promise<void> => new Promise((resolve) => {
      const off = store.onDeletesCommitted(() => {
        off();
        resolve();
      });
    });
    const turns = async (n: number): Promise<void> => {
      for (let i = 0; i < n; i++) await new Promise((r) => setImmediate(r));
    };

    // flushDeletes(): now.
    o.remove(1);
    o.remove(2);
    await turns(3);
    expect(store.deletesPending, 'not committed at the end of the turn').to.equal(2);
    expect(commits).to.equal(0);
    let done = committed();
    o.flushRemovals?.();
    await done;
    expect(store.deletesPending).to.equal(0);
    expect(liveSeqsOnDisk(state.db)).to.not.include.members([1, 2]);

    // An append's commit takes pending deletes along.
    o.remove(3);
    done = committed();
    o.append(rec('event', 'e', 'new'));
    await done;
    expect(store.deletesPending).to.equal(0);
    expect(liveSeqsOnDisk(state.db)).to.not.include(3);

    // 1,024 deletes go at once.
    done = committed();
    for (let seq = 4; seq < 4 + 1024; seq++) o.remove(seq);
    await done;
    expect(liveSeqsOnDisk(state.db)[0]).to.equal(4 + 1024);

    // One delete alone: committed by the timer.
    const before = commits;
    done = committed();
    o.remove(1028);
    expect(store.deletesPending).to.equal(1);
    await done;
    expect(commits).to.equal(before + 1);
    expect(liveSeqsOnDisk(state.db)).to.not.include(1028);
  });

  describe('one transaction with the broker journal', () => {
    it('commit() runs when only the outbox has pending work, and onCommitted follows it', async () => {
      const { state, store } = openStore();
      const o = createOutbox({ store, budgetBytes: 1 << 20, minFreeBytes: 0 });
      const seen: number[] = [];
      o.onCommitted((seq) => seen.push(seq));
      expect(state.pending).to.equal(false);
      o.append(rec('alarm', 'a', '1'));
      expect(state.pending).to.equal(true);
      await state.commit();
      expect(state.pending).to.equal(false);
      expect(seen).to.deep.equal([1]);
      o.remove(1);
      expect(state.pending).to.equal(true);
      await state.commit();
      expect(seen).to.deep.equal([1]); // a removal makes nothing new readable
      expect(countRows(state.db, 'outbox_segments')).to.equal(0);
    });

    it('work added from an onCommitted listener gets a commit of its own', async () => {
      const { state, store } = openStore();
      const o = createOutbox({ store, budgetBytes: 1 << 20, minFreeBytes: 0 });
      const seen: number[] = [];
      const second = new Promise<void>((resolve) => {
        o.onCommitted((seq) => {
          seen.push(seq);
          if (seq === 1) o.append(rec('event', 'e', 'from the listener'));
          else resolve();
        });
      });
      o.append(rec('event', 'e', 'first'));
      await state.commit();
      await second;
      expect(seen).to.deep.equal([1, 2]);
      expect(state.pending).to.equal(false);
    });

    it('an outbox write that fails rolls back the journal changes of the same batch; the retry writes both', async () => {
      const { state, store } = openStore();
      const o = createOutbox({ store, budgetBytes: 1 << 20, minFreeBytes: 0 });
      const seen: number[] = [];
      o.onCommitted((seq) => seen.push(seq));
      state.db.exec("CREATE TRIGGER fail_outbox BEFORE INSERT ON outbox_segments BEGIN SELECT RAISE(ABORT, 'injected'); END");

      // What the broker does for a PUBLISH routed uplink and stored for a persistent session.
      state.putSession('truck-1', 3600, 0);
      state.putMessage(1, message('truck/telemetry/gps'));
      o.append(rec('telemetry', 'truck/telemetry/gps', 'fix'));
      let error: unknown;
      await state.commit().catch((err: unknown) => (error = err));
      expect(error).to.be.instanceOf(StoreError);
      expect(state.fault).to.equal('io_error');
      expect(state.pending).to.equal(true);
      expect(seen).to.deep.equal([]);

      // Nothing of the batch reached the database: another connection sees neither part.
      const reader = new Database(file, { readonly: true });
      try {
        expect(reader.prepare('SELECT count(*) FROM sessions').pluck().get()).to.equal(0);
        expect(reader.prepare('SELECT count(*) FROM messages').pluck().get()).to.equal(0);
        expect(countRows(reader, 'outbox_segments')).to.equal(0);
      } finally {
        reader.close();
      }
      expect(o.next('telemetry', 0, 10)).to.deep.equal([]);

      state.db.exec('DROP TRIGGER fail_outbox');
      await state.commit();
      expect(state.fault).to.equal(null);
      expect(state.pending).to.equal(false);
      expect(seen).to.deep.equal([1]);
      state.close();

      const again = openStore();
      expect(again.state.load().sessions.map((s) => s.clientId)).to.deep.equal(['truck-1']);
      const o2 = createOutbox({ store: again.store, budgetBytes: 1 << 20, minFreeBytes: 0 });
      expect(o2.next('telemetry', 0, 10).map((r) => r.payload.toString())).to.deep.equal(['fix']);
    });

    it('a read-only database: the journal and the outbox both wait, and both commit once writable', async () => {
      const { state, store } = openStore();
      const o = createOutbox({ store, budgetBytes: 1 << 20, minFreeBytes: 0 });
      o.append(rec('event', 'e', 'first'));
      await state.commit();
      state.execOnWriter('PRAGMA query_only = ON');
      state.putSession('ro', 60, 0);
      o.append(rec('event', 'e', 'second'));
      o.remove(1);
      await state.commit().catch(() => {});
      expect(state.fault).to.equal('read_only');
      expect(o.next('event', 0, 10)).to.deep.equal([]); // 1 is removed (pending), 2 not committed
      state.execOnWriter('PRAGMA query_only = OFF');
      await state.commit();
      expect(o.next('event', 0, 10).map((r) => r.seq)).to.deep.equal([2]);
      expect(state.load().sessions.map((s) => s.clientId)).to.deep.equal(['ro']);
      expect(liveSeqsOnDisk(state.db)).to.deep.equal([2]);
    });

    it('a participant whose statement fails: the whole transaction is rolled back and retried', async () => {
      const { state } = openStore();
      let sealed = 0;
      let committed = 0;
      const insert = state.statement('INSERT INTO outbox_meta (id, last_seq) VALUES (2, 7)');
      const p: CommitParticipant = {
        get hasPending() {
          return sealed === 0;
        },
        seal(batch) {
          sealed++;
          batch.run(insert);
        },
        committed() {
          committed++;
        },
      };
      state.db.exec("CREATE TRIGGER fail_meta BEFORE INSERT ON outbox_meta BEGIN SELECT RAISE(ABORT, 'injected'); END");
      const detach = state.attachParticipant(p);
      state.putSession('s', 60, 0);
      await state.commit().catch(() => {});
      expect(state.fault).to.equal('io_error');
      expect(committed).to.equal(0);
      expect(state.db.prepare('SELECT count(*) FROM sessions').pluck().get()).to.equal(0);
      expect(state.db.prepare('SELECT count(*) FROM outbox_meta').pluck().get()).to.equal(1);
      state.db.exec('DROP TRIGGER fail_meta');
      await state.commit();
      // Sealed once; the failed statements were sent again with the retry.
      expect([sealed, committed]).to.deep.equal([1, 1]);
      expect(state.db.prepare('SELECT count(*) FROM sessions').pluck().get()).to.equal(1);
      expect(state.db.prepare('SELECT count(*) FROM outbox_meta').pluck().get()).to.equal(2);
      detach();
    });

    it('close() commits the outbox pending work with the batch', () => {
      const { state, store } = openStore();
      const o = createOutbox({ store, budgetBytes: 1 << 20, minFreeBytes: 0 });
      o.append(rec('bulk', 'b', 'at close'));
      state.close();
      const again = openStore();
      expect(again.store.totals().bulk.count).to.equal(1);
      expect(again.store.readCommitted('bulk', 0, 5).map((r) => r.payload.toString())).to.deep.equal(['at close']);
    });
  });
});

describe('MemoryStateStore participants', () => {
  it('seals and commits a participant at commit(); a throwing seal rejects and keeps the work', async () => {
    const host = new MemoryStateStore();
    const store = new MemoryOutboxStore({ host });
    const o = createOutbox({ store, budgetBytes: 1 << 20, minFreeBytes: 0 });
    o.append(rec('event', 'e', '1'));
    expect(host.pending).to.equal(true);
    await host.commit();
    expect(host.pending).to.equal(false);
    expect(o.next('event', 0, 5).map((r) => r.seq)).to.deep.equal([1]);

    let fail = true;
    let done = 0;
    host.attachParticipant({
      get hasPending() {
        return done === 0;
      },
      seal() {
        if (fail) throw new Error('boom');
      },
      committed() {
        done++;
      },
    });
    let error: unknown;
    await host.commit().catch((err: unknown) => (error = err));
    expect(error).to.be.instanceOf(StoreError);
    expect(host.pending).to.equal(true);
    fail = false;
    await host.commit();
    expect(done).to.equal(1);
    expect(host.pending).to.equal(false);
  });
});
