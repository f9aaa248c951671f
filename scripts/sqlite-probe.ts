// What the SQLite store costs on this machine: rows per second and bytes written per row for
// 1/10/100/1000 messages per commit (200-byte payloads), each a message + a delivery to one session;
// with --steady the previous commit's deliveries are deleted (acknowledged) in each commit, as
// under broker load. Run: npx tsc -p . && node dist/scripts/sqlite-probe.js [--steady] [--window=ms]
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { SqliteStateStore } from '../src/store/sqlite-state-store.js';
import type { StoredMessage } from '../src/store/state-store.js';

const steady = process.argv.includes('--steady');
const windowArg = process.argv.find((a) => a.startsWith('--window='));
const commitWindowMs = windowArg === undefined ? 0 : Number(windowArg.slice('--window='.length));
const seconds = Number(process.env['PROBE_SECONDS'] ?? '2');

function writeBytes(): number {
  try {
    const m = /^write_bytes: (\d+)$/m.exec(fs.readFileSync('/proc/self/io', 'utf8'));
    return m === null ? NaN : Number(m[1]);
  } catch {
    return NaN;
  }
}

const log = { info: () => {}, warn: () => {}, error: () => {} };

async function run(perCommit: number): Promise<string> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'convoy-probe-'));
  const store = new SqliteStateStore({ path: path.join(dir, 'convoy.db'), log, commitWindowMs });
  try {
    store.putSession('probe', 3600, 0);
    await store.commit();
    const payload = Buffer.alloc(200, 0x61);
    let id = 0;
    const w0 = writeBytes();
    const t0 = performance.now();
    let rows = 0;
    while (performance.now() - t0 < seconds * 1000) {
      for (let i = 0; i < perCommit; i++) {
        id++;
        const msg: StoredMessage = {
          topic: 'fleet/truck-17/telemetry',
          payload,
          qos: 1,
          retain: false,
          senderId: 'can-gateway',
          receivedAt: Date.now(),
          expiresAt: 0,
        };
        store.putMessage(id, msg);
        store.putDelivery('probe', { seq: id, messageId: id, qos: 1, retain: false, state: 'queued', packetId: 0 });
        if (steady && id > perCommit) store.deleteDelivery('probe', id - perCommit);
      }
      await store.commit();
      rows += perCommit;
    }
    const elapsed = (performance.now() - t0) / 1000;
    const written = writeBytes() - w0;
    const walBytes = fs.statSync(path.join(dir, 'convoy.db-wal')).size;
    return (
      `${String(perCommit).padStart(5)} per commit: ${Math.round(rows / elapsed).toLocaleString('en').padStart(8)} rows/s, ` +
      `${Math.round(written / rows).toLocaleString('en').padStart(6)} B written per row, ` +
      `${((elapsed * 1000) / (rows / perCommit)).toFixed(2)} ms per commit, WAL file ${Math.round(walBytes / 1024)} KiB`
    );
  } finally {
    store.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

console.log(
  `SQLite store, WAL + synchronous FULL, 200-byte payloads, ${steady ? 'steady state (acked deliveries deleted)' : 'insert only'}, ` +
    `commitWindowMs ${commitWindowMs}, ${os.tmpdir()}`,
);
for (const n of [1, 10, 100, 1000]) console.log(await run(n));
