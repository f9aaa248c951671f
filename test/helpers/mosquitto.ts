// A real Mosquitto broker (/usr/sbin/mosquitto) for tests that need an independent MQTT server,
// e.g. HQ for the uplink. It listens on 127.0.0.1 on a free port, its configuration lives in a
// temporary directory, and it is awaited by an MQTT CONNECT/CONNACK probe (never by sleeping).
//
// Mosquitto 2.0.11 cannot restrict a listener to MQTT 3.1.1, so `version311Only` puts a small
// front in the exposed port: it answers an MQTT 5 CONNECT the way a 3.1.1-only server does (a
// 3.1.1 CONNACK with return code 1, "unacceptable protocol version", then close) and relays every
// other connection byte for byte to Mosquitto on an internal port.
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const MOSQUITTO_BIN = process.env.MOSQUITTO_BIN ?? '/usr/sbin/mosquitto';

export interface MosquittoOptions {
  /** Port to listen on; default: a free port found by binding port 0. */
  port?: number;
  /** Refuse MQTT 5 clients like a 3.1.1-only broker (see the file comment). */
  version311Only?: boolean;
  /** Extra mosquitto.conf lines, appended after the listener (e.g. "max_queued_messages 10"). */
  extraConfig?: string[];
  /** Keep sessions and retained messages in the temp dir across restart() (default false). */
  persistence?: boolean;
  /** Deadline for the broker to accept an MQTT connection, per start (default 10 s). */
  readyTimeoutMs?: number;
}

export interface Mosquitto {
  /** The port clients connect to on 127.0.0.1 (stays the same across restart()). */
  readonly port: number;
  readonly host: '127.0.0.1';
  /** "127.0.0.1:PORT", as an uplink endpoint. */
  readonly endpoint: string;
  /** Pid of the current mosquitto process (changes on restart()). */
  readonly pid: number;
  /** Temporary directory holding mosquitto.conf (and the persistence file, if enabled). */
  readonly dir: string;
  /** True while the current process has not exited. */
  readonly running: boolean;
  /** stderr of the current process (mosquitto's log), for error messages. */
  stderr(): string;
  /** Resolves when the current process exits. */
  exited(): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Kills the broker (SIGTERM, then SIGKILL), awaits its exit and removes the temp dir. Idempotent. */
  stop(): Promise<void>;
  /** Stops the broker (if running) and starts it again on the same port; resolves when it is ready. */
  restart(): Promise<void>;
  /** Sends a signal to the current process (does not wait; use exited()). */
  kill(signal?: NodeJS.Signals): void;
}

const MAX_STDERR = 64 * 1024;

/** A port that was free a moment ago (bind 127.0.0.1:0, read it, close). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address() as net.AddressInfo;
      srv.close(() => resolve(addr.port));
    });
  });
}

/** A minimal MQTT 3.1.1 CONNECT (clean session, keepalive 0) with the given client id. */
function connectPacket(clientId: string): Buffer {
  const id = Buffer.from(clientId, 'utf8');
  const body = Buffer.concat([
    Buffer.from([0x00, 0x04]), Buffer.from('MQTT'), Buffer.from([0x04, 0x02, 0x00, 0x00]),
    Buffer.from([id.length >> 8, id.length & 0xff]), id,
  ]);
  return Buffer.concat([Buffer.from([0x10, body.length]), body]);
}

type ProbeResult = 'ready' | 'refused' | { error: string };

/** One attempt: TCP connect, CONNECT, expect CONNACK 0. */
function probeOnce(port: number, timeoutMs: number): Promise<ProbeResult> {
  return new Promise((resolve) => {
    let got = Buffer.alloc(0);
    const s = net.connect({ host: '127.0.0.1', port });
    const done = (r: ProbeResult): void => {
      clearTimeout(timer);
      s.destroy();
      resolve(r);
    };
    const timer = setTimeout(() => done({ error: `no CONNACK within ${timeoutMs} ms` }), timeoutMs);
    s.once('connect', () => s.write(connectPacket(`convoy-probe-${process.pid}-${Math.random().toString(16).slice(2, 8)}`)));
    s.on('data', (d: Buffer) => {
      got = Buffer.concat([got, d]);
      if (got.length < 4) return;
      if (got[0] === 0x20 && got[1] === 0x02 && got[3] === 0x00) done('ready');
      else done({ error: `unexpected reply to CONNECT: ${got.subarray(0, 8).toString('hex')}` });
    });
    s.once('error', (e: NodeJS.ErrnoException) => done(e.code === 'ECONNREFUSED' || e.code === 'ECONNRESET' ? 'refused' : { error: e.message }));
    // Closed without a CONNACK: the broker is still starting or shutting down.
    s.once('close', () => done('refused'));
  });
}

/** Makes `path` usable by the mosquitto user (the broker drops root privileges to it). */
function shareWithBroker(path: string, writable: boolean): void {
  chmodSync(path, writable ? 0o777 : 0o755);
}

interface Child {
  proc: ChildProcess;
  stderr: string;
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  done: boolean;
}

/** Brokers and temp dirs still alive, killed and removed if the test process exits without stop(). */
const live = new Set<Child>();
const liveDirs = new Set<string>();
let exitHook = false;

function onProcessExit(): void {
  for (const c of live) if (!c.done) c.proc.kill('SIGKILL');
  for (const d of liveDirs) rmSync(d, { recursive: true, force: true });
}

function spawnBroker(confPath: string): Promise<Child> {
  if (!exitHook) {
    exitHook = true;
    process.once('exit', onProcessExit);
  }
  return new Promise((resolve, reject) => {
    const proc = spawn(MOSQUITTO_BIN, ['-c', confPath], { stdio: ['ignore', 'ignore', 'pipe'] });
    const child: Child = { proc, stderr: '', exit: undefined as never, done: false };
    live.add(child);
    proc.stderr.setEncoding('utf8').on('data', (d: string) => {
      child.stderr = (child.stderr + d).slice(-MAX_STDERR);
    });
    child.exit = new Promise((res) => {
      proc.once('close', (code, signal) => {
        child.done = true;
        live.delete(child);
        res({ code, signal });
      });
    });
    proc.once('error', (e) => reject(new Error(`cannot start ${MOSQUITTO_BIN}: ${e.message}`)));
    proc.once('spawn', () => resolve(child));
  });
}

/** Stops a child: SIGTERM, SIGKILL after `graceMs`, awaits exit. */
async function killChild(c: Child, graceMs = 3000): Promise<void> {
  if (c.done) return;
  c.proc.kill('SIGTERM');
  const timer = setTimeout(() => c.proc.kill('SIGKILL'), graceMs);
  try {
    await c.exit;
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Waits until the broker logged "running" and answers CONNECT with CONNACK 0. Refused connections
 * are retried with a short backoff (1 → 50 ms); an exit of the process or the deadline fails with
 * its stderr.
 */
async function waitReady(c: Child, port: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let backoff = 1;
  let last = 'no attempt';
  while (Date.now() < deadline) {
    if (c.done) break;
    const r = await Promise.race([
      probeOnce(port, Math.max(100, Math.min(2000, deadline - Date.now()))),
      c.exit.then(() => 'exited' as const),
    ]);
    // "running" is logged once the listeners are open: a CONNACK before it came from someone else.
    if (r === 'ready' && /\bversion \S+ running\b/.test(c.stderr)) return;
    if (r === 'exited') break;
    if (r === 'ready') {
      await new Promise((res) => setTimeout(res, backoff));
      backoff = Math.min(50, backoff * 2);
      continue;
    }
    last = r === 'refused' ? 'connection refused' : r.error;
    if (r !== 'refused') throw new Error(`mosquitto on port ${port}: ${last}; stderr:\n${c.stderr}`);
    await new Promise((res) => setTimeout(res, backoff));
    backoff = Math.min(50, backoff * 2);
  }
  if (c.done) {
    const e = await c.exit;
    throw new MosquittoExitError(`mosquitto exited during start (code ${e.code}, signal ${e.signal}); stderr:\n${c.stderr}`, c.stderr);
  }
  throw new Error(`mosquitto on port ${port} not ready within ${timeoutMs} ms (${last}); stderr:\n${c.stderr}`);
}

class MosquittoExitError extends Error {
  constructor(message: string, readonly stderr: string) {
    super(message);
  }
}

function isAddressInUse(e: unknown): boolean {
  return e instanceof MosquittoExitError && /address already in use/i.test(e.stderr);
}

function writeConfig(dir: string, port: number, opts: MosquittoOptions): string {
  const lines = [
    '# written by test/helpers/mosquitto.ts',
    `listener ${port} 127.0.0.1`,
    'allow_anonymous true',
    'log_dest stderr',
    'log_type error',
    'log_type warning',
    'log_type notice',
    'log_type information',
    'log_timestamp false',
  ];
  if (opts.persistence) {
    const data = join(dir, 'data');
    mkdirSync(data, { recursive: true });
    shareWithBroker(data, true);
    lines.push('persistence true', `persistence_location ${data}/`, 'autosave_interval 0');
  } else {
    lines.push('persistence false');
  }
  lines.push(...(opts.extraConfig ?? []));
  const path = join(dir, 'mosquitto.conf');
  writeFileSync(path, lines.join('\n') + '\n', { mode: 0o644 });
  return path;
}

/** Starts a real Mosquitto on 127.0.0.1; see Mosquitto for the handle. */
export async function startMosquitto(opts: MosquittoOptions = {}): Promise<Mosquitto> {
  const readyTimeoutMs = opts.readyTimeoutMs ?? 10000;
  const dir = mkdtempSync(join(tmpdir(), 'convoy-mosquitto-'));
  liveDirs.add(dir);
  shareWithBroker(dir, false);

  let front: V311Front | undefined;
  let brokerPort = 0;
  let confPath = '';
  let child: Child | undefined;
  try {
    // A port found by binding 0 can be taken by someone else before mosquitto binds it: retry.
    for (let attempt = 0; ; attempt++) {
      brokerPort = opts.port !== undefined && !opts.version311Only ? opts.port : await freePort();
      confPath = writeConfig(dir, brokerPort, opts);
      child = await spawnBroker(confPath);
      try {
        await waitReady(child, brokerPort, readyTimeoutMs);
        break;
      } catch (e) {
        await killChild(child);
        if (isAddressInUse(e) && opts.port === undefined && attempt < 5) continue;
        throw e;
      }
    }
    if (opts.version311Only) front = await V311Front.listen(opts.port ?? 0, brokerPort);
  } catch (e) {
    if (child) await killChild(child);
    rmSync(dir, { recursive: true, force: true });
    liveDirs.delete(dir);
    throw e;
  }

  let current: Child = child;
  let stopped = false;
  const port = front ? front.port : brokerPort;

  const handle: Mosquitto = {
    port,
    host: '127.0.0.1',
    endpoint: `127.0.0.1:${port}`,
    get pid() {
      return current.proc.pid ?? -1;
    },
    dir,
    get running() {
      return !current.done;
    },
    stderr: () => current.stderr,
    exited: () => current.exit,
    kill: (signal: NodeJS.Signals = 'SIGKILL') => {
      if (!current.done) current.proc.kill(signal);
    },
    stop: async () => {
      if (stopped) return;
      stopped = true;
      await front?.close();
      await killChild(current);
      rmSync(dir, { recursive: true, force: true });
      liveDirs.delete(dir);
    },
    restart: async () => {
      if (stopped) throw new Error('mosquitto: restart() after stop()');
      await front?.pause();
      await killChild(current);
      current = await spawnBroker(confPath);
      await waitReady(current, brokerPort, readyTimeoutMs);
      await front?.resume();
    },
  };
  return handle;
}

/**
 * The 3.1.1-only front: reads each connection's CONNECT; protocol level 5 gets a 3.1.1 CONNACK
 * with return code 1 and is closed, anything else is relayed to the broker unchanged.
 */
class V311Front {
  private readonly sockets = new Set<net.Socket>();
  private server: net.Server;

  private constructor(public port: number, private readonly brokerPort: number) {
    this.server = this.makeServer();
  }

  static async listen(port: number, brokerPort: number): Promise<V311Front> {
    const f = new V311Front(port, brokerPort);
    await f.resume();
    return f;
  }

  private makeServer(): net.Server {
    return net.createServer((s) => this.onConnection(s));
  }

  /** (Re)opens the listening socket on the same port. */
  resume(): Promise<void> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.port, '127.0.0.1', () => {
        this.server.off('error', reject);
        this.port = (this.server.address() as net.AddressInfo).port;
        resolve();
      });
    });
  }

  /** Stops listening and closes every relayed connection (while the broker restarts). */
  pause(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    this.sockets.clear();
    const old = this.server;
    this.server = this.makeServer();
    return new Promise((resolve) => old.close(() => resolve()));
  }

  close(): Promise<void> {
    return this.pause();
  }

  private track(s: net.Socket): void {
    this.sockets.add(s);
    s.on('error', () => undefined);
    s.once('close', () => this.sockets.delete(s));
  }

  private onConnection(client: net.Socket): void {
    this.track(client);
    let head = Buffer.alloc(0);
    const onData = (d: Buffer): void => {
      head = Buffer.concat([head, d]);
      const level = protocolLevel(head);
      if (level === 'incomplete') return;
      client.off('data', onData);
      client.pause();
      if (level === 5) {
        client.end(Buffer.from([0x20, 0x02, 0x00, 0x01]));
        return;
      }
      const up = net.connect({ host: '127.0.0.1', port: this.brokerPort });
      this.track(up);
      up.once('connect', () => {
        up.write(head);
        client.pipe(up);
        up.pipe(client);
        client.resume();
      });
      up.once('close', () => client.destroy());
      client.once('close', () => up.destroy());
    };
    client.on('data', onData);
  }
}

/** The protocol level byte of a CONNECT at the start of `b`, 'incomplete', or -1 if not a CONNECT. */
function protocolLevel(b: Buffer): number | 'incomplete' {
  if (b.length < 1) return 'incomplete';
  if (b[0] !== 0x10) return -1;
  // Remaining length: 1–4 bytes.
  let i = 1;
  for (; i <= 4; i++) {
    if (b.length <= i) return 'incomplete';
    if ((b[i]! & 0x80) === 0) break;
  }
  const p = i + 1; // protocol name length
  if (b.length < p + 2) return 'incomplete';
  const nameLen = (b[p]! << 8) | b[p + 1]!;
  const lvl = p + 2 + nameLen;
  if (b.length <= lvl) return 'incomplete';
  return b[lvl]!;
}
