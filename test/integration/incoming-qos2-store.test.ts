// The durable store of QoS 2 orders from HQ on its own, on a real SQLite file: put calls back only
// after the commit that holds the order (so PUBREC follows it), and the edge cases around that
// commit — the same packet id put twice before it, a release before it, a failed commit.
import { expect } from 'chai';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { IPublishPacket } from 'mqtt';
import { SqliteIncomingQos2Store } from '../../src/store/incoming-qos2-store.js';
import { SqliteStateStore } from '../../src/store/sqlite-state-store.js';

const quiet = { info: () => {}, warn: () => {}, error: () => {} };

function order(id: number, payload: string): IPublishPacket {
  return { cmd: 'publish', messageId: id, topic: `fleet/gw1/orders/${id}`, payload: Buffer.from(payload), qos: 2, dup: false, retain: false };
}

/** put as a promise: resolves with the callback's error (undefined when held). */
function put(store: SqliteIncomingQos2Store, p: IPublishPacket): Promise<Error | undefined> {
  return new Promise((resolve) => store.put(p, (err) => resolve(err)));
}

describe('SqliteIncomingQos2Store on disk', () => {
  let dir: string;
  let file: string;
  const open: SqliteStateStore[] = [];

  function openStore(): { state: SqliteStateStore; store: SqliteIncomingQos2Store } {
    const state = new SqliteStateStore({ path: file, log: quiet });
    open.push(state);
    return { state, store: new SqliteIncomingQos2Store({ state, clientId: 'convoy-gw1', log: quiet }) };
  }

  function rows(state: SqliteStateStore): Array<[number, string]> {
    return state.db
      .prepare('SELECT packet_id, CAST(payload AS TEXT) FROM uplink_incoming_qos2 ORDER BY packet_id')
      .raw(true)
      .all() as Array<[number, string]>;
  }

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'convoy-inq2-'));
    file = join(dir, 'convoy.db');
  });

  afterEach(() => {
    for (const s of open.splice(0)) s.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('calls back only once the order is committed, and a reopened store still holds it', async () => {
    const { state, store } = openStore();
    // What the database file holds when the callback runs (MQTT.js sends PUBREC right then).
    const done = new Promise<{ err: Error | undefined; atCallback: Array<[number, string]> }>((resolve) =>
      store.put(order(7, 'deliver to dock 4'), (err) => resolve({ err, atCallback: rows(state) })),
    );
    expect(rows(state)).to.deep.equal([]);
    const { err, atCallback } = await done;
    expect(err).to.equal(undefined);
    expect(atCallback).to.deep.equal([[7, 'deliver to dock 4']]);
    state.close();
    const again = openStore();
    expect(again.store.size).to.equal(1);
    const got = await new Promise<IPublishPacket | undefined>((resolve) =>
      again.store.get({ messageId: 7 }, (_err, p) => resolve(p as IPublishPacket | undefined)),
    );
    expect(got?.topic).to.equal('fleet/gw1/orders/7');
    expect(Buffer.from(got!.payload as Buffer).toString()).to.equal('deliver to dock 4');
  });

  it('the same packet id put twice before the commit (HQ resent it): both callbacks, one row, the last copy', async () => {
    const { state, store } = openStore();
    const first = put(store, order(3, 'first copy'));
    const second = put(store, { ...order(3, 'second copy'), dup: true });
    expect(await first).to.equal(undefined);
    expect(await second).to.equal(undefined);
    expect(rows(state)).to.deep.equal([[3, 'second copy']]);
  });

  it('released before its commit: the put fails (no PUBREC for it) and no row is left', async () => {
    const { state, store } = openStore();
    const done = put(store, order(5, 'short-lived'));
    store.release(5);
    const err = await done;
    expect(err?.message).to.match(/released before its commit/);
    await state.commit();
    expect(rows(state)).to.deep.equal([]);
    expect(store.size).to.equal(0);
  });

  it('a failed commit fails the put; once the store is writable again a new put is held', async () => {
    const { state, store } = openStore();
    state.execOnWriter('PRAGMA query_only = ON');
    const err = await put(store, order(9, 'refused'));
    expect(err).to.be.instanceOf(Error);
    state.execOnWriter('PRAGMA query_only = OFF');
    expect(await put(store, order(10, 'accepted'))).to.equal(undefined);
    expect(rows(state).map(([id]) => id)).to.include(10);
  });
});
