// examples/secure.toml run as is: `bin/convoy run --config examples/secure.toml` with its files made
// by `convoy certs` and `convoy passwd` and the ACL documented in the example's own comments, ports
// 0 through the environment (read back from the "listening" log lines). Clients are MQTT.js over
// mqtts:// and wss://: certificate and password logins, anonymous refused on every listener, the
// ACL refusing what a client may not do, and SIGHUP applying a revocation.
import { expect } from 'chai';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import mqtt from 'mqtt';
import { unique } from '../helpers/flows.js';

type MqttClient = ReturnType<typeof mqtt.connect>;
type ClientOptions = NonNullable<Parameters<typeof mqtt.connect>[1]>;

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const CONVOY = join(ROOT, 'bin', 'convoy');
const EXAMPLE = join(ROOT, 'examples', 'secure.toml');

/** The example ACL written in the comments of examples/secure.toml, as a file would hold it. */
function aclFromExample(text: string): string {
  const lines = text.split('\n');
  const start = lines.findIndex((l) => l.startsWith('# Example ACL file'));
  const end = lines.findIndex((l, i) => i > start && l.startsWith('# A user name or client id'));
  if (start < 0 || end < 0) throw new Error('examples/secure.toml: the example ACL block was not found');
  return lines.slice(start + 1, end).filter((l) => l.startsWith('#   ')).map((l) => l.slice(4)).join('\n') + '\n';
}

function convoy(args: string[]): string {
  return execFileSync(CONVOY, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** `convoy run` as a child process, with its parsed log lines. */
class Running {
  readonly lines: Array<Record<string, unknown>> = [];
  private buf = '';
  private waiters: Array<() => void> = [];
  exited = false;
  readonly exit: Promise<number | null>;

  constructor(readonly child: ChildProcess) {
    child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      this.buf += d;
      let nl;
      while ((nl = this.buf.indexOf('\n')) >= 0) {
        const line = this.buf.slice(0, nl);
        this.buf = this.buf.slice(nl + 1);
        if (line.trim()) this.lines.push(JSON.parse(line) as Record<string, unknown>);
      }
      this.wake();
    });
    child.stderr!.setEncoding('utf8').on('data', (d: string) => {
      this.lines.push({ stderr: d });
      this.wake();
    });
    this.exit = new Promise((resolve) => child.once('close', (code) => {
      this.exited = true;
      this.wake();
      resolve(code);
    }));
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  /** Resolves when `n` lines match; fails on timeout or exit. */
  waitFor(pred: (l: Record<string, unknown>) => boolean, n = 1, timeoutMs = 10000): Promise<Array<Record<string, unknown>>> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`timed out; log: ${JSON.stringify(this.lines.slice(-10))}`)), timeoutMs);
      const check = (): void => {
        const hits = this.lines.filter(pred);
        if (hits.length >= n) {
          clearTimeout(timer);
          resolve(hits);
        } else if (this.exited) {
          clearTimeout(timer);
          reject(new Error(`convoy exited; log: ${JSON.stringify(this.lines.slice(-10))}`));
        } else {
          this.waiters.push(check);
        }
      };
      check();
    });
  }
}

type Outcome = { ok: true; client: MqttClient } | { ok: false; code: number | undefined; error: string };

describe('examples/secure.toml', function () {
  this.timeout(60000);
  let dir: string;
  let pkiDir: string;
  let gw: Running;
  let mtlsPort: number;
  let tlsPort: number;
  let wssPort: number;
  let ca: Buffer;
  const clients: MqttClient[] = [];
  const passwords = { tablet: 'tablet-secret', guest: 'guest-secret' };

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'convoy-secure-'));
    pkiDir = join(dir, 'pki');
    // The commands listed in the example's comments, with the test's directory.
    convoy(['certs', 'init', '--cn', 'Truck Test CA', '--dir', pkiDir]);
    convoy(['certs', 'server', '--host', 'localhost', '--ip', '127.0.0.1', '--dir', pkiDir]);
    for (const name of ['telematics', 'door-sensor-1', 'door-sensor-2', 'door-sensor-3']) convoy(['certs', 'client', name, '--dir', pkiDir]);
    convoy(['certs', 'revoke', 'door-sensor-2', '--dir', pkiDir]);
    const passwd = join(dir, 'passwd');
    convoy(['passwd', '-c', '-b', passwd, 'tablet', passwords.tablet]);
    convoy(['passwd', '-b', passwd, 'guest', passwords.guest]);
    const acl = join(dir, 'acl');
    writeFileSync(acl, aclFromExample(readFileSync(EXAMPLE, 'utf8')));
    ca = readFileSync(join(pkiDir, 'ca.crt'));

    const env = {
      ...process.env,
      CONVOY_LAN_HOST: '127.0.0.1', CONVOY_MTLS_PORT: '0', CONVOY_TLS_PORT: '0', CONVOY_WSS_PORT: '0',
      CONVOY_PKI_DIR: pkiDir, CONVOY_PASSWORD_FILE: passwd, CONVOY_ACL_FILE: acl, CONVOY_DATA: join(dir, 'data'),
    };
    const check = execFileSync(CONVOY, ['config', 'check', EXAMPLE], { env, encoding: 'utf8' });
    expect(check).to.contain('ok');
    gw = new Running(spawn(CONVOY, ['run', '--config', EXAMPLE], { env, stdio: ['ignore', 'pipe', 'pipe'] }));
    const listening = await gw.waitFor((l) => l.msg === 'listening', 3);
    const names = listening.map((l) => String(l.listener));
    // Listeners are started in the order of the file: mTLS, TLS + password, WSS.
    const port = (name: string, re: RegExp): number => {
      const m = re.exec(name);
      if (!m?.[1]) throw new Error(`unexpected listener ${name}`);
      return Number(m[1]);
    };
    mtlsPort = port(names[0]!, /^tls:\/\/127\.0\.0\.1:(\d+)$/);
    tlsPort = port(names[1]!, /^tls:\/\/127\.0\.0\.1:(\d+)$/);
    wssPort = port(names[2]!, /^wss:\/\/127\.0\.0\.1:(\d+)\/mqtt$/);
  });

  afterEach(async () => {
    await Promise.all(clients.splice(0).map((c) => c.endAsync(true)));
  });

  after(async () => {
    if (gw && !gw.exited) {
      gw.child.kill('SIGTERM');
      const code = await gw.exit;
      expect(code).to.equal(0);
    }
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  function attempt(opts: ClientOptions): Promise<Outcome> {
    const client = mqtt.connect({
      host: '127.0.0.1', protocolVersion: 5, reconnectPeriod: 0, connectTimeout: 5000, clientId: unique('sec'), ca, ...opts,
    });
    clients.push(client);
    return new Promise((resolve) => {
      client.once('connect', () => resolve({ ok: true, client }));
      client.once('error', (e: Error & { code?: unknown }) => resolve({ ok: false, code: typeof e.code === 'number' ? e.code : undefined, error: e.message }));
      client.once('close', () => resolve({ ok: false, code: undefined, error: 'closed before CONNACK' }));
    });
  }

  async function connect(opts: ClientOptions): Promise<MqttClient> {
    const r = await attempt(opts);
    if (!r.ok) throw new Error(`connect refused: ${r.error}`);
    return r.client;
  }

  const cert = (name: string): { cert: Buffer; key: Buffer } => ({
    cert: readFileSync(join(pkiDir, 'clients', `${name}.crt`)),
    key: readFileSync(join(pkiDir, 'clients', `${name}.key`)),
  });
  const mtls = (name: string, extra: ClientOptions = {}): ClientOptions => ({ protocol: 'mqtts', port: mtlsPort, ...cert(name), ...extra });
  const tlsUser = (username: string, password: string, extra: ClientOptions = {}): ClientOptions => ({ protocol: 'mqtts', port: tlsPort, username, password, ...extra });
  const wssUser = (username: string, password: string, extra: ClientOptions = {}): ClientOptions => ({ protocol: 'wss', port: wssPort, path: '/mqtt', username, password, ...extra });

  /** SUBSCRIBE and its SUBACK codes (MQTT.js reports a refusal as an error carrying the SUBACK). */
  async function subackCodes(client: MqttClient, filter: string): Promise<number[]> {
    try {
      return (await client.subscribeAsync(filter, { qos: 1 })).map((g) => g.qos);
    } catch (e) {
      const granted = (e as { packet?: { granted?: Array<number | { qos: number }> } }).packet?.granted;
      if (!granted) throw e;
      return granted.map((g) => (typeof g === 'number' ? g : g.qos));
    }
  }

  function nextMessage(client: MqttClient, timeoutMs = 5000): Promise<{ topic: string; payload: string }> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('no message')), timeoutMs);
      client.once('message', (topic: string, payload: Buffer) => {
        clearTimeout(timer);
        resolve({ topic, payload: payload.toString() });
      });
    });
  }

  describe('logins', () => {
    it('a device with a good client certificate connects over mTLS (its name is its user name)', async () => {
      const c = await connect(mtls('door-sensor-1'));
      // The pattern "truck/devices/%u/#" grants the certificate's name its own subtree.
      const granted = await c.subscribeAsync('truck/devices/door-sensor-1/#', { qos: 1 });
      expect(granted[0]!.qos).to.equal(1);
    });

    it('3.1.1 too', async () => {
      const c = await connect(mtls('telematics', { protocolVersion: 4 }));
      expect(c.connected).to.equal(true);
    });

    it('the mTLS listener refuses a client without a certificate (anonymous), with or without a password', async () => {
      for (const opts of [{}, { username: 'tablet', password: passwords.tablet }]) {
        const r = await attempt({ protocol: 'mqtts', port: mtlsPort, ...opts });
        expect(r.ok, JSON.stringify(opts)).to.equal(false);
      }
    });

    it('the mTLS listener refuses a revoked certificate and one from another CA', async () => {
      expect((await attempt(mtls('door-sensor-2'))).ok).to.equal(false);
      const other = join(dir, 'other-pki');
      convoy(['certs', 'init', '--cn', 'Someone Else', '--dir', other]);
      convoy(['certs', 'client', 'door-sensor-1', '--dir', other]);
      const r = await attempt({
        protocol: 'mqtts', port: mtlsPort,
        cert: readFileSync(join(other, 'clients', 'door-sensor-1.crt')), key: readFileSync(join(other, 'clients', 'door-sensor-1.key')),
      });
      expect(r.ok).to.equal(false);
    });

    it('a password client connects over TLS (MQTT 5 and 3.1.1)', async () => {
      await connect(tlsUser('tablet', passwords.tablet));
      await connect(tlsUser('tablet', passwords.tablet, { protocolVersion: 4 }));
    });

    it('the TLS listener refuses a wrong password (0x86 / 4) and anonymous clients (0x87 / 5)', async () => {
      expect(await attempt(tlsUser('tablet', 'nope'))).to.include({ ok: false, code: 0x86 });
      expect(await attempt(tlsUser('tablet', 'nope', { protocolVersion: 4 }))).to.include({ ok: false, code: 4 });
      expect(await attempt({ protocol: 'mqtts', port: tlsPort })).to.include({ ok: false, code: 0x87 });
      expect(await attempt({ protocol: 'mqtts', port: tlsPort, protocolVersion: 4 })).to.include({ ok: false, code: 5 });
    });

    it('the TLS listener does not take a certificate instead of a password', async () => {
      expect(await attempt({ protocol: 'mqtts', port: tlsPort, ...cert('telematics') })).to.include({ ok: false, code: 0x87 });
    });

    it('a password client connects over secure WebSocket (MQTT.js)', async () => {
      await connect(wssUser('tablet', passwords.tablet));
      await connect(wssUser('tablet', passwords.tablet, { protocolVersion: 4 }));
    });

    it('the WSS listener refuses anonymous clients and wrong passwords', async () => {
      expect(await attempt({ protocol: 'wss', port: wssPort, path: '/mqtt' })).to.include({ ok: false, code: 0x87 });
      expect(await attempt({ protocol: 'wss', port: wssPort, path: '/mqtt', protocolVersion: 4 })).to.include({ ok: false, code: 5 });
      expect(await attempt(wssUser('guest', 'nope'))).to.include({ ok: false, code: 0x86 });
    });

    it('refusals are logged', async () => {
      await gw.waitFor((l) => l.msg === 'login refused' && l.level === 40);
    });
  });

  describe('the ACL', () => {
    it('messages flow between listeners where the ACL allows: sensor (mTLS) → tablet (WSS), telematics (mTLS) → tablet (TLS)', async () => {
      const viaWss = await connect(wssUser('tablet', passwords.tablet));
      await viaWss.subscribeAsync('truck/telemetry/#', { qos: 1 });
      const viaTls = await connect(tlsUser('tablet', passwords.tablet));
      await viaTls.subscribeAsync('truck/alarms/#', { qos: 1 });
      const sensor = await connect(mtls('door-sensor-1'));
      const telematics = await connect(mtls('telematics'));
      const gotTelemetry = nextMessage(viaWss);
      const gotAlarm = nextMessage(viaTls);
      await sensor.publishAsync('truck/telemetry/door-sensor-1/open', 'true', { qos: 1 });
      await telematics.publishAsync('truck/alarms/reefer', 'too warm', { qos: 1 });
      expect(await gotTelemetry).to.deep.equal({ topic: 'truck/telemetry/door-sensor-1/open', payload: 'true' });
      expect(await gotAlarm).to.deep.equal({ topic: 'truck/alarms/reefer', payload: 'too warm' });
    });

    it('a client without permission is refused: SUBSCRIBE gets 0x87 (MQTT 5) / 0x80 (3.1.1)', async () => {
      const sensor = await connect(mtls('door-sensor-1'));
      expect(await subackCodes(sensor, 'truck/orders/#')).to.deep.equal([0x87]);
      const guest = await connect(tlsUser('guest', passwords.guest, { protocolVersion: 4 }));
      expect(await subackCodes(guest, 'truck/telemetry/#')).to.deep.equal([0x80]);
      // Another device's subtree: the %u pattern gives each its own only.
      expect(await subackCodes(sensor, 'truck/devices/telematics/#')).to.deep.equal([0x87]);
    });

    it('a PUBLISH without permission gets PUBACK 0x87 and reaches nobody', async () => {
      const tablet = await connect(wssUser('tablet', passwords.tablet));
      await tablet.subscribeAsync(['truck/orders/#', 'truck/telemetry/#'], { qos: 1 });
      const guest = await connect(tlsUser('guest', passwords.guest));
      const first = nextMessage(tablet);
      let refused: unknown;
      await guest.publishAsync('truck/orders/42', 'deliver to the thief', { qos: 1 }).catch((e: unknown) => {
        refused = e;
      });
      expect(refused, 'PUBACK 0x87 surfaces as an error in MQTT.js').to.have.property('code', 0x87);
      // Same publisher, allowed topic: arrives, and is the first thing to arrive.
      await guest.publishAsync('truck/telemetry/guest/t', 'ok', { qos: 1 });
      expect(await first).to.deep.equal({ topic: 'truck/telemetry/guest/t', payload: 'ok' });
    });
  });

  describe('SIGHUP', () => {
    it('`convoy certs revoke` + SIGHUP: the revoked device can no longer connect; others still can', async () => {
      await connect(mtls('door-sensor-3'));
      convoy(['certs', 'revoke', 'door-sensor-3', '--dir', pkiDir]);
      const reloads = gw.lines.filter((l) => l.msg === 'security files reloaded').length;
      gw.child.kill('SIGHUP');
      await gw.waitFor((l) => l.msg === 'security files reloaded', reloads + 1);
      expect((await attempt(mtls('door-sensor-3'))).ok).to.equal(false);
      await connect(mtls('door-sensor-1'));
    });

    it('`convoy passwd` + SIGHUP: the new password works, the old one is refused', async () => {
      convoy(['passwd', '-b', join(dir, 'passwd'), 'guest', 'new-guest-secret']);
      const reloads = gw.lines.filter((l) => l.msg === 'security files reloaded').length;
      gw.child.kill('SIGHUP');
      await gw.waitFor((l) => l.msg === 'security files reloaded', reloads + 1);
      expect(await attempt(tlsUser('guest', passwords.guest))).to.include({ ok: false, code: 0x86 });
      await connect(tlsUser('guest', 'new-guest-secret'));
    });
  });
});
