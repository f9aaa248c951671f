// The abstract conformance suite for StateStore: every implementation runs it through a factory.
// `reopen()` returns the store that a restart would see: the same instance for the memory store,
// the file closed and opened again for SQLite (so every check here is also a durability check).
import { expect } from 'chai';
import type { Properties, Will } from '../../src/mqtt/packets.js';
import type {
  StateStore,
  StoredDelivery,
  StoredMessage,
  StoredSession,
  StoredState,
  StoredSubscription,
} from '../../src/store/state-store.js';

export interface StateStoreFixture {
  store: StateStore;
  /** Closes the store (when the implementation is durable) and returns it opened again. */
  reopen: () => Promise<StateStore>;
  cleanup: () => Promise<void>;
}

export type StateStoreFactory = () => Promise<StateStoreFixture>;

export function message(topic: string, overrides: Partial<StoredMessage> = {}): StoredMessage {
  return {
    topic,
    payload: Buffer.from(`payload of ${topic}`),
    qos: 1,
    retain: false,
    senderId: 'sender',
    receivedAt: 1_700_000_000_000,
    expiresAt: 0,
    ...overrides,
  };
}

export function delivery(seq: number, messageId: number, overrides: Partial<StoredDelivery> = {}): StoredDelivery {
  return { seq, messageId, qos: 1, retain: false, state: 'queued', packetId: 0, ...overrides };
}

function sub(filter: string, overrides: Partial<StoredSubscription> = {}): StoredSubscription {
  return { filter, qos: 1, noLocal: false, retainAsPublished: false, retainHandling: 0, ...overrides };
}

function session(state: StoredState, clientId: string): StoredSession | undefined {
  return state.sessions.find((s) => s.clientId === clientId);
}

function sessionOf(state: StoredState, clientId: string): StoredSession {
  const s = session(state, clientId);
  expect(s, `session ${clientId}`).to.not.equal(undefined);
  return s!;
}

const richProperties: Properties = {
  payloadFormatIndicator: 1,
  messageExpiryInterval: 3600,
  contentType: 'application/json; charset=utf-8',
  responseTopic: 'reply/to/é',
  correlationData: Buffer.from([0, 1, 2, 254, 255]),
  subscriptionIdentifiers: [7, 268_435_455],
  userProperties: [
    ['b', '2'],
    ['a', '1'],
    ['b', 'again'],
    ['', ''],
    ['unicode', '🚚 ü'],
  ],
};

export function describeStateStoreConformance(name: string, factory: StateStoreFactory): void {
  describe(`StateStore conformance: ${name}`, () => {
    let fx: StateStoreFixture;
    let store: StateStore;

    beforeEach(async () => {
      fx = await factory();
      store = fx.store;
    });

    afterEach(async () => {
      await fx.cleanup();
    });

    async function reopen(): Promise<StoredState> {
      await store.commit();
      store = await fx.reopen();
      return store.load();
    }

    it('starts empty', async () => {
      const state = store.load();
      expect(state.sessions).to.deep.equal([]);
      expect(state.messages.size).to.equal(0);
      expect(state.retained).to.deep.equal([]);
      expect(state.lastMessageId).to.equal(0);
      expect(store.pending).to.equal(false);
      expect(store.fault).to.equal(null);
      await store.commit(); // nothing pending: resolves
    });

    it('stores and replaces sessions', async () => {
      store.putSession('a', 60, 0);
      store.putSession('b', 0xffffffff, 1_700_000_000_123);
      store.putSession('a', 120, 1_700_000_000_456);
      const state = await reopen();
      expect(state.sessions.map((s) => s.clientId).sort()).to.deep.equal(['a', 'b']);
      expect(sessionOf(state, 'a')).to.deep.equal({
        clientId: 'a',
        expiryInterval: 120,
        disconnectedAt: 1_700_000_000_456,
        subscriptions: [],
        deliveries: [],
        incomingQos2: [],
      });
      expect(sessionOf(state, 'b').expiryInterval).to.equal(0xffffffff);
      expect(sessionOf(state, 'b').disconnectedAt).to.equal(1_700_000_000_123);
    });

    it('stores, replaces and deletes subscriptions with all their options', async () => {
      store.putSession('c', 300, 0);
      store.putSubscription('c', sub('a/+', { qos: 2, noLocal: true, retainAsPublished: true, retainHandling: 2 }));
      store.putSubscription('c', sub('b/#', { qos: 0, subscriptionId: 268_435_455, retainHandling: 1 }));
      store.putSubscription('c', sub('gone', {}));
      await store.commit();
      store.putSubscription('c', sub('b/#', { qos: 1, subscriptionId: 5 }));
      store.deleteSubscription('c', 'gone');
      store.deleteSubscription('c', 'never-existed');
      const state = await reopen();
      const subs = [...sessionOf(state, 'c').subscriptions].sort((x, y) => x.filter.localeCompare(y.filter));
      expect(subs).to.deep.equal([
        { filter: 'a/+', qos: 2, noLocal: true, retainAsPublished: true, retainHandling: 2 },
        { filter: 'b/#', qos: 1, noLocal: false, retainAsPublished: false, retainHandling: 0, subscriptionId: 5 },
      ]);
    });

    it('stores messages and deliveries, deliveries ordered by seq', async () => {
      store.putSession('d', 60, 0);
      store.putMessage(1, message('t/1', { qos: 1 }));
      store.putMessage(2, message('t/2', { qos: 2, retain: true, expiresAt: 1_800_000_000_000 }));
      store.putMessage(3, message('t/3', { payload: Buffer.alloc(0), senderId: '' }));
      store.putDelivery('d', delivery(12, 3, { qos: 0 }));
      store.putDelivery('d', delivery(10, 1, { subIds: [1, 99], state: 'publish', packetId: 7 }));
      store.putDelivery('d', delivery(11, 2, { qos: 2, retain: true, shareKey: 'grp/t/#', state: 'pubrel', packetId: 65535 }));
      store.putDelivery('d', delivery(13, 1, { subIds: [] }));
      const state = await reopen();
      expect(sessionOf(state, 'd').deliveries).to.deep.equal([
        delivery(10, 1, { subIds: [1, 99], state: 'publish', packetId: 7 }),
        delivery(11, 2, { qos: 2, retain: true, shareKey: 'grp/t/#', state: 'pubrel', packetId: 65535 }),
        delivery(12, 3, { qos: 0 }),
        delivery(13, 1, { subIds: [] }),
      ]);
      expect([...state.messages.keys()].sort((a, b) => a - b)).to.deep.equal([1, 2, 3]);
      expect(state.messages.get(1)).to.deep.equal(message('t/1', { qos: 1 }));
      expect(state.messages.get(2)).to.deep.equal(message('t/2', { qos: 2, retain: true, expiresAt: 1_800_000_000_000 }));
      expect(state.messages.get(3)).to.deep.equal(message('t/3', { payload: Buffer.alloc(0), senderId: '' }));
      expect(state.lastMessageId).to.equal(3);
    });

    it('keeps binary payloads byte for byte', async () => {
      const payload = Buffer.alloc(70_000);
      for (let i = 0; i < payload.length; i++) payload[i] = (i * 7 + (i >> 8)) & 0xff;
      store.putSession('bin', 60, 0);
      store.putMessage(1, message('bin', { payload }));
      store.putDelivery('bin', delivery(1, 1));
      const state = await reopen();
      expect(state.messages.get(1)?.payload.equals(payload)).to.equal(true);
    });

    it('replaces a delivery when its state changes, in separate commits and in one', async () => {
      store.putSession('e', 60, 0);
      store.putMessage(1, message('x'));
      store.putMessage(2, message('y'));
      store.putDelivery('e', delivery(1, 1));
      store.putDelivery('e', delivery(2, 2, { qos: 2 }));
      await store.commit();
      store.putDelivery('e', delivery(1, 1, { state: 'publish', packetId: 1 }));
      await store.commit();
      // In one batch: queued → publish → pubrel.
      store.putDelivery('e', delivery(2, 2, { qos: 2, state: 'publish', packetId: 2 }));
      store.putDelivery('e', delivery(2, 2, { qos: 2, state: 'pubrel', packetId: 2 }));
      const state = await reopen();
      expect(sessionOf(state, 'e').deliveries).to.deep.equal([
        delivery(1, 1, { state: 'publish', packetId: 1 }),
        delivery(2, 2, { qos: 2, state: 'pubrel', packetId: 2 }),
      ]);
    });

    it('stores the values at the time of the put, not later changes to the object', async () => {
      store.putSession('m', 60, 0);
      store.putMessage(1, message('x'));
      const d = delivery(1, 1);
      store.putDelivery('m', d);
      d.state = 'publish';
      d.packetId = 9;
      const s = sub('f', { qos: 1 });
      store.putSubscription('m', s);
      const state = await reopen();
      expect(sessionOf(state, 'm').deliveries).to.deep.equal([delivery(1, 1)]);
      expect(sessionOf(state, 'm').subscriptions).to.deep.equal([sub('f', { qos: 1 })]);
    });

    it('deletes a message once its last delivery is deleted', async () => {
      store.putSession('f', 60, 0);
      store.putSession('g', 60, 0);
      store.putMessage(1, message('shared'));
      store.putMessage(2, message('other'));
      store.putDelivery('f', delivery(1, 1));
      store.putDelivery('g', delivery(1, 1));
      store.putDelivery('g', delivery(2, 2));
      await store.commit();

      store.deleteDelivery('f', 1);
      let state = await reopen();
      expect(sessionOf(state, 'f').deliveries).to.deep.equal([]);
      expect(state.messages.has(1), 'still queued for g').to.equal(true);

      store.deleteDelivery('g', 1);
      await store.commit();
      store.deleteDelivery('g', 2);
      state = await reopen();
      expect(sessionOf(state, 'g').deliveries).to.deep.equal([]);
      expect(state.messages.size).to.equal(0);
      expect(state.lastMessageId, 'ids are never reused').to.equal(2);
    });

    it('handles a delivery put and deleted in the same commit', async () => {
      store.putSession('h', 60, 0);
      store.putMessage(1, message('brief'));
      store.putDelivery('h', delivery(1, 1));
      store.putDelivery('h', delivery(1, 1, { state: 'publish', packetId: 3 }));
      store.deleteDelivery('h', 1);
      store.putMessage(2, message('stays'));
      store.putDelivery('h', delivery(2, 2));
      let state = await reopen();
      expect(sessionOf(state, 'h').deliveries).to.deep.equal([delivery(2, 2)]);
      expect([...state.messages.keys()]).to.deep.equal([2]);
      expect(state.lastMessageId).to.equal(2);

      // A delivery already stored, changed and deleted within one batch is gone too.
      store.putDelivery('h', delivery(2, 2, { state: 'publish', packetId: 4 }));
      store.deleteDelivery('h', 2);
      state = await reopen();
      expect(sessionOf(state, 'h').deliveries).to.deep.equal([]);
      expect(state.messages.size).to.equal(0);
    });

    it('deletes only the deliveries asked for when acknowledgements leave gaps, across commits', async () => {
      // (SQLite writes runs of deletes as seq ranges: the kept seqs in between must survive.)
      store.putSession('gap', 60, 0);
      for (let i = 1; i <= 12; i++) {
        store.putMessage(i, message(`m${i}`));
        store.putDelivery('gap', delivery(i, i));
      }
      await store.commit();
      for (const seq of [1, 2, 3, 5, 6, 9, 12]) store.deleteDelivery('gap', seq);
      // Never stored: put and deleted in this batch, between seqs deleted from disk.
      store.putMessage(13, message('m13'));
      store.putDelivery('gap', delivery(13, 13));
      store.deleteDelivery('gap', 13);
      let state = await reopen();
      expect(sessionOf(state, 'gap').deliveries.map((d) => d.seq)).to.deep.equal([4, 7, 8, 10, 11]);

      // A delete, then a put of the same seq in the same batch: the put wins.
      store.deleteDelivery('gap', 7);
      store.deleteDelivery('gap', 8);
      store.putDelivery('gap', delivery(7, 7, { state: 'publish', packetId: 9 }));
      state = await reopen();
      expect(sessionOf(state, 'gap').deliveries).to.deep.equal([
        delivery(4, 4),
        delivery(7, 7, { state: 'publish', packetId: 9 }),
        delivery(10, 10),
        delivery(11, 11),
      ]);
    });

    it('stores and deletes incoming QoS 2 packet ids', async () => {
      store.putSession('q', 60, 0);
      store.putIncomingQos2('q', 5);
      store.putIncomingQos2('q', 1);
      store.putIncomingQos2('q', 65535);
      store.putIncomingQos2('q', 5);
      await store.commit();
      store.deleteIncomingQos2('q', 1);
      store.deleteIncomingQos2('q', 2);
      const state = await reopen();
      expect([...sessionOf(state, 'q').incomingQos2].sort((a, b) => a - b)).to.deep.equal([5, 65535]);
    });

    it('stores, replaces and deletes a delayed will with its properties', async () => {
      const will: Will = {
        topic: 'will/w',
        payload: Buffer.from('gone'),
        qos: 2,
        retain: true,
        properties: { willDelayInterval: 30, ...richProperties },
      };
      store.putSession('w', 60, 0);
      store.putSession('w2', 60, 0);
      store.putDelayedWill('w', { topic: 'old', payload: Buffer.from('x'), qos: 0, retain: false }, 1);
      store.putDelayedWill('w', will, 1_700_000_030_000);
      store.putDelayedWill('w2', { topic: 'w2', payload: Buffer.alloc(0), qos: 1, retain: false }, 5);
      let state = await reopen();
      expect(sessionOf(state, 'w').delayedWill).to.deep.equal({ will, dueAt: 1_700_000_030_000 });
      expect(sessionOf(state, 'w2').delayedWill).to.deep.equal({
        will: { topic: 'w2', payload: Buffer.alloc(0), qos: 1, retain: false },
        dueAt: 5,
      });

      store.deleteDelayedWill('w');
      state = await reopen();
      expect(sessionOf(state, 'w').delayedWill).to.equal(undefined);
      expect(sessionOf(state, 'w2').delayedWill).to.not.equal(undefined);
    });

    it('deletes a session with its subscriptions, deliveries, QoS 2 ids, delayed will and messages', async () => {
      for (const id of ['gone', 'kept']) {
        store.putSession(id, 60, 0);
        store.putSubscription(id, sub(`${id}/#`));
        store.putIncomingQos2(id, 9);
        store.putDelayedWill(id, { topic: `will/${id}`, payload: Buffer.from('w'), qos: 1, retain: false }, 10);
      }
      store.putMessage(1, message('only-gone'));
      store.putMessage(2, message('both'));
      store.putMessage(3, message('only-kept'));
      store.putDelivery('gone', delivery(1, 1));
      store.putDelivery('gone', delivery(2, 2));
      store.putDelivery('kept', delivery(1, 2));
      store.putDelivery('kept', delivery(2, 3));
      await store.commit();

      store.deleteSession('gone');
      let state = await reopen();
      expect(state.sessions.map((s) => s.clientId)).to.deep.equal(['kept']);
      expect([...state.messages.keys()].sort((a, b) => a - b)).to.deep.equal([2, 3]);
      const kept = sessionOf(state, 'kept');
      expect(kept.subscriptions).to.have.length(1);
      expect(kept.deliveries).to.have.length(2);
      expect(kept.incomingQos2).to.deep.equal([9]);
      expect(kept.delayedWill).to.not.equal(undefined);

      // A session created again under the same id starts empty.
      store.putSession('gone', 10, 0);
      state = await reopen();
      expect(sessionOf(state, 'gone')).to.deep.equal({
        clientId: 'gone',
        expiryInterval: 10,
        disconnectedAt: 0,
        subscriptions: [],
        deliveries: [],
        incomingQos2: [],
      });
    });

    it('deletes and recreates a session within one commit', async () => {
      store.putSession('r', 60, 0);
      store.putSubscription('r', sub('old'));
      store.putMessage(1, message('m1'));
      store.putDelivery('r', delivery(1, 1));
      await store.commit();
      store.putDelivery('r', delivery(1, 1, { state: 'publish', packetId: 1 }));
      store.deleteSession('r');
      store.putSession('r', 5, 0);
      store.putSubscription('r', sub('new'));
      store.putMessage(2, message('m2'));
      store.putDelivery('r', delivery(1, 2));
      const state = await reopen();
      const r = sessionOf(state, 'r');
      expect(r.expiryInterval).to.equal(5);
      expect(r.subscriptions.map((s) => s.filter)).to.deep.equal(['new']);
      expect(r.deliveries).to.deep.equal([delivery(1, 2)]);
      expect([...state.messages.keys()]).to.deep.equal([2]);
    });

    it('stores, replaces and deletes retained messages', async () => {
      store.putRetained(message('r/1', { retain: true, qos: 0 }));
      store.putRetained(message('r/2', { retain: true, properties: richProperties }));
      store.putRetained(message('r/3', { retain: true }));
      await store.commit();
      store.putRetained(message('r/1', { retain: true, qos: 2, payload: Buffer.from('new'), senderId: 'x' }));
      store.deleteRetained('r/3');
      store.deleteRetained('r/none');
      const state = await reopen();
      const retained = [...state.retained].sort((a, b) => a.topic.localeCompare(b.topic));
      expect(retained).to.deep.equal([
        message('r/1', { retain: true, qos: 2, payload: Buffer.from('new'), senderId: 'x' }),
        message('r/2', { retain: true, properties: richProperties }),
      ]);
      expect(state.lastMessageId, 'retained messages do not use message ids').to.equal(0);
    });

    it('round-trips properties: user property order and duplicates, Buffers, arrays', async () => {
      const props: Properties = { ...richProperties, correlationData: Buffer.alloc(0) };
      store.putSession('p', 60, 0);
      store.putMessage(1, message('p', { properties: props }));
      store.putMessage(2, message('p', { properties: {} }));
      store.putMessage(3, message('p', { properties: { userProperties: [] } }));
      store.putDelivery('p', delivery(1, 1));
      store.putDelivery('p', delivery(2, 2));
      store.putDelivery('p', delivery(3, 3));
      const state = await reopen();
      const loaded = state.messages.get(1)?.properties;
      expect(loaded).to.deep.equal(props);
      expect(Buffer.isBuffer(loaded?.correlationData)).to.equal(true);
      expect(loaded?.userProperties).to.deep.equal(richProperties.userProperties);
      expect(state.messages.get(2)?.properties).to.deep.equal({});
      expect(state.messages.get(3)?.properties).to.deep.equal({ userProperties: [] });
      expect(state.messages.get(1)).to.not.have.property('unknown');
    });

    it('reports the highest message id ever stored', async () => {
      store.putSession('l', 60, 0);
      for (let id = 1; id <= 5; id++) {
        store.putMessage(id, message(`l/${id}`));
        store.putDelivery('l', delivery(id, id));
      }
      await store.commit();
      for (let seq = 1; seq <= 5; seq++) store.deleteDelivery('l', seq);
      let state = await reopen();
      expect(state.messages.size).to.equal(0);
      expect(state.lastMessageId).to.equal(5);

      store.putMessage(6, message('l/6'));
      store.putDelivery('l', delivery(6, 6));
      await store.commit();
      store.deleteSession('l');
      state = await reopen();
      expect(state.sessions).to.deep.equal([]);
      expect(state.messages.size).to.equal(0);
      expect(state.lastMessageId).to.equal(6);
    });

    it('applies many operations in one commit', async () => {
      const clients = 20;
      const perClient = 100;
      let id = 0;
      for (let c = 0; c < clients; c++) {
        store.putSession(`many-${c}`, 3600, 0);
        store.putSubscription(`many-${c}`, sub(`fleet/${c}/#`, { subscriptionId: c + 1 }));
      }
      for (let i = 0; i < perClient; i++) {
        id++;
        store.putMessage(id, message(`fleet/x/${i}`, { payload: Buffer.alloc(200, i) }));
        for (let c = 0; c < clients; c++) store.putDelivery(`many-${c}`, delivery(i + 1, id, { subIds: [c + 1] }));
      }
      expect(store.pending).to.equal(true);
      const state = await reopen();
      expect(state.sessions).to.have.length(clients);
      for (const s of state.sessions) {
        expect(s.deliveries).to.have.length(perClient);
        expect(s.deliveries.map((d) => d.seq)).to.deep.equal(Array.from({ length: perClient }, (_, i) => i + 1));
      }
      expect(state.messages.size).to.equal(perClient);
      expect(state.messages.get(50)?.payload.equals(Buffer.alloc(200, 49))).to.equal(true);
      expect(state.lastMessageId).to.equal(perClient);
    });

    it('settles commits from one turn together and from several turns in order', async () => {
      store.putSession('t', 60, 0);
      const first = store.commit();
      store.putMessage(1, message('t1'));
      store.putDelivery('t', delivery(1, 1));
      const second = store.commit();
      await Promise.all([first, second]);
      expect(store.pending).to.equal(false);

      const done: number[] = [];
      const commits: Promise<void>[] = [];
      for (let turn = 0; turn < 5; turn++) {
        await new Promise((resolve) => setImmediate(resolve));
        store.putMessage(turn + 2, message(`t${turn + 2}`));
        store.putDelivery('t', delivery(turn + 2, turn + 2));
        commits.push(store.commit().then(() => void done.push(turn)));
      }
      await Promise.all(commits);
      expect(done).to.deep.equal([0, 1, 2, 3, 4]);
      expect(store.fault).to.equal(null);

      const state = await reopen();
      expect(sessionOf(state, 't').deliveries.map((d) => d.messageId)).to.deep.equal([1, 2, 3, 4, 5, 6]);
      expect(state.lastMessageId).to.equal(6);
    });

    it('keeps working across several reopen cycles', async () => {
      for (let round = 1; round <= 3; round++) {
        store.putSession('cycle', round, 0);
        store.putMessage(round, message(`c/${round}`));
        store.putDelivery('cycle', delivery(round, round));
        if (round > 1) store.deleteDelivery('cycle', round - 1);
        const state = await reopen();
        expect(sessionOf(state, 'cycle').expiryInterval).to.equal(round);
        expect(sessionOf(state, 'cycle').deliveries).to.deep.equal([delivery(round, round)]);
        expect([...state.messages.keys()]).to.deep.equal([round]);
        expect(state.lastMessageId).to.equal(round);
      }
    });
  });
}
