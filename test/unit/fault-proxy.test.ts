// The fault proxy against a local echo server: every fault is proved by events (bytes arriving,
// sockets closing, counters), bounded by timeouts. Only delay and throttle, whose fault is time
// itself, measure elapsed time, with generous bounds.
import { expect } from 'chai';
import net from 'node:net';
import { startFaultProxy, type FaultProxy } from '../helpers/fault-proxy.js';

/** An echo server that records what it received per connection. */
class Echo {
  readonly server: net.Server;
  readonly sockets = new Set<net.Socket>();
  received = 0;
  connections = 0;
  closes = 0;
  resets = 0;
  port = 0;
  private waiters: Array<() => void> = [];
  constructor() {
    this.server = net.createServer((s) => {
      this.connections++;
      this.sockets.add(s);
      s.on('data', (d: Buffer) => {
        this.received += d.length;
        s.write(d);
        this.wake();
      });
      s.on('error', (e: NodeJS.ErrnoException) => {
        if (e.code === 'ECONNRESET') this.resets++;
        this.wake();
      });
      s.once('close', () => {
        this.closes++;
        this.sockets.delete(s);
        this.wake();
      });
      this.wake();
    });
  }
  async listen(): Promise<void> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.port = (this.server.address() as net.AddressInfo).port;
  }
  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }
  until(cond: () => boolean, what: string, timeoutMs = 3000): Promise<void> {
    return waitUntil(cond, what, timeoutMs, (f) => this.waiters.push(f));
  }
  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

/** A client socket through the proxy that records what it receives and how it ended. */
class Client {
  data = Buffer.alloc(0);
  closed = false;
  error: NodeJS.ErrnoException | undefined;
  private waiters: Array<() => void> = [];
  private constructor(readonly socket: net.Socket) {
    socket.on('data', (d: Buffer) => {
      this.data = Buffer.concat([this.data, d]);
      this.wake();
    });
    socket.on('error', (e: NodeJS.ErrnoException) => {
      this.error = e;
      this.wake();
    });
    socket.once('close', () => {
      this.closed = true;
      this.wake();
    });
  }
  static connect(port: number): Promise<Client> {
    return new Promise((resolve, reject) => {
      const s = net.connect({ host: '127.0.0.1', port }, () => resolve(new Client(s)));
      s.once('error', reject);
    });
  }
  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }
  until(cond: () => boolean, what: string, timeoutMs = 3000): Promise<void> {
    return waitUntil(cond, what, timeoutMs, (f) => this.waiters.push(f));
  }
  bytes(n: number, timeoutMs = 3000): Promise<void> {
    return this.until(() => this.data.length >= n, `${n} bytes (have ${this.data.length})`, timeoutMs);
  }
  closedNow(timeoutMs = 3000): Promise<void> {
    return this.until(() => this.closed, 'the socket to close', timeoutMs);
  }
}

function waitUntil(cond: () => boolean, what: string, timeoutMs: number, onWake: (f: () => void) => void): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)), timeoutMs);
    const loop = (): void => {
      if (cond()) {
        clearTimeout(timer);
        resolve();
      } else {
        onWake(loop);
      }
    };
    loop();
  });
}

describe('fault proxy', () => {
  let echo: Echo;
  let proxy: FaultProxy;
  const clients: Client[] = [];
  const connect = async (): Promise<Client> => {
    const c = await Client.connect(proxy.port);
    clients.push(c);
    return c;
  };

  beforeEach(async () => {
    echo = new Echo();
    await echo.listen();
    proxy = await startFaultProxy({ targetPort: echo.port });
  });

  afterEach(async () => {
    for (const c of clients.splice(0)) c.socket.destroy();
    await proxy.close();
    await echo.close();
  });

  it('forwards both ways and counts connections and bytes', async () => {
    const c = await connect();
    c.socket.write('hello');
    await c.bytes(5);
    expect(c.data.toString()).to.equal('hello');
    const c2 = await connect();
    c2.socket.write(Buffer.alloc(100_000, 7));
    await c2.bytes(100_000);
    expect(proxy.stats.connections).to.equal(2);
    expect(proxy.stats.active).to.equal(2);
    expect(proxy.stats.bytesUp).to.equal(100_005);
    expect(proxy.stats.bytesDown).to.equal(100_005);
    expect(proxy.stats.heldBytes).to.equal(0);
    expect(proxy.endpoint).to.equal(`127.0.0.1:${proxy.port}`);
  });

  it('drop() closes every current connection on both sides, and new ones work', async () => {
    const a = await connect();
    const b = await connect();
    a.socket.write('x');
    b.socket.write('y');
    await a.bytes(1);
    await b.bytes(1);
    await proxy.drop();
    await a.closedNow();
    await b.closedNow();
    await echo.until(() => echo.closes === 2, 'both upstream sockets to close');
    expect(proxy.stats.active).to.equal(0);
    expect(a.error).to.equal(undefined);
    const c = await connect();
    c.socket.write('again');
    await c.bytes(5);
  });

  it('reset() aborts connections with RST on both sides', async () => {
    const c = await connect();
    c.socket.write('x');
    await c.bytes(1);
    await proxy.reset();
    await c.closedNow();
    expect(c.error?.code).to.equal('ECONNRESET');
    await echo.until(() => echo.resets === 1 && echo.closes === 1, 'the upstream socket to be reset');
    expect(proxy.stats.resets).to.equal(1);
  });

  it('blackhole(true) forwards nothing either way without closing, then delivers everything', async () => {
    const c = await connect();
    c.socket.write('before');
    await c.bytes(6);
    proxy.blackhole(true);
    c.socket.write('during');
    // The proxy read the bytes (an event) and forwarded none of them.
    await proxy.until(() => proxy.stats.heldBytes === 6, 'the bytes to be held');
    expect(proxy.stats.bytesUp).to.equal(6);
    expect(echo.received).to.equal(6);
    expect(c.closed).to.equal(false);

    // Downstream too: the echo server writes, nothing reaches the client.
    for (const s of echo.sockets) s.write('push');
    await proxy.until(() => proxy.stats.heldBytes === 10, 'the downstream bytes to be held');
    expect(proxy.stats.bytesDown).to.equal(6);
    expect(c.data.length).to.equal(6);

    // A new connection is accepted but HQ is not dialled.
    const n = await connect();
    n.socket.write('new');
    await proxy.until(() => proxy.stats.heldBytes === 13, 'the new connection\'s bytes to be held');
    expect(echo.connections).to.equal(1);

    proxy.blackhole(false);
    await c.bytes(6 + 4 + 6);
    expect(c.data.toString()).to.equal('beforepushduring');
    await n.bytes(3);
    expect(n.data.toString()).to.equal('new');
    expect(echo.connections).to.equal(2);
    expect(proxy.stats.heldBytes).to.equal(0);
    expect(c.closed).to.equal(false);
  });

  it('delay(ms) adds latency in each direction', async () => {
    const c = await connect();
    c.socket.write('warm');
    await c.bytes(4);
    proxy.delay(150);
    const t0 = performance.now();
    c.socket.write('ping');
    await c.bytes(8);
    const rtt = performance.now() - t0;
    expect(rtt).to.be.at.least(290); // 150 up + 150 down
    expect(rtt).to.be.below(3000);
    expect(c.data.toString()).to.equal('warmping');
    proxy.delay(0);
    c.socket.write('fast');
    await c.bytes(12);
  });

  it('delay(ms) keeps the byte order of many chunks', async () => {
    proxy.delay(50);
    const c = await connect();
    const parts: string[] = [];
    for (let i = 0; i < 50; i++) parts.push(`<${i}>`);
    for (const p of parts) c.socket.write(p);
    const want = parts.join('');
    await c.bytes(want.length);
    expect(c.data.toString()).to.equal(want);
  });

  it('throttle(B/s) caps the rate of each direction', async () => {
    proxy.throttle(50_000);
    const c = await connect();
    const t0 = performance.now();
    c.socket.write(Buffer.alloc(50_000, 1));
    await echo.until(() => echo.received === 50_000, 'all bytes at the server', 10000);
    const up = performance.now() - t0;
    await c.bytes(50_000, 10000);
    // 50 kB at 50 kB/s is about 1 s; the first 1/20 s slice goes at once.
    expect(up).to.be.at.least(800);
    expect(up).to.be.below(5000);
    proxy.throttle(0);
    const t1 = performance.now();
    c.socket.write(Buffer.alloc(50_000, 2));
    await c.bytes(100_000);
    expect(performance.now() - t1).to.be.below(800);
  });

  it('cutAfter(n) forwards exactly n bytes upstream, then closes the connection', async () => {
    proxy.cutAfter(10);
    const c = await connect();
    c.socket.write('0123456789abcdefghijklmno');
    await c.closedNow();
    await echo.until(() => echo.closes === 1, 'the upstream socket to close');
    expect(echo.received).to.equal(10);
    expect(proxy.stats.bytesUp).to.equal(10);
    expect(proxy.stats.cut).to.equal(1);
  });

  it('cutAfter(n) counts both directions and cuts mid-stream downstream', async () => {
    const c = await connect();
    c.socket.write('abcd');
    await c.bytes(4);
    proxy.cutAfter(15); // counted from now: 10 up, then 5 of the 10 echoed come down
    c.socket.write('0123456789');
    await c.closedNow();
    expect(proxy.stats.bytesUp).to.equal(4 + 10);
    expect(proxy.stats.bytesDown).to.equal(4 + 5);
    expect(c.data.toString()).to.equal('abcd01234');
    expect(proxy.stats.cut).to.equal(1);
    proxy.cutAfter(null);
    const d = await connect();
    d.socket.write('0123456789'.repeat(10));
    await d.bytes(100);
  });

  it('refuse(true) closes new connections at once and leaves current ones alone', async () => {
    const old = await connect();
    proxy.refuse(true);
    const r = await connect();
    await r.closedNow();
    expect(r.data.length).to.equal(0);
    expect(proxy.stats.refused).to.equal(1);
    expect(echo.connections).to.equal(1);
    old.socket.write('still');
    await old.bytes(5);
    proxy.refuse(false);
    const ok = await connect();
    ok.socket.write('yes');
    await ok.bytes(3);
  });

  it('closes the client when HQ is unreachable, and retarget() points new connections elsewhere', async () => {
    const port = echo.port;
    await echo.close();
    const c = await connect();
    await c.closedNow();
    expect(proxy.stats.upstreamFailures).to.equal(1);
    echo = new Echo();
    await echo.listen();
    proxy.retarget(echo.port);
    const d = await connect();
    d.socket.write('moved');
    await d.bytes(5);
    expect(echo.port).to.not.equal(port);
  });

  it('passes a half-close through and close() ends everything', async () => {
    const c = await connect();
    c.socket.end('bye');
    await c.closedNow();
    expect(c.data.toString()).to.equal('bye');
    const d = await connect();
    d.socket.write('x');
    await d.bytes(1);
    await proxy.close();
    await d.closedNow();
    expect(proxy.active).to.equal(0);
    proxy = await startFaultProxy({ targetPort: echo.port });
  });
});
