import { expect } from 'chai';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { RawClient } from '../helpers/raw-client.js';
import {
  ClientPool, ack, connectRaw, disconnect, expectNothingMore, nextPublish, publish, receive, subscribe, summary, unique,
} from '../helpers/flows.js';

describe('Persistent sessions, clean session 0 (MQTT 3.1.1)', () => {
  let gw: TestGateway;
  const pool = new ClientPool();

  before(async () => {
    gw = await startTestGateway();
  });
  afterEach(async () => {
    await pool.closeAll();
  });
  after(async () => {
    await gw.stop();
  });

  async function connect(clientId: string, clean: boolean): Promise<{ c: RawClient; sessionPresent: boolean }> {
    const { c, connack } = await connectRaw(gw.port, pool, { clientId, clean });
    return { c, sessionPresent: connack.sessionPresent as boolean };
  }

  /** A persistent session subscribed to `topic`, left offline. */
  async function offlineSubscriber(topic: string, qos: 0 | 1 | 2 = 2): Promise<string> {
    const id = unique('persist');
    const { c, sessionPresent } = await connect(id, false);
    expect(sessionPresent).to.equal(false);
    await subscribe(c, [{ topic, qos }]);
    await disconnect(c);
    return id;
  }

  it('answers a new clean-session-0 CONNECT with Session Present 0 [MQTT-3.2.2-3]', async () => {
    const { sessionPresent } = await connect(unique('fresh'), false);
    expect(sessionPresent).to.equal(false);
  });

  it('resumes the session with Session Present 1 and keeps its subscriptions [MQTT-3.2.2-2] [MQTT-3.1.2-4]', async () => {
    const t = unique('sess/resume');
    const id = await offlineSubscriber(t, 1);
    const { c, sessionPresent } = await connect(id, false);
    expect(sessionPresent).to.equal(true);
    const pub = await pool.connect(gw.port);
    await publish(pub, t, 'still subscribed', 1);
    expect(summary(await receive(c))).to.deep.equal({ topic: t, payload: 'still subscribed', qos: 1, retain: false });
  });

  it('queues QoS 1 and QoS 2 messages while the client is away and delivers them on reconnect, in order [MQTT-3.1.2-5]', async () => {
    const t = unique('sess/queue');
    const id = await offlineSubscriber(t, 2);
    const pub = await pool.connect(gw.port);
    await publish(pub, t, 'q1', 1);
    await publish(pub, t, 'q2', 2);
    await publish(pub, t, 'q1-again', 1);
    const { c, sessionPresent } = await connect(id, false);
    expect(sessionPresent).to.equal(true);
    const got = [await nextPublish(c), await nextPublish(c), await nextPublish(c)];
    expect(got.map(summary)).to.deep.equal([
      { topic: t, payload: 'q1', qos: 1, retain: false },
      { topic: t, payload: 'q2', qos: 2, retain: false },
      { topic: t, payload: 'q1-again', qos: 1, retain: false },
    ]);
    for (const p of got) await ack(c, p);
    await expectNothingMore(c);
  });

  it('delivers more queued messages than the in-flight window, all in order, once acknowledged [MQTT-3.1.2-5] [MQTT-4.6.0-6]', async () => {
    const t = unique('sess/many');
    const id = await offlineSubscriber(t, 1);
    const pub = await pool.connect(gw.port);
    for (let i = 0; i < 100; i++) await publish(pub, t, String(i), 1, { messageId: i + 1 });
    const { c } = await connect(id, false);
    const got: string[] = [];
    for (let i = 0; i < 100; i++) got.push(String((await receive(c)).payload));
    expect(got).to.deep.equal(Array.from({ length: 100 }, (_, i) => String(i)));
    await expectNothingMore(c);
  });

  it('does not queue QoS 0 messages for an offline client (counted as dropped)', async () => {
    const t = unique('sess/q0');
    const id = await offlineSubscriber(t, 2);
    const pub = await pool.connect(gw.port);
    const before = gw.broker.metrics.dropped.offline_qos0;
    await publish(pub, t, 'qos0', 0);
    await publish(pub, t, 'qos1', 1);
    expect(gw.broker.metrics.dropped.offline_qos0).to.equal(before + 1);
    const { c } = await connect(id, false);
    expect(summary(await receive(c)).payload).to.equal('qos1');
    await expectNothingMore(c);
  });

  it('resends an unacknowledged QoS 1 PUBLISH on reconnect with DUP 1 and the same packet id [MQTT-4.4.0-1] [MQTT-3.3.1-1]', async () => {
    const t = unique('sess/redeliver1');
    const id = unique('redeliver');
    const first = (await connect(id, false)).c;
    await subscribe(first, [{ topic: t, qos: 1 }]);
    const pub = await pool.connect(gw.port);
    await publish(pub, t, 'unacked', 1);
    const original = await nextPublish(first);
    expect(original.dup).to.equal(false);
    await disconnect(first); // without PUBACK
    const { c, sessionPresent } = await connect(id, false);
    expect(sessionPresent).to.equal(true);
    const again = await nextPublish(c);
    expect(summary(again)).to.deep.equal({ topic: t, payload: 'unacked', qos: 1, retain: false });
    expect(again.dup).to.equal(true);
    expect(again.messageId).to.equal(original.messageId);
    await ack(c, again);
    await expectNothingMore(c);
    await disconnect(c);
    // Acknowledged now: not sent a third time.
    const third = (await connect(id, false)).c;
    await expectNothingMore(third);
  });

  it('resends a QoS 2 PUBLISH that got no PUBREC with DUP 1, and a PUBREL for one that got PUBREC [MQTT-4.4.0-1]', async () => {
    const t = unique('sess/redeliver2');
    const id = unique('redeliver2');
    const first = (await connect(id, false)).c;
    await subscribe(first, [{ topic: t, qos: 2 }]);
    const pub = await pool.connect(gw.port);
    await publish(pub, t, 'recd', 2, { messageId: 1 });
    await publish(pub, t, 'not recd', 2, { messageId: 2 });
    const a = await nextPublish(first);
    const b = await nextPublish(first);
    first.send({ cmd: 'pubrec', messageId: a.messageId as number });
    const rel = await first.next();
    expect([rel.cmd, rel.messageId]).to.deep.equal(['pubrel', a.messageId]);
    await disconnect(first); // no PUBCOMP for a, no PUBREC for b

    const { c } = await connect(id, false);
    const resent = [await c.next(), await c.next()];
    expect(resent.map((p) => [p.cmd, p.messageId])).to.deep.equal([['pubrel', a.messageId], ['publish', b.messageId]]);
    expect(resent[1]!.dup).to.equal(true);
    expect(String(resent[1]!.payload)).to.equal('not recd');
    c.send({ cmd: 'pubcomp', messageId: a.messageId as number });
    await ack(c, resent[1]!);
    await expectNothingMore(c);
    expect(gw.broker.sessions.get(id)!.inflight.size).to.equal(0);
  });

  it('keeps received QoS 2 packet ids across a reconnect: a resent PUBLISH is not delivered twice [MQTT-4.3.3-2] [MQTT-4.4.0-1]', async () => {
    const t = unique('sess/incoming2');
    const sub = await pool.connect(gw.port);
    await subscribe(sub, [{ topic: t, qos: 2 }]);
    const id = unique('pub2');
    const first = (await connect(id, false)).c;
    first.send({ cmd: 'publish', topic: t, payload: Buffer.from('exactly once'), qos: 2, messageId: 10, retain: false, dup: false });
    expect((await first.next()).cmd).to.equal('pubrec');
    await disconnect(first); // before sending PUBREL

    const { c, sessionPresent } = await connect(id, false);
    expect(sessionPresent).to.equal(true);
    c.send({ cmd: 'publish', topic: t, payload: Buffer.from('exactly once'), qos: 2, messageId: 10, retain: false, dup: true });
    const rec = await c.next();
    expect([rec.cmd, rec.messageId]).to.deep.equal(['pubrec', 10]);
    c.send({ cmd: 'pubrel', messageId: 10 });
    const comp = await c.next();
    expect([comp.cmd, comp.messageId]).to.deep.equal(['pubcomp', 10]);

    expect(summary(await receive(sub)).payload).to.equal('exactly once');
    await expectNothingMore(sub);
  });

  it('discards the previous session when clean session 1 connects [MQTT-3.1.2-6] [MQTT-3.2.2-1]', async () => {
    const t = unique('sess/clean');
    const id = await offlineSubscriber(t, 1);
    const pub = await pool.connect(gw.port);
    await publish(pub, t, 'queued for the old session', 1);
    const { c, sessionPresent } = await connect(id, true);
    expect(sessionPresent).to.equal(false);
    await expectNothingMore(c); // the queued message went with the old session
    await publish(pub, t, 'after clean', 1);
    await expectNothingMore(c); // and so did the subscription
    await disconnect(c);
    // A clean session does not outlive its connection either.
    const again = await connect(id, false);
    expect(again.sessionPresent).to.equal(false);
  });

  it('does not keep the session of a clean-session-1 client after it disconnects [MQTT-3.1.2-6]', async () => {
    const t = unique('sess/ephemeral');
    const id = unique('eph');
    const first = (await connect(id, true)).c;
    await subscribe(first, [{ topic: t, qos: 1 }]);
    await disconnect(first);
    expect(gw.broker.sessions.get(id)).to.equal(undefined);
    const { c, sessionPresent } = await connect(id, false);
    expect(sessionPresent).to.equal(false);
    const pub = await pool.connect(gw.port);
    await publish(pub, t, 'x', 1);
    await expectNothingMore(c);
  });

  it('resumes the session on a takeover with clean session 0 [MQTT-3.1.4-2] [MQTT-3.2.2-2]', async () => {
    const t = unique('sess/takeover');
    const id = unique('takeover');
    const first = (await connect(id, false)).c;
    await subscribe(first, [{ topic: t, qos: 1 }]);
    const { c, sessionPresent } = await connect(id, false);
    await first.closedByServer();
    expect(sessionPresent).to.equal(true);
    const pub = await pool.connect(gw.port);
    await publish(pub, t, 'to the new connection', 1);
    expect(summary(await receive(c)).payload).to.equal('to the new connection');
  });

  it('resends in-flight messages with DUP 1 to the connection that took the session over [MQTT-3.1.4-2] [MQTT-4.4.0-1]', async () => {
    const t = unique('sess/takeover-inflight');
    const id = unique('tko');
    const first = (await connect(id, false)).c;
    await subscribe(first, [{ topic: t, qos: 1 }]);
    const pub = await pool.connect(gw.port);
    await publish(pub, t, 'pending', 1);
    const original = await nextPublish(first);
    const { c } = await connect(id, false);
    await first.closedByServer();
    const again = await nextPublish(c);
    expect([again.messageId, again.dup, String(again.payload)]).to.deep.equal([original.messageId, true, 'pending']);
    await ack(c, again);
    await expectNothingMore(c);
  });

  it('resumes an MQTT 3.1 (MQIsdp) session but sends CONNACK byte 1 as 0, reserved in 3.1 (MQTT 3.1 §3.2)', async () => {
    const t = unique('sess/v31');
    const id = unique('v31').slice(0, 23);
    const first = await pool.connect(gw.port, { version: 3, clientId: id, clean: false });
    await subscribe(first, [{ topic: t, qos: 1 }]);
    await disconnect(first);
    const c = pool.track(await RawClient.connectSocket(gw.port, 3));
    c.send({ cmd: 'connect', protocolId: 'MQIsdp', protocolVersion: 3, clean: false, clientId: id, keepalive: 0 });
    const connack = await c.next();
    expect(connack.cmd).to.equal('connack');
    expect(connack.returnCode).to.equal(0);
    // MQTT 3.1 has no Session Present flag: the first variable header byte is reserved (0).
    expect(connack.sessionPresent, 'CONNACK flags byte of an MQTT 3.1 CONNACK').to.equal(false);
    // The session itself was resumed.
    const pub = await pool.connect(gw.port);
    await publish(pub, t, 'v31 resumed', 1);
    expect(summary(await receive(c)).payload).to.equal('v31 resumed');
  });

  it('keeps a session across a network failure (socket destroyed) and delivers what was queued', async () => {
    const t = unique('sess/netfail');
    const id = unique('netfail');
    const first = (await connect(id, false)).c;
    await subscribe(first, [{ topic: t, qos: 1 }]);
    await first.close();
    const pub = await pool.connect(gw.port);
    await publish(pub, t, 'while broken', 1);
    const { c, sessionPresent } = await connect(id, false);
    expect(sessionPresent).to.equal(true);
    expect(summary(await receive(c)).payload).to.equal('while broken');
  });
});

describe('Persistent session queue bound (limits.max_queued_messages = 3)', () => {
  let gw: TestGateway;
  const pool = new ClientPool();

  before(async () => {
    gw = await startTestGateway({ limits: { max_queued_messages: 3 } });
  });
  afterEach(async () => {
    await pool.closeAll();
  });
  after(async () => {
    await gw.stop();
  });

  it('queues at most 3 messages for an offline session and counts the others as dropped (queue_full)', async () => {
    const t = unique('sess/bound');
    const id = unique('bounded');
    const { c: first } = await connectRaw(gw.port, pool, { clientId: id, clean: false });
    await subscribe(first, [{ topic: t, qos: 1 }]);
    await disconnect(first);
    const pub = await pool.connect(gw.port);
    const before = gw.broker.metrics.dropped.queue_full;
    for (let i = 0; i < 5; i++) await publish(pub, t, String(i), 1, { messageId: i + 1 });
    expect(gw.broker.metrics.dropped.queue_full - before).to.equal(2);

    const { c, connack } = await connectRaw(gw.port, pool, { clientId: id, clean: false });
    expect(connack.sessionPresent).to.equal(true);
    const got: string[] = [];
    for (let i = 0; i < 3; i++) got.push(String((await receive(c)).payload));
    expect(got).to.deep.equal(['0', '1', '2']);
    await expectNothingMore(c);
  });
});

describe('Queue behind the in-flight window (max_inflight = 2, max_queued_messages = 3)', () => {
  let gw: TestGateway;
  const pool = new ClientPool();

  before(async () => {
    gw = await startTestGateway({ limits: { max_inflight: 2, max_queued_messages: 3 } });
  });
  afterEach(async () => {
    await pool.closeAll();
  });
  after(async () => {
    await gw.stop();
  });

  it('queues at most 3 messages behind a full window of a connected client and drops the rest (queue_full)', async () => {
    const t = unique('sess/window');
    const sub = await pool.connect(gw.port);
    await subscribe(sub, [{ topic: t, qos: 1 }]);
    const pub = await pool.connect(gw.port);
    const before = gw.broker.metrics.dropped.queue_full;
    for (let i = 0; i < 8; i++) await publish(pub, t, String(i), 1, { messageId: i + 1 });
    expect(gw.broker.metrics.dropped.queue_full - before).to.equal(3);
    const window = [await nextPublish(sub), await nextPublish(sub)];
    await expectNothingMore(sub);
    const got = window.map((p) => String(p.payload));
    // Each PUBACK lets one queued message in.
    for (let i = 0; i < 3; i++) {
      await ack(sub, window.shift()!);
      const p = await nextPublish(sub);
      window.push(p);
      got.push(String(p.payload));
    }
    for (const p of window) await ack(sub, p);
    await expectNothingMore(sub);
    expect(got).to.deep.equal(['0', '1', '2', '3', '4']);
  });
});
