// MQTT 5 enhanced authentication (spec 4.12) with raw AUTH packets: an unknown method is refused
// with 0x8C; a registered challenge/response method runs CONNECT → AUTH 0x18 → AUTH 0x18 →
// CONNACK, and a wrong answer is refused with the reason the method gives.
import { expect } from 'chai';
import type mqttPacket from 'mqtt-packet';
import type { AuthExchange, EnhancedAuthMethod } from '../../src/broker/enhanced-auth.js';
import { ProtocolError } from '../../src/mqtt/errors.js';
import { Reason } from '../../src/mqtt/reason-codes.js';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { RawClient, type AnyPacket } from '../helpers/raw-client.js';
import { ClientPool, unique } from '../helpers/flows.js';

function props(p: AnyPacket): Record<string, unknown> {
  return (p.properties ?? {}) as Record<string, unknown>;
}

const METHOD = 'TEST-CHALLENGE';

/** Challenge/response: the server says "challenge", the client must answer "response". */
class ChallengeResponse implements EnhancedAuthMethod {
  readonly name = METHOD;
  /** What each exchange saw, for assertions. */
  readonly seen: Array<{ clientId: string; data: Array<string | undefined> }> = [];

  begin(client: { clientId: string }): AuthExchange {
    const record = { clientId: client.clientId, data: [] as Array<string | undefined> };
    this.seen.push(record);
    let challenged = false;
    return {
      step: (clientData) => {
        record.data.push(clientData?.toString());
        if (!challenged) {
          challenged = true;
          return Promise.resolve({ done: false, data: Buffer.from('challenge') });
        }
        if (clientData?.toString() !== 'response') {
          return Promise.reject(new ProtocolError(Reason.NotAuthorized, 'wrong answer to the challenge'));
        }
        return Promise.resolve({ done: true, data: Buffer.from('welcome') });
      },
    };
  }
}

function connectPacket(clientId: string, properties: mqttPacket.IConnectPacket['properties']): mqttPacket.IConnectPacket {
  return { cmd: 'connect', protocolId: 'MQTT', protocolVersion: 5, clean: true, clientId, keepalive: 0, properties };
}

describe('MQTT 5 enhanced authentication (AUTH)', () => {
  let gw: TestGateway;
  const pool = new ClientPool();
  let method: ChallengeResponse;

  before(async () => {
    gw = await startTestGateway();
  });
  beforeEach(() => {
    method = new ChallengeResponse();
  });
  afterEach(async () => {
    gw.broker.authMethods.delete(METHOD);
    await pool.closeAll();
  });
  after(async () => {
    await gw.stop();
  });

  it('refuses an authentication method that is not registered with CONNACK 0x8C [MQTT-4.12.0-1]', async () => {
    const c = pool.track(await RawClient.connectSocket(gw.port, 5));
    c.send(connectPacket(unique('a'), { authenticationMethod: METHOD, authenticationData: Buffer.from('hi') }));
    const packets = await c.closedByServer();
    expect(packets.map((p) => [p.cmd, p.reasonCode])).to.deep.equal([['connack', 0x8c]]);
  });

  it('runs a challenge/response exchange and accepts with CONNACK 0 naming the method [MQTT-4.12.0-2] [MQTT-4.12.0-5]', async () => {
    gw.broker.authMethods.set(METHOD, method);
    const id = unique('a');
    const c = pool.track(await RawClient.connectSocket(gw.port, 5));
    c.send(connectPacket(id, { authenticationMethod: METHOD, authenticationData: Buffer.from('hello') }));
    const challenge = await c.next();
    expect([challenge.cmd, challenge.reasonCode]).to.deep.equal(['auth', 0x18]);
    expect(props(challenge).authenticationMethod).to.equal(METHOD);
    expect(String(props(challenge).authenticationData)).to.equal('challenge');
    expect(gw.broker.clients.has(id), 'not connected before the exchange ends').to.equal(false);

    c.send({ cmd: 'auth', reasonCode: 0x18, properties: { authenticationMethod: METHOD, authenticationData: Buffer.from('response') } });
    const connack = await c.next();
    expect([connack.cmd, connack.reasonCode]).to.deep.equal(['connack', 0]);
    expect(props(connack).authenticationMethod).to.equal(METHOD);
    expect(String(props(connack).authenticationData)).to.equal('welcome');
    expect(method.seen).to.deep.equal([{ clientId: id, data: ['hello', 'response'] }]);

    // The connection works normally afterwards.
    c.send({ cmd: 'pingreq' });
    expect((await c.next()).cmd).to.equal('pingresp');
    expect(gw.broker.clients.has(id)).to.equal(true);
  });

  it('refuses a wrong answer with the reason the method gives (0x87 Not authorized) [MQTT-4.12.0-4]', async () => {
    gw.broker.authMethods.set(METHOD, method);
    const id = unique('a');
    const c = pool.track(await RawClient.connectSocket(gw.port, 5));
    c.send(connectPacket(id, { authenticationMethod: METHOD }));
    expect((await c.next()).cmd).to.equal('auth');
    c.send({ cmd: 'auth', reasonCode: 0x18, properties: { authenticationMethod: METHOD, authenticationData: Buffer.from('guess') } });
    const packets = await c.closedByServer();
    expect(packets.map((p) => [p.cmd, p.reasonCode])).to.deep.equal([['connack', 0x87]]);
    expect(gw.broker.clients.has(id)).to.equal(false);
  });

  it('refuses an AUTH reply naming another method as a protocol error 0x82 (4.12.0)', async () => {
    gw.broker.authMethods.set(METHOD, method);
    const c = pool.track(await RawClient.connectSocket(gw.port, 5));
    c.send(connectPacket(unique('a'), { authenticationMethod: METHOD }));
    expect((await c.next()).cmd).to.equal('auth');
    c.send({ cmd: 'auth', reasonCode: 0x18, properties: { authenticationMethod: 'OTHER', authenticationData: Buffer.from('response') } });
    const packets = await c.closedByServer();
    expect(packets.map((p) => [p.cmd, p.reasonCode])).to.deep.equal([['connack', 0x82]]);
  });

  it('does not let other packets through before the exchange ends [MQTT-3.1.2-30]', async () => {
    gw.broker.authMethods.set(METHOD, method);
    const c = pool.track(await RawClient.connectSocket(gw.port, 5));
    c.send(connectPacket(unique('a'), { authenticationMethod: METHOD }));
    expect((await c.next()).cmd).to.equal('auth');
    c.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'x', qos: 0 }] });
    const packets = await c.closedByServer();
    expect(packets.filter((p) => p.cmd === 'suback')).to.deep.equal([]);
    for (const p of packets) expect([p.cmd, p.reasonCode]).to.deep.equal(['connack', 0x82]);
  });

  it('connects clients without an authentication method normally while a method is registered', async () => {
    gw.broker.authMethods.set(METHOD, method);
    const c = pool.track(await RawClient.connect(gw.port, { version: 5 }));
    expect(c.closed).to.equal(false);
    expect(method.seen).to.deep.equal([]);
  });
});
