// Abuse limits: connections per address, publish rate, bytes before CONNECT.
import { expect } from 'chai';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { RawClient } from '../helpers/raw-client.js';
import { ClientPool } from '../helpers/flows.js';

describe('limits', () => {
  const pool = new ClientPool();
  let gw: TestGateway | undefined;
  afterEach(async () => {
    await pool.closeAll();
    await gw?.stop();
    gw = undefined;
  });

  it('refuses a connection over security.max_connections_per_address, counted', async () => {
    gw = await startTestGateway({ security: { max_connections_per_address: 2 } });
    await pool.connect(gw.port, { clientId: 'a1' });
    await pool.connect(gw.port, { clientId: 'a2' });
    const third = pool.track(await RawClient.connectSocket(gw.port));
    await third.closedByServer();
    expect(gw.broker.metrics.refusedPerAddress).to.equal(1);
  });

  it('disconnects an MQTT 5 client above its publish rate with 0x96', async () => {
    gw = await startTestGateway({ security: { publish_rate_msgs: 5 } });
    const c = pool.track(await RawClient.connect(gw.port, { version: 5, clientId: 'fast5' }));
    for (let i = 0; i < 20; i++) c.send({ cmd: 'publish', topic: 'rate/x', payload: Buffer.from('x'), qos: 0, retain: false, dup: false });
    const packets = await c.closedByServer();
    const disconnect = packets.find((p) => p.cmd === 'disconnect');
    expect(disconnect?.reasonCode).to.equal(0x96);
    expect(gw.broker.metrics.rateLimited).to.be.greaterThan(0);
  });

  it('throttles a 3.1.1 client above its rate by not reading, without losing its messages', async () => {
    gw = await startTestGateway({ security: { publish_rate_msgs: 20 } });
    const c = pool.track(await RawClient.connect(gw.port, { clientId: 'fast4' }));
    const started = Date.now();
    for (let i = 1; i <= 60; i++) c.send({ cmd: 'publish', topic: 'rate/y', payload: Buffer.from('y'), qos: 1, messageId: i, retain: false, dup: false });
    for (let i = 1; i <= 60; i++) expect((await c.nextOf('puback', 10_000)).messageId).to.equal(i);
    // 60 messages at 20/s with one second of burst: at least ~2 s.
    expect(Date.now() - started).to.be.at.least(1500);
    expect(c.closed).to.equal(false);
    expect(gw.broker.metrics.rateLimited).to.be.greaterThan(0);
  });

  it('refuses a CONNECT larger than security.connect_max_bytes before reading it', async () => {
    gw = await startTestGateway({ security: { connect_max_bytes: 1024 } });
    const c = pool.track(await RawClient.connectSocket(gw.port));
    c.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, clientId: 'big', keepalive: 0,
      will: { topic: 'w', payload: Buffer.alloc(4096), qos: 0, retain: false } });
    await c.closedByServer();
  });
});
