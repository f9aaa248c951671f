// TLS listeners over real sockets, with a PKI made by the openssl CLI: mutual TLS with good,
// wrong-CA, expired, revoked and missing client certificates, TLS 1.2 minimum, the certificate's
// common name as the user name, and certificate reload without dropping connections.
import { expect } from 'chai';
import { copyFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import tls from 'node:tls';
import mqtt from 'mqtt';
import { createLogger } from '../../src/diagnostics/log.js';
import { defaultConfig } from '../../src/config/load.js';
import { silentLogger } from '../../src/diagnostics/log.js';
import { startGateway } from '../../src/gateway.js';
import { listener, startListenerGateway, type ListenerGateway } from '../helpers/listener-gateway.js';
import { createTestPki, type CertFiles, type TestPki } from '../helpers/test-pki.js';
import { unique } from '../helpers/flows.js';

type MqttClient = ReturnType<typeof mqtt.connect>;
type ClientOptions = NonNullable<Parameters<typeof mqtt.connect>[1]>;

/** Log lines (parsed pino JSON) with a way to await one. */
class LogCapture {
  readonly lines: Array<Record<string, unknown>> = [];
  private waiters: Array<() => void> = [];
  readonly stream = new Writable({
    write: (chunk: Buffer, _enc, cb) => {
      for (const l of chunk.toString().split('\n')) {
        if (l.trim()) this.lines.push(JSON.parse(l) as Record<string, unknown>);
      }
      for (const w of this.waiters.splice(0)) w();
      cb();
    },
  });

  find(pred: (l: Record<string, unknown>) => boolean, timeoutMs = 3000): Promise<Record<string, unknown>> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no such log line; got ${JSON.stringify(this.lines.slice(-5))}`)), timeoutMs);
      const check = (): void => {
        const hit = this.lines.find(pred);
        if (hit) {
          clearTimeout(timer);
          resolve(hit);
        } else {
          this.waiters.push(check);
        }
      };
      check();
    });
  }
}

describe('TLS listeners', function () {
  this.timeout(20000);
  let pki: TestPki;
  let gw: ListenerGateway;
  let logs: LogCapture;
  /** The mutual-TLS listener's live cert/key paths (overwritten by the reload test). */
  let live: { cert: string; key: string };
  let mtlsPort: number;
  let tlsPort: number;
  const clients: MqttClient[] = [];

  before(async () => {
    pki = createTestPki();
    live = { cert: join(pki.dir, 'live.crt'), key: join(pki.dir, 'live.key') };
    copyFileSync(pki.server.cert, live.cert);
    copyFileSync(pki.server.key, live.key);
    logs = new LogCapture();
    gw = await startListenerGateway([
      listener({
        type: 'tls', cert: live.cert, key: live.key, ca: pki.ca, crl: pki.crl,
        require_client_cert: true, use_identity_as_username: true,
      }),
      listener({ type: 'tls', cert: pki.server.cert, key: pki.server.key }),
    ], { log: createLogger('info', logs.stream) });
    mtlsPort = gw.under[0]!.port;
    tlsPort = gw.under[1]!.port;
  });
  afterEach(async () => {
    await Promise.all(clients.splice(0).map((c) => c.endAsync(true)));
  });
  after(async () => {
    await gw?.stop();
    pki?.cleanup();
  });

  function tlsOpts(c: CertFiles | undefined, ca = pki.ca): ClientOptions {
    return {
      ca: pki.read(ca),
      ...(c ? { cert: pki.read(c.cert), key: pki.read(c.key) } : {}),
    };
  }

  async function connect(opts: ClientOptions): Promise<MqttClient> {
    const client = mqtt.connect({
      host: '127.0.0.1', protocolVersion: 4, reconnectPeriod: 0, connectTimeout: 3000, clientId: unique('tls'), ...opts,
    });
    clients.push(client);
    await new Promise<void>((resolve, reject) => {
      client.once('connect', () => resolve());
      client.once('error', reject);
      client.once('close', () => reject(new Error('closed before CONNACK')));
    });
    return client;
  }

  /** Resolves with the reason when the connection fails before CONNACK; rejects if it connects. */
  function refused(opts: ClientOptions): Promise<string> {
    const client = mqtt.connect({
      host: '127.0.0.1', protocolVersion: 4, reconnectPeriod: 0, connectTimeout: 3000, clientId: unique('bad'), ...opts,
    });
    clients.push(client);
    return new Promise<string>((resolve, reject) => {
      client.once('connect', () => reject(new Error('connected, but should have been refused')));
      client.once('error', (err) => resolve(err.message));
      client.once('close', () => resolve('closed'));
    });
  }

  function nextMessage(client: MqttClient, timeoutMs = 3000): Promise<{ topic: string; payload: string }> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('no message')), timeoutMs);
      client.once('message', (topic, payload) => {
        clearTimeout(timer);
        resolve({ topic, payload: payload.toString() });
      });
    });
  }

  function refusalLogged(cn: string | undefined, reasonPart: RegExp): Promise<Record<string, unknown>> {
    return logs.find((l) => typeof l.msg === 'string' && l.msg.startsWith('client certificate refused') &&
      (cn === undefined || l.subject === cn) && reasonPart.test(String(l.reason)));
  }

  it('accepts a good client certificate over mqtts and shares the publish path with tcp clients', async () => {
    const secure = await connect({ protocol: 'mqtts', port: mtlsPort, ...tlsOpts(pki.client) });
    const plain = await connect({ protocol: 'mqtt', port: gw.tcpPort });
    const topic = `t/${unique('x')}`;
    await plain.subscribeAsync(topic, { qos: 1 });
    await secure.subscribeAsync(topic, { qos: 1 });
    const atPlain = nextMessage(plain);
    const atSecure = nextMessage(secure);
    await secure.publishAsync(topic, 'from-tls', { qos: 1 });
    expect(await atPlain).to.deep.equal({ topic, payload: 'from-tls' });
    expect(await atSecure).to.deep.equal({ topic, payload: 'from-tls' });
    const back = nextMessage(secure);
    await plain.publishAsync(topic, 'from-tcp', { qos: 0 });
    expect(await back).to.deep.equal({ topic, payload: 'from-tcp' });
  });

  it("passes the certificate's common name as the identity with use_identity_as_username", async () => {
    const clientId = unique('cn');
    // The user name in CONNECT does not count: the certificate says who this is.
    await connect({ protocol: 'mqtts', port: mtlsPort, clientId, username: 'someone-else', ...tlsOpts(pki.client) });
    const conn = gw.broker.clients.get(clientId);
    expect(conn?.certificateIdentity).to.equal('truck-sensor-1');
    expect(conn?.listener.useIdentityAsUsername).to.equal(true);
    expect(conn?.username).to.equal('truck-sensor-1');
    expect(conn?.remoteAddress).to.match(/^127\.0\.0\.1:\d+$/);
  });

  it('refuses a client certificate from another CA and logs the remote address', async () => {
    await refused({ protocol: 'mqtts', port: mtlsPort, ...tlsOpts(pki.wrongCaClient) });
    const line = await refusalLogged('truck-foreign', /UNABLE_TO_VERIFY_LEAF_SIGNATURE|UNABLE_TO_GET_ISSUER_CERT/);
    expect(line.remote).to.match(/^127\.0\.0\.1:\d+$/);
    expect(line.level).to.equal(40);
  });

  it('refuses an expired client certificate', async () => {
    await refused({ protocol: 'mqtts', port: mtlsPort, ...tlsOpts(pki.expiredClient) });
    await refusalLogged('truck-expired', /CERT_HAS_EXPIRED/);
  });

  it('refuses a revoked client certificate (CRL)', async () => {
    await refused({ protocol: 'mqtts', port: mtlsPort, ...tlsOpts(pki.revokedClient) });
    await refusalLogged('truck-revoked', /CERT_REVOKED/);
  });

  it('refuses a client without a certificate when one is required', async () => {
    await refused({ protocol: 'mqtts', port: mtlsPort, ...tlsOpts(undefined) });
    await logs.find((l) => l.msg === 'client certificate refused: none presented');
    // The same client is fine on the listener that does not ask for certificates.
    await connect({ protocol: 'mqtts', port: tlsPort, ...tlsOpts(undefined) });
  });

  it('refuses TLS 1.1 and accepts TLS 1.2', async () => {
    const err = await new Promise<Error>((resolve, reject) => {
      const s = tls.connect({
        host: '127.0.0.1', port: tlsPort, ca: pki.read(pki.ca), minVersion: 'TLSv1', maxVersion: 'TLSv1.1',
        // Let the client offer TLS 1.1 at all, so the refusal is the server's.
        ciphers: 'DEFAULT:@SECLEVEL=0',
      });
      s.once('secureConnect', () => {
        s.destroy();
        reject(new Error(`TLS 1.1 was accepted (${s.getProtocol()})`));
      });
      s.once('error', resolve);
    });
    expect(err.message).to.match(/protocol version|unsupported protocol/i);
    await logs.find((l) => l.msg === `TLS handshake failed: ${String(l.err)}` && /unsupported protocol|version/i.test(String(l.err)));
    const proto = await new Promise<string | null>((resolve, reject) => {
      const s = tls.connect({ host: '127.0.0.1', port: tlsPort, ca: pki.read(pki.ca), maxVersion: 'TLSv1.2' }, () => {
        const p = s.getProtocol();
        s.destroy();
        resolve(p);
      });
      s.once('error', reject);
    });
    expect(proto).to.equal('TLSv1.2');
  });

  it('logs and survives a plain MQTT CONNECT sent to the TLS port', async () => {
    const net = await import('node:net');
    await new Promise<void>((resolve) => {
      const s = net.connect(tlsPort, '127.0.0.1', () => s.write(Buffer.from('100c00044d5154540402003c0000', 'hex')));
      s.on('error', () => resolve());
      s.on('close', () => resolve());
    });
    await logs.find((l) => typeof l.msg === 'string' && l.msg.startsWith('TLS handshake failed'));
    await connect({ protocol: 'mqtts', port: tlsPort, ...tlsOpts(undefined) });
  });

  it('never resumes a TLS session on a mutual-TLS listener (each connection meets the current CRL)', async () => {
    for (const [port, expected] of [[mtlsPort, false], [tlsPort, true]] as const) {
      for (const maxVersion of ['TLSv1.2', 'TLSv1.3'] as const) {
        const opts = {
          host: '127.0.0.1', port, maxVersion, ca: pki.read(pki.ca), cert: pki.read(pki.client.cert), key: pki.read(pki.client.key),
        };
        const session = await new Promise<Buffer | undefined>((resolve, reject) => {
          let got: Buffer | undefined;
          const s = tls.connect(opts);
          s.on('session', (x: Buffer) => { got = x; });
          s.on('data', () => undefined);
          s.once('error', reject);
          // TLS 1.3 tickets arrive after the handshake.
          s.once('secureConnect', () => setTimeout(() => { s.destroy(); resolve(got); }, 150));
        });
        expect(session, `${maxVersion} session`).to.not.equal(undefined);
        const reused = await new Promise<boolean>((resolve, reject) => {
          const s = tls.connect({ ...opts, session }, () => {
            const r = s.isSessionReused();
            s.destroy();
            resolve(r);
          });
          s.once('error', reject);
        });
        expect(reused, `${port === mtlsPort ? 'mutual' : 'plain'} ${maxVersion}`).to.equal(expected);
      }
    }
  });

  it('reloads the certificate without dropping connections; a broken reload keeps the old one', async () => {
    const serverCn = (): Promise<string> => new Promise((resolve, reject) => {
      const s = tls.connect({
        host: '127.0.0.1', port: mtlsPort, ca: pki.read(pki.ca), cert: pki.read(pki.client.cert), key: pki.read(pki.client.key),
      }, () => {
        const cn = s.getPeerCertificate().subject.CN;
        s.destroy();
        resolve(String(cn));
      });
      s.once('error', reject);
    });
    expect(await serverCn()).to.equal('convoy-test-server');
    const old = await connect({ protocol: 'mqtts', port: mtlsPort, ...tlsOpts(pki.client) });
    const topic = `t/${unique('reload')}`;
    await old.subscribeAsync(topic, { qos: 1 });

    copyFileSync(pki.server2.cert, live.cert);
    copyFileSync(pki.server2.key, live.key);
    await gw.reload();
    await logs.find((l) => l.msg === 'TLS certificate material reloaded');
    expect(await serverCn()).to.equal('convoy-test-server-2');

    // The connection made before the reload still publishes and receives.
    const got = nextMessage(old);
    await old.publishAsync(topic, 'still-here', { qos: 1 });
    expect(await got).to.deep.equal({ topic, payload: 'still-here' });
    expect(old.connected).to.equal(true);

    // A broken key: logged with the file name, the previous certificate stays in service.
    writeFileSync(live.key, 'not a key\n');
    await gw.reload();
    const line = await logs.find((l) => l.level === 50 && l.file === live.key);
    expect(String(line.msg)).to.contain(live.key);
    expect(await serverCn()).to.equal('convoy-test-server-2');
    // Cert and key of different pairs (half-copied rotation): refused, previous kept.
    copyFileSync(pki.server.key, live.key);
    await gw.reload();
    await logs.find((l) => l.level === 50 && typeof l.msg === 'string' && l.msg.includes('does not match'));
    expect(await serverCn()).to.equal('convoy-test-server-2');
    const after = await connect({ protocol: 'mqtts', port: mtlsPort, ...tlsOpts(pki.client) });
    expect(after.connected).to.equal(true);
  });

  it('applies a new CRL on reload: a certificate revoked since is refused, and its open connection is closed (0x87)', async () => {
    const device = pki.issueClient('truck-sold');
    const opts = { protocol: 'mqtts' as const, port: mtlsPort, ...tlsOpts(device) };
    const open = await connect({ ...opts, protocolVersion: 5 });
    const bystander = await connect({ protocol: 'mqtts', port: mtlsPort, ...tlsOpts(pki.client), protocolVersion: 5 });
    const cut = new Promise<number | undefined>((resolve) => open.once('disconnect', (p) => resolve(p.reasonCode)));
    const closed = new Promise<void>((resolve) => open.once('close', () => resolve()));
    pki.revoke(device.cert);
    // A consistent cert and key for this reload (the reload test may have left a mismatch).
    copyFileSync(pki.server2.cert, live.cert);
    copyFileSync(pki.server2.key, live.key);
    await gw.reload();
    expect(await cut).to.equal(0x87);
    await closed;
    await logs.find((l) => l.msg === 'client certificate revoked by the reloaded CRL: connection closed');
    await refused(opts);
    await refusalLogged('truck-sold', /CERT_REVOKED/);
    // A connection whose certificate was not revoked stays.
    expect(bystander.connected).to.equal(true);
    await connect({ protocol: 'mqtts', port: mtlsPort, ...tlsOpts(pki.client) });
  });

  it('fails to start with a missing key file, naming the file and the listener', async () => {
    const config = defaultConfig();
    const missing = join(pki.dir, 'nope.key');
    config.data_dir = join(pki.dir, 'data-missing');
    config.store = { ...config.store, enabled: false };
    config.listeners = [listener({ type: 'tls', cert: pki.server.cert, key: missing })];
    let err: Error | undefined;
    try {
      const g = await startGateway(config, silentLogger);
      await g.stop();
    } catch (e) {
      err = e as Error;
    }
    expect(err?.message).to.contain(missing).and.to.contain('listeners[0] (tls');
  });

  it('refuses use_identity_as_username without require_client_cert at start', async () => {
    const config = defaultConfig();
    config.data_dir = join(pki.dir, 'data-identity');
    config.store = { ...config.store, enabled: false };
    config.listeners = [listener({ type: 'tls', cert: pki.server.cert, key: pki.server.key, use_identity_as_username: true })];
    let err: Error | undefined;
    try {
      const g = await startGateway(config, silentLogger);
      await g.stop();
    } catch (e) {
      err = e as Error;
    }
    expect(err?.message).to.contain('use_identity_as_username needs require_client_cert');
  });
});
