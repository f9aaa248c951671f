import { expect } from 'chai';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { RawClient } from '../helpers/raw-client.js';

describe('CONNECT / CONNACK (MQTT 3.1.1)', () => {
  let gw: TestGateway;
  const clients: RawClient[] = [];
  const track = (c: RawClient): RawClient => (clients.push(c), c);

  before(async () => {
    gw = await startTestGateway();
  });
  afterEach(async () => {
    await Promise.all(clients.splice(0).map((c) => c.close()));
  });
  after(async () => {
    await gw.stop();
  });

  it('accepts a 3.1.1 CONNECT with return code 0 [MQTT-3.2.2-3]', async () => {
    const c = track(await RawClient.connectSocket(gw.port));
    c.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, clientId: 'c1', keepalive: 10 });
    const ack = await c.next();
    expect(ack.cmd).to.equal('connack');
    expect(ack.returnCode).to.equal(0);
    expect(ack.sessionPresent).to.equal(false);
  });

  it('accepts MQTT 3.1 (MQIsdp, level 3)', async () => {
    const c = track(await RawClient.connect(gw.port, { version: 3, clientId: 'old-client' }));
    expect(c.closed).to.equal(false);
  });

  it('answers an unsupported protocol level with return code 1 and closes [MQTT-3.1.2-2]', async () => {
    const c = track(await RawClient.connectSocket(gw.port));
    // CONNECT "MQTT" level 9
    c.send(Buffer.from([0x10, 0x0c, 0x00, 0x04, 0x4d, 0x51, 0x54, 0x54, 0x09, 0x02, 0x00, 0x0a, 0x00, 0x00]));
    const packets = await c.closedByServer();
    expect(packets).to.have.length(1);
    expect(packets[0]!.cmd).to.equal('connack');
    expect(packets[0]!.returnCode).to.equal(1);
  });

  it('refuses an empty client id with clean session 0 with return code 2 [MQTT-3.1.3-8]', async () => {
    const c = track(await RawClient.connectSocket(gw.port));
    // Raw bytes: mqtt-packet itself refuses to encode this CONNECT.
    c.send(Buffer.from([0x10, 0x0c, 0x00, 0x04, 0x4d, 0x51, 0x54, 0x54, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00]));
    const packets = await c.closedByServer();
    expect(packets.map((p) => [p.cmd, p.returnCode])).to.deep.equal([['connack', 2]]);
  });

  it('assigns an id to an empty client id with clean session 1 [MQTT-3.1.3-6]', async () => {
    const c = track(await RawClient.connectSocket(gw.port));
    c.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, clientId: '', keepalive: 0 });
    const ack = await c.next();
    expect(ack.returnCode).to.equal(0);
    expect([...gw.broker.clients.keys()].some((id) => id.startsWith('auto-'))).to.equal(true);
  });

  it('closes the first connection when a second one uses the same client id [MQTT-3.1.4-2]', async () => {
    const first = track(await RawClient.connect(gw.port, { clientId: 'twin' }));
    const second = track(await RawClient.connect(gw.port, { clientId: 'twin' }));
    await first.closedByServer();
    expect(second.closed).to.equal(false);
    expect(gw.broker.clients.get('twin')).to.not.equal(undefined);
  });

  it('closes a connection whose first packet is not CONNECT [MQTT-3.1.0-1]', async () => {
    const c = track(await RawClient.connectSocket(gw.port));
    c.send({ cmd: 'pingreq' });
    expect(await c.closedByServer()).to.deep.equal([]);
  });

  it('closes on a second CONNECT [MQTT-3.1.0-2]', async () => {
    const c = track(await RawClient.connect(gw.port, { clientId: 'twice' }));
    c.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, clientId: 'twice', keepalive: 0 });
    await c.closedByServer();
  });

  it('closes a client silent for 1.5 × keepalive and publishes its will [MQTT-3.1.2-24]', async () => {
    const watcher = track(await RawClient.connect(gw.port, { clientId: 'watcher' }));
    watcher.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'wills/#', qos: 0 }] });
    await watcher.nextOf('suback');
    const silent = track(await RawClient.connect(gw.port, {
      clientId: 'silent', keepalive: 1, will: { topic: 'wills/silent', payload: Buffer.from('gone'), qos: 0, retain: false },
    }));
    const started = Date.now();
    await silent.closedByServer(4000);
    expect(Date.now() - started).to.be.at.least(1400);
    const will = await watcher.nextOf('publish');
    expect(will.topic).to.equal('wills/silent');
    expect(String(will.payload)).to.equal('gone');
  });
});
