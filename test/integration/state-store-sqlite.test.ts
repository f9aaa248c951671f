// SqliteStateStore on real files: the conformance suite (reopen = close and open the file again),
// then what only a database has: pragmas, schema versions, corrupt files, a full disk, a crash.
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import Database from 'better-sqlite3';
import fc from 'fast-check';
import { MemoryStateStore } from '../../src/store/memory-state-store.js';
import { openDatabase, PAGE_SIZE, StoreVersionError, WAL_AUTOCHECKPOINT_BYTES, type StoreLog } from '../../src/store/db.js';
import { SCHEMA_VERSION } from '../../src/store/migrations.js';
import { SqliteStateStore } from '../../src/store/sqlite-state-store.js';
import { StoreError, type StateStore, type StoredMessage, type StoredState } from '../../src/store/state-store.js';
import { delivery, describeStateStoreConformance, message } from '../unit/state-store-conformance.js';

interface LogEntry {
  level: 'info' | 'warn' | 'error';
  obj: object;
  msg: string | undefined;
}

function captureLog(): StoreLog & { entries: LogEntry[] } {
  const entries: LogEntry[] = [];
  return {
    entries,
    info: (obj, msg) => void entries.push({ level: 'info', obj, msg }),
    warn: (obj, msg) => void entries.push({ level: 'warn', obj, msg }),
    error: (obj, msg) => void entries.push({ level: 'error', obj, msg }),
  };
}

const quiet: StoreLog = { info: () => {}, warn: () => {}, error: () => {} };

function tempDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'convoy-store-'));
}

function corruptCopies(dir: string, name = 'convoy.db'): string[] {
  return fs.readdirSync(dir).filter((f) => f.startsWith(`${name}.corrupt-`));
}

describeStateStoreConformance('SqliteStateStore', () => {
  const dir = tempDir();
  const file = path.join(dir, 'convoy.db');
  let current = new SqliteStateStore({ path: file, log: quiet });
  return Promise.resolve({
    store: current,
    reopen: () => {
      current.close();
      current = new SqliteStateStore({ path: file, log: quiet });
      return Promise.resolve(current);
    },
    cleanup: () => {
      current.close();
      fs.rmSync(dir, { recursive: true, force: true });
      return Promise.resolve();
    },
  });
});

describe('SqliteStateStore on disk', () => {
  let dir: string;
  let file: string;
  const open: { close(): void }[] = [];

  beforeEach(() => {
    dir = tempDir();
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

  function newStore(log: StoreLog = quiet, commitWindowMs?: number): SqliteStateStore {
    const store = new SqliteStateStore({ path: file, log, ...(commitWindowMs !== undefined ? { commitWindowMs } : {}) });
    open.push(store);
    return store;
  }

  /** A store file with some of everything, closed. */
  async function populate(messages = 200, payloadBytes = 1000): Promise<void> {
    const store = newStore();
    store.putSession('truck-1', 3600, 0);
    store.putSubscription('truck-1', { filter: 'cmd/#', qos: 1, noLocal: false, retainAsPublished: false, retainHandling: 0 });
    for (let id = 1; id <= messages; id++) {
      store.putMessage(id, message(`t/${id}`, { payload: Buffer.alloc(payloadBytes, id) }));
      store.putDelivery('truck-1', delivery(id, id));
    }
    store.putRetained(message('status', { retain: true }));
    await store.commit();
    store.close();
  }

  describe('database settings', () => {
    it('uses WAL, synchronous FULL, a busy timeout and the current schema version', () => {
      const { db } = openDatabase(file, { log: quiet });
      try {
        expect(db.pragma('journal_mode', { simple: true })).to.equal('wal');
        expect(db.pragma('synchronous', { simple: true })).to.equal(2); // FULL
        expect(db.pragma('busy_timeout', { simple: true })).to.be.at.least(1000);
        expect(db.pragma('wal_autocheckpoint', { simple: true })).to.be.greaterThan(0);
        expect(db.pragma('user_version', { simple: true })).to.equal(SCHEMA_VERSION);
        expect(db.pragma('foreign_keys', { simple: true })).to.equal(0);
      } finally {
        db.close();
      }
    });

    it('creates a new database with 2 KB pages and keeps the page size of an existing one', () => {
      const fresh = openDatabase(file, { log: quiet });
      try {
        expect(fresh.db.pragma('page_size', { simple: true })).to.equal(PAGE_SIZE);
        expect(fresh.db.pragma('wal_autocheckpoint', { simple: true })).to.equal(WAL_AUTOCHECKPOINT_BYTES / PAGE_SIZE);
      } finally {
        fresh.db.close();
      }
      // A database made with 4 KB pages (an older Convoy's) stays as it is, and works.
      const old = path.join(dir, 'old.db');
      const raw = new Database(old);
      raw.pragma('page_size = 4096');
      raw.pragma('journal_mode = WAL');
      raw.close();
      const reopened = openDatabase(old, { log: quiet });
      try {
        expect(reopened.db.pragma('page_size', { simple: true })).to.equal(4096);
        expect(reopened.db.pragma('wal_autocheckpoint', { simple: true })).to.equal(WAL_AUTOCHECKPOINT_BYTES / 4096);
        expect(reopened.db.pragma('user_version', { simple: true })).to.equal(SCHEMA_VERSION);
      } finally {
        reopened.db.close();
      }
    });

    it('opens an existing database without migrating or moving it', async () => {
      await populate(3);
      const log = captureLog();
      const result = openDatabase(file, { log });
      result.db.close();
      expect(result.recovered).to.equal(undefined);
      expect(corruptCopies(dir)).to.deep.equal([]);
      expect(log.entries.filter((e) => e.level !== 'info')).to.deep.equal([]);
    });

    it('rejects commitWindowMs beyond a few ms', () => {
      expect(() => new SqliteStateStore({ path: file, log: quiet, commitWindowMs: 1000 })).to.throw(RangeError);
    });

    it('groups changes within commitWindowMs into one transaction', async () => {
      const store = newStore(quiet, 20);
      store.putSession('w', 60, 0);
      const first = store.commit();
      await new Promise((resolve) => setTimeout(resolve, 5));
      store.putSubscription('w', { filter: 'a', qos: 1, noLocal: false, retainAsPublished: false, retainHandling: 0 });
      const second = store.commit();
      expect(first).to.equal(second);
      expect(store.pending).to.equal(true);
      await second;
      expect(store.pending).to.equal(false);
      expect(store.db.prepare('SELECT count(*) FROM subscriptions').pluck().get()).to.equal(1);
    });

    it('commits what is pending on close()', () => {
      const store = newStore();
      store.putSession('c', 60, 0);
      store.close();
      const again = newStore();
      expect(again.load().sessions.map((s) => s.clientId)).to.deep.equal(['c']);
    });

    it('stores a single-delivery message inline, and gives it a row when a second delivery references it', async () => {
      const store = newStore();
      store.putSession('a', 60, 0);
      store.putSession('b', 60, 0);
      store.putMessage(1, message('inline/1', { payload: Buffer.from('one') }));
      store.putDelivery('a', delivery(1, 1));
      store.putMessage(2, message('row/2', { payload: Buffer.from('two') }));
      store.putDelivery('a', delivery(2, 2));
      await store.commit();
      // 1 lives in a's delivery row; 2, the batch's highest id, has a row of its own.
      expect(store.db.prepare('SELECT id FROM messages').pluck().all()).to.deep.equal([2]);
      expect(store.db.prepare("SELECT m_topic FROM deliveries WHERE client_id = 'a' AND seq = 1").pluck().get()).to.equal('inline/1');
      // A state change keeps the inline copy.
      store.putDelivery('a', delivery(1, 1, { state: 'publish', packetId: 9 }));
      // A second delivery of message 1 (a later batch): the row is copied from a's delivery.
      store.putDelivery('b', delivery(1, 1));
      await store.commit();
      expect(store.db.prepare('SELECT id FROM messages ORDER BY id').pluck().all()).to.deep.equal([1, 2]);
      store.deleteDelivery('a', 1);
      await store.commit();
      store.close();
      const state = newStore().load();
      const b = state.sessions.find((x) => x.clientId === 'b')!;
      expect(b.deliveries.map((d) => d.messageId)).to.deep.equal([1]);
      expect(state.messages.get(1)?.topic).to.equal('inline/1');
      expect(String(state.messages.get(1)?.payload)).to.equal('one');
      expect(state.sessions.find((x) => x.clientId === 'a')!.deliveries.map((d) => [d.seq, d.state])).to.deep.equal([[2, 'queued']]);
    });

    it('deletes message rows once unreferenced, keeping only the highest id', async () => {
      await populate(50, 200);
      const store = newStore();
      for (let seq = 1; seq <= 50; seq++) store.deleteDelivery('truck-1', seq);
      await store.commit();
      expect(store.db.prepare('SELECT id FROM messages').pluck().all()).to.deep.equal([50]);
      store.putMessage(51, message('next'));
      store.putDelivery('truck-1', delivery(51, 51));
      await store.commit();
      expect(store.db.prepare('SELECT id FROM messages ORDER BY id').pluck().all()).to.deep.equal([51]);
      expect(store.load().lastMessageId).to.equal(51);
    });

    it('sweeps messages left unreferenced by a crash at open', async () => {
      await populate(5, 10);
      const raw = new Database(file);
      raw.exec('DELETE FROM deliveries');
      raw.close();
      const store = newStore();
      expect(store.db.prepare('SELECT id FROM messages').pluck().all()).to.deep.equal([5]);
      expect(store.load().messages.size).to.equal(0);
      expect(store.load().lastMessageId).to.equal(5);
    });
  });

  describe('schema versions', () => {
    it('refuses a database from a newer Convoy with a clear error and leaves it in place', async () => {
      await populate(3);
      const raw = new Database(file);
      raw.pragma(`user_version = ${SCHEMA_VERSION + 4}`);
      raw.close();
      const before = fs.readFileSync(file);
      let error: unknown;
      try {
        newStore();
      } catch (err) {
        error = err;
      }
      expect(error).to.be.instanceOf(StoreVersionError);
      const e = error as StoreVersionError;
      expect(e.message).to.contain(file);
      expect(e.message).to.contain(`version ${SCHEMA_VERSION + 4}`);
      expect(e.message).to.contain(`up to version ${SCHEMA_VERSION}`);
      expect(e.message).to.match(/newer Convoy/);
      expect(e.version).to.equal(SCHEMA_VERSION + 4);
      expect(e.supported).to.equal(SCHEMA_VERSION);
      expect(corruptCopies(dir)).to.deep.equal([]);
      expect(fs.readFileSync(file).equals(before)).to.equal(true);
    });
  });

  describe('corrupt databases are moved aside', () => {
    /** Opens the store on a broken file: expects it moved aside and a working fresh store. */
    async function expectRecovered(reasonPattern: RegExp): Promise<void> {
      const log = captureLog();
      const store = newStore(log);
      expect(store.recovered, 'recovered').to.not.equal(undefined);
      expect(store.recovered?.reason).to.match(reasonPattern);
      const copies = corruptCopies(dir);
      expect(copies.filter((f) => !f.endsWith('-wal') && !f.endsWith('-shm'))).to.have.length(1);
      expect(store.recovered?.movedTo).to.equal(path.join(dir, copies.find((f) => /corrupt-[^-]*-[^-]*-[^-]*Z$/.test(f)) ?? copies[0]!));
      expect(fs.existsSync(store.recovered!.movedTo)).to.equal(true);
      expect(log.entries.some((e) => e.level === 'error' && /corrupt/.test(e.msg ?? ''))).to.equal(true);

      const state = store.load();
      expect(state.sessions).to.deep.equal([]);
      store.putSession('after', 60, 0);
      store.putMessage(1, message('after'));
      store.putDelivery('after', delivery(1, 1));
      await store.commit();
      store.close();
      const again = newStore();
      expect(again.recovered).to.equal(undefined);
      expect(again.load().sessions.map((s) => s.clientId)).to.deep.equal(['after']);
    }

    it('garbage header', async () => {
      await populate();
      const fd = fs.openSync(file, 'r+');
      fs.writeSync(fd, Buffer.alloc(100, 'not an SQLite header '), 0, 100, 0);
      fs.closeSync(fd);
      await expectRecovered(/SQLITE_NOTADB|not a database/);
    });

    it('a file that is not a database at all', async () => {
      fs.writeFileSync(file, 'key = "value"\n'.repeat(100));
      await expectRecovered(/SQLITE_NOTADB|not a database/);
    });

    it('truncated database (half of its pages missing)', async () => {
      await populate();
      const size = fs.statSync(file).size;
      fs.truncateSync(file, Math.floor(size / 2 / 4096) * 4096);
      await expectRecovered(/CORRUPT|malformed|integrity|SHORT_READ/i);
    });

    it('truncated database (inside its header)', async () => {
      await populate();
      fs.truncateSync(file, 60);
      await expectRecovered(/NOTADB|not a database|CORRUPT|malformed|integrity/i);
    });

    it('a damaged table page', async () => {
      await populate();
      const fd = fs.openSync(file, 'r+');
      const garbage = Buffer.alloc(4096);
      for (let i = 0; i < garbage.length; i++) garbage[i] = (i * 31 + 7) & 0xff;
      fs.writeSync(fd, garbage, 0, garbage.length, 4096 * 5);
      fs.closeSync(fd);
      await expectRecovered(/CORRUPT|malformed|integrity/i);
    });

    it('wrong schema: the version says current but the tables are not there', async () => {
      const raw = new Database(file);
      raw.exec('CREATE TABLE something_else (x)');
      raw.pragma(`user_version = ${SCHEMA_VERSION}`);
      raw.close();
      await expectRecovered(/table sessions is missing/);
    });

    it('wrong schema: version 0 but the file already has tables', async () => {
      const raw = new Database(file);
      raw.exec('CREATE TABLE sessions (client_id TEXT)');
      raw.close();
      await expectRecovered(/schema version 0/);
    });

    it('wrong schema: a table lacks a column', async () => {
      await populate(1);
      const raw = new Database(file);
      raw.exec('ALTER TABLE deliveries DROP COLUMN share_key');
      raw.close();
      await expectRecovered(/deliveries has no column share_key/);
    });

    it('moves the -wal and -shm files with it', async () => {
      await populate(5);
      // A WAL from some other database (a different salt) next to a garbage main file.
      const fd = fs.openSync(file, 'r+');
      fs.writeSync(fd, Buffer.alloc(100, 0x41), 0, 100, 0);
      fs.closeSync(fd);
      fs.writeFileSync(`${file}-wal`, Buffer.alloc(5000, 0x42));
      const store = newStore();
      expect(store.recovered).to.not.equal(undefined);
      expect(fs.readFileSync(`${store.recovered!.movedTo}-wal`).equals(Buffer.alloc(5000, 0x42))).to.equal(true);
    });

    it('only checks the structure of a database too large for the time budget', async () => {
      await populate(300, 1000);
      const log = captureLog();
      const { db, recovered } = openDatabase(file, { log, integrityCheckMs: 0 });
      db.close();
      expect(recovered).to.equal(undefined);
      expect(log.entries.some((e) => e.level === 'warn' && /structure only/.test(e.msg ?? ''))).to.equal(true);
    });
  });

  describe('WAL after a crash', () => {
    /** Leaves `file` with a WAL holding transactions not yet checkpointed, as a crash would. */
    async function crashCopy(): Promise<{ walSize: number }> {
      await populate(20, 100); // checkpointed by close()
      const store = newStore();
      store.db.pragma('wal_autocheckpoint = 0');
      for (let id = 21; id <= 30; id++) {
        store.putMessage(id, message(`late/${id}`, { payload: Buffer.alloc(3000, id) }));
        store.putDelivery('truck-1', delivery(id, id));
        await store.commit(); // one transaction each
      }
      const crashDir = path.join(dir, 'crash');
      fs.mkdirSync(crashDir);
      for (const suffix of ['', '-wal']) fs.copyFileSync(`${file}${suffix}`, path.join(crashDir, `convoy.db${suffix}`));
      store.close();
      for (const suffix of ['', '-wal', '-shm']) fs.rmSync(`${file}${suffix}`, { force: true });
      for (const suffix of ['', '-wal']) fs.renameSync(path.join(crashDir, `convoy.db${suffix}`), `${file}${suffix}`);
      return { walSize: fs.statSync(`${file}-wal`).size };
    }

    it('an intact WAL: every committed transaction is there', async () => {
      await crashCopy();
      const store = newStore();
      expect(store.recovered).to.equal(undefined);
      expect(store.load().sessions[0]?.deliveries).to.have.length(30);
    });

    it('a truncated WAL (torn last write) keeps the transactions before the cut and is not corrupt', async () => {
      const { walSize } = await crashCopy();
      fs.truncateSync(`${file}-wal`, Math.floor(walSize * 0.6));
      const store = newStore();
      // SQLite ignores the frames after the last complete commit: the database is consistent.
      expect(store.recovered).to.equal(undefined);
      expect(corruptCopies(dir)).to.deep.equal([]);
      const seqs = store.load().sessions[0]!.deliveries.map((d) => d.seq);
      expect(seqs.length).to.be.within(20, 29);
      expect(seqs).to.deep.equal(Array.from({ length: seqs.length }, (_, i) => i + 1));
      store.putMessage(100, message('after'));
      store.putDelivery('truck-1', delivery(100, 100));
      await store.commit();
    });

    it('a truncated WAL header: back to the last checkpoint', async () => {
      await crashCopy();
      fs.truncateSync(`${file}-wal`, 20);
      const store = newStore();
      expect(store.recovered).to.equal(undefined);
      expect(store.load().sessions[0]?.deliveries).to.have.length(20);
    });
  });

  describe('a crash after a commit', () => {
    it('keeps what a SIGKILLed process had committed', async () => {
      const storeModule = new URL('../../src/store/sqlite-state-store.js', import.meta.url).href;
      const script = `
        import { SqliteStateStore } from ${JSON.stringify(storeModule)};
        const log = { info() {}, warn() {}, error() {} };
        const store = new SqliteStateStore({ path: ${JSON.stringify(file)}, log });
        store.putSession('k', 60, 0);
        for (let id = 1; id <= 500; id++) {
          store.putMessage(id, { topic: 'k/' + id, payload: Buffer.alloc(200, id), qos: 1, retain: false, senderId: 's', receivedAt: 1, expiresAt: 0 });
          store.putDelivery('k', { seq: id, messageId: id, qos: 1, retain: false, state: 'queued', packetId: 0 });
          if (id % 50 === 0) await store.commit();
        }
        store.putRetained({ topic: 'r', payload: Buffer.from('x'), qos: 1, retain: true, senderId: 's', receivedAt: 1, expiresAt: 0 });
        await store.commit();
        process.stdout.write('committed\\n', () => process.kill(process.pid, 'SIGKILL'));
      `;
      const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
      let out = '';
      child.stdout.on('data', (b: Buffer) => (out += b.toString()));
      const signal = await new Promise<NodeJS.Signals | null>((resolve) => child.on('exit', (_code, sig) => resolve(sig)));
      expect(signal).to.equal('SIGKILL');
      expect(out).to.equal('committed\n');
      expect(fs.existsSync(`${file}-wal`), 'the WAL was not checkpointed away').to.equal(true);
      const log = captureLog();
      const store = newStore(log);
      expect(log.entries.map((e) => e.msg)).to.include('store: the previous run ended without closing the database (a crash or a power cut)');
      const state = store.load();
      expect(state.sessions[0]?.deliveries).to.have.length(500);
      expect(state.messages.size).to.equal(500);
      expect(state.retained).to.have.length(1);
      expect(state.lastMessageId).to.equal(500);
      expect(state.unclean, 'a crash is told from the WAL left behind').to.equal(true);
    });

    it('tells a clean close from a crash: close() leaves no WAL', async () => {
      const first = newStore();
      expect(first.load().unclean, 'a new database').to.equal(false);
      first.putSession('k', 60, 0);
      await first.commit();
      first.close();
      expect(fs.existsSync(`${file}-wal`)).to.equal(false);
      const log = captureLog();
      const again = newStore(log);
      expect(again.load().unclean).to.equal(false);
      expect(log.entries.map((e) => e.msg).filter((m) => m?.includes('previous run'))).to.deep.equal([]);
    });
  });

  describe('faults', () => {
    it('read-only: commit rejects, fault is set, the batch is kept and retried', async () => {
      const log = captureLog();
      const store = newStore(log);
      store.putSession('ro', 60, 0);
      await store.commit();
      store.execOnWriter('PRAGMA query_only = ON');
      store.putMessage(1, message('ro'));
      store.putDelivery('ro', delivery(1, 1));
      let error: unknown;
      await store.commit().catch((err: unknown) => (error = err));
      expect(error).to.be.instanceOf(StoreError);
      expect((error as StoreError).fault).to.equal('read_only');
      expect(store.fault).to.equal('read_only');
      expect(store.pending).to.equal(true);
      store.putMessage(2, message('ro2'));
      store.putDelivery('ro', delivery(2, 2));
      await store.commit().catch(() => {});
      expect(log.entries.filter((e) => e.level === 'error')).to.have.length(1); // logged once per fault
      store.execOnWriter('PRAGMA query_only = OFF');
      await store.commit();
      expect(store.fault).to.equal(null);
      expect(store.pending).to.equal(false);
      expect(log.entries.some((e) => e.level === 'info' && /again/.test(e.msg ?? ''))).to.equal(true);
      store.close();
      const again = newStore();
      expect(again.load().sessions[0]?.deliveries.map((d) => d.messageId)).to.deep.equal([1, 2]);
    });

    describe('disk full on a small tmpfs', function () {
      let mountDir: string | undefined;

      before(function () {
        // Skipped only where a tmpfs cannot be mounted (not Linux, not root: CI runs as root).
        // The fault logic itself is also covered by the read-only (query_only) test above.
        if (process.platform !== 'linux' || process.getuid?.() !== 0) this.skip();
        const target = fs.mkdtempSync(path.join(os.tmpdir(), 'convoy-tmpfs-'));
        try {
          execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=2m', 'tmpfs', target], { stdio: 'ignore' });
          mountDir = target;
        } catch {
          fs.rmdirSync(target);
          this.skip();
        }
      });

      after(() => {
        if (mountDir === undefined) return;
        execFileSync('umount', [mountDir]);
        fs.rmdirSync(mountDir);
      });

      it('ENOSPC: commit rejects with disk_full, stored data stays, the batch commits once space returns', async () => {
        const dbFile = path.join(mountDir!, 'convoy.db');
        const store = new SqliteStateStore({ path: dbFile, log: quiet });
        open.push(store);
        store.putSession('full', 60, 0);
        for (let id = 1; id <= 20; id++) {
          store.putMessage(id, message(`before/${id}`, { payload: Buffer.alloc(1000, id) }));
          store.putDelivery('full', delivery(id, id));
        }
        await store.commit();

        // Fill the filesystem.
        const filler = path.join(mountDir!, 'filler');
        const fd = fs.openSync(filler, 'w');
        const chunk = Buffer.alloc(16 * 1024, 1);
        try {
          for (;;) fs.writeSync(fd, chunk);
        } catch (err) {
          expect((err as NodeJS.ErrnoException).code).to.equal('ENOSPC');
        }
        try {
          for (;;) fs.writeSync(fd, chunk, 0, 512);
        } catch {
          // completely full now
        }
        fs.closeSync(fd);

        for (let id = 21; id <= 120; id++) {
          store.putMessage(id, message(`during/${id}`, { payload: Buffer.alloc(2000, id) }));
          store.putDelivery('full', delivery(id, id));
        }
        let error: unknown;
        await store.commit().catch((err: unknown) => (error = err));
        expect(error).to.be.instanceOf(StoreError);
        expect((error as StoreError).fault).to.equal('disk_full');
        expect(store.fault).to.equal('disk_full');
        expect(store.pending).to.equal(true);

        // What was committed before is still readable and intact.
        expect(store.load().sessions[0]?.deliveries).to.have.length(20);

        fs.rmSync(filler);
        await store.commit();
        expect(store.fault).to.equal(null);
        store.close();
        const again = new SqliteStateStore({ path: dbFile, log: quiet });
        open.push(again);
        const state = again.load();
        expect(state.sessions[0]?.deliveries).to.have.length(120);
        expect(state.messages.get(120)?.payload.equals(Buffer.alloc(2000, 120))).to.equal(true);
        again.close();
      });
    });
  });

  describe('the mirror of stored deliveries after a reopen', () => {
    // The store counts which deliveries on disk reference each message. After a reopen that
    // count is rebuilt by load() (one scan at start) or, if a change comes first, on demand.
    for (const loadFirst of [true, false]) {
      it(`a message stored inline moves to its own row when a second delivery references it (${loadFirst ? 'load() first' : 'a change first'})`, async () => {
        const first = newStore();
        first.putSession('c1', 60, 1);
        first.putSession('c2', 60, 1);
        first.putMessage(1, message('m/1'));
        first.putDelivery('c1', delivery(1, 1));
        first.putMessage(2, message('m/2')); // the highest id keeps a messages row; 1 stays inline
        first.putDelivery('c1', delivery(2, 2));
        await first.commit();
        first.close();

        const second = newStore();
        if (loadFirst) expect(second.load().sessions.find((x) => x.clientId === 'c1')?.deliveries).to.have.length(2);
        second.putDelivery('c2', delivery(1, 1));
        await second.commit();
        // c1's copy goes; the message must stay for c2.
        second.deleteDelivery('c1', 1);
        await second.commit();
        second.close();

        const third = newStore();
        const state = third.load();
        expect(state.sessions.find((x) => x.clientId === 'c2')?.deliveries.map((d) => d.messageId)).to.deep.equal([1]);
        expect(state.sessions.find((x) => x.clientId === 'c1')?.deliveries.map((d) => d.messageId)).to.deep.equal([2]);
        expect(state.messages.get(1)?.topic).to.equal('m/1');
        third.close();
      });
    }
  });

  describe('agrees with the memory store', () => {
    type Step =
      | { k: 'session'; c: number; expiry: number }
      | { k: 'deleteSession'; c: number }
      | { k: 'deliver'; c: number; seq: number; newMessage: boolean; state: 0 | 1 | 2 }
      | { k: 'ack'; c: number; seq: number }
      | { k: 'qos2'; c: number; id: number; del: boolean }
      | { k: 'commit' };
    const stepArb: fc.Arbitrary<Step> = fc.oneof(
      fc.record({ k: fc.constant('session' as const), c: fc.nat(2), expiry: fc.nat(100) }),
      fc.record({ k: fc.constant('deleteSession' as const), c: fc.nat(2) }),
      fc.record({
        k: fc.constant('deliver' as const),
        c: fc.nat(2),
        seq: fc.integer({ min: 1, max: 6 }),
        newMessage: fc.boolean(),
        state: fc.constantFrom(0 as const, 1 as const, 2 as const),
      }),
      fc.record({ k: fc.constant('ack' as const), c: fc.nat(2), seq: fc.integer({ min: 1, max: 6 }) }),
      fc.record({ k: fc.constant('qos2' as const), c: fc.nat(2), id: fc.integer({ min: 1, max: 4 }), del: fc.boolean() }),
      fc.constant({ k: 'commit' as const }),
    );

    function normalize(state: StoredState): unknown {
      return {
        sessions: [...state.sessions]
          .sort((a, b) => a.clientId.localeCompare(b.clientId))
          .map((s) => ({ ...s, incomingQos2: [...s.incomingQos2].sort((a, b) => a - b) })),
        messages: [...state.messages.entries()].sort((a, b) => a[0] - b[0]),
      };
    }

    it('random sequences of changes and commits load back the same (with a reopen)', async function () {
      this.timeout(60_000);
      await fc.assert(
        fc.asyncProperty(fc.array(stepArb, { maxLength: 60 }), async (steps) => {
          fs.rmSync(dir, { recursive: true, force: true });
          fs.mkdirSync(dir);
          const memory = new MemoryStateStore();
          let sqlite = new SqliteStateStore({ path: file, log: quiet });
          try {
            // A model of which message each delivery references: a message is only queued again
            // while some delivery still references it (as the broker does).
            const live = new Map<string, number>();
            let id = 0;
            const apply = (store: StateStore, step: Step, messageId: number, newMessage: boolean): void => {
              const client = `c${'c' in step ? step.c : 0}`;
              switch (step.k) {
                case 'session':
                  store.putSession(client, step.expiry, 0);
                  break;
                case 'deleteSession':
                  store.deleteSession(client);
                  break;
                case 'deliver':
                  if (newMessage) store.putMessage(messageId, message(`m/${messageId}`));
                  store.putDelivery(client, delivery(step.seq, messageId, { state: (['queued', 'publish', 'pubrel'] as const)[step.state], packetId: step.state }));
                  break;
                case 'ack':
                  store.deleteDelivery(client, step.seq);
                  break;
                case 'qos2':
                  if (step.del) store.deleteIncomingQos2(client, step.id);
                  else store.putIncomingQos2(client, step.id);
                  break;
                case 'commit':
                  break;
              }
            };
            const commits: Promise<void>[] = [];
            for (const step of steps) {
              let newMessage = false;
              if (step.k === 'deliver') {
                newMessage = step.newMessage || ![...live.values()].includes(id);
                if (newMessage) id++;
                live.set(`${step.c}/${step.seq}`, id);
              } else if (step.k === 'ack') {
                live.delete(`${step.c}/${step.seq}`);
              } else if (step.k === 'deleteSession') {
                for (const key of [...live.keys()]) if (key.startsWith(`${step.c}/`)) live.delete(key);
              }
              apply(memory, step, id, newMessage);
              apply(sqlite, step, id, newMessage);
              if (step.k === 'commit') {
                commits.push(memory.commit(), sqlite.commit());
                if (commits.length % 4 === 0) await Promise.all(commits);
              }
            }
            await Promise.all([...commits, memory.commit(), sqlite.commit()]);
            sqlite.close();
            sqlite = new SqliteStateStore({ path: file, log: quiet });
            const fromDisk = sqlite.load();
            const inMemory = memory.load();
            expect(normalize(fromDisk)).to.deep.equal(normalize(inMemory));
            // SQLite never writes a message acknowledged before its batch was sealed, so its last id
            // may be lower; never lower than an id it holds, never above what was given out.
            expect(fromDisk.lastMessageId).to.be.at.most(inMemory.lastMessageId);
            expect(fromDisk.lastMessageId).to.be.at.least(Math.max(0, ...fromDisk.messages.keys()));
          } finally {
            sqlite.close();
          }
        }),
        { numRuns: 150 },
      );
    });
  });

  describe('throughput (printed)', () => {
    it('measures rows per second for 1, 10, 100 and 1000 deliveries per commit (200-byte payloads)', async function () {
      this.timeout(120_000);
      const store = newStore();
      store.putSession('bench', 3600, 0);
      await store.commit();
      const payload = Buffer.alloc(200, 0x61);
      let id = 0;
      const lines: string[] = [];
      for (const perCommit of [1, 10, 100, 1000]) {
        const commits = Math.max(5, Math.min(200, Math.floor(4000 / perCommit)));
        const written0 = writeBytes();
        const started = process.hrtime.bigint();
        for (let c = 0; c < commits; c++) {
          for (let i = 0; i < perCommit; i++) {
            id++;
            const msg: StoredMessage = { topic: 'fleet/truck/telemetry', payload, qos: 1, retain: false, senderId: 'gw', receivedAt: id, expiresAt: 0 };
            store.putMessage(id, msg);
            store.putDelivery('bench', { seq: id, messageId: id, qos: 1, retain: false, state: 'queued', packetId: 0 });
            // Steady state: the delivery of the previous batch was acknowledged.
            if (id > perCommit) store.deleteDelivery('bench', id - perCommit);
          }
          await store.commit();
        }
        const seconds = Number(process.hrtime.bigint() - started) / 1e9;
        const rows = commits * perCommit;
        const written = writeBytes() - written0;
        lines.push(
          `${String(perCommit).padStart(5)} per commit: ${Math.round(rows / seconds).toLocaleString('en')} rows/s` +
            (written >= 0 ? `, ${Math.round(written / rows).toLocaleString('en')} B written per row` : ''),
        );
      }
      console.log(`      SQLite store (WAL, synchronous FULL, message + delivery per row, acked rows deleted):\n      ${lines.join('\n      ')}`);
    });
  });
});

/** Bytes this process has caused to be written to storage (Linux), or -1. */
function writeBytes(): number {
  try {
    const io = fs.readFileSync('/proc/self/io', 'utf8');
    const m = /^write_bytes: (\d+)$/m.exec(io);
    return m === null ? -1 : Number(m[1]);
  } catch {
    return -1;
  }
}
