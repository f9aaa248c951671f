// A fault-injecting TCP proxy for the uplink tests: Convoy connects to the proxy (127.0.0.1:0),
// the proxy connects to HQ, and the test breaks the link the ways a cellular link breaks:
//
//   drop()            close every current connection on both sides (FIN)
//   reset()           abort every current connection on both sides with a TCP RST
//   blackhole(true)   a dead zone: connections stay open but nothing is forwarded either way;
//                     new connections are accepted but not forwarded (HQ is not even dialled).
//                     Data read meanwhile is held, not lost (TCP would retransmit it), and flows
//                     when the black hole ends.
//   delay(ms)         every chunk is forwarded `ms` after it was read, in order, both ways
//   throttle(B/s)     each direction of each connection forwards at most B bytes per second
//   cutAfter(n)       close a connection once n bytes have been forwarded on it (from now for
//                     current connections, from the start for new ones), the n-th byte included
//   refuse(true)      close new connections as soon as they are accepted
//
// Every fault is switched at run time and applies to current and new connections. Counters and
// events ('connection', 'close', 'forward', 'held') let tests await states instead of sleeping:
// `await proxy.until(() => proxy.stats.active === 0, 'all closed')`.
import { EventEmitter } from 'node:events';
import net from 'node:net';

export type Direction = 'up' | 'down';

export interface FaultProxyOptions {
  /** HQ address. */
  targetPort: number;
  targetHost?: string;
  /** Where the proxy listens; default 127.0.0.1:0. */
  port?: number;
  host?: string;
}

export interface FaultProxyStats {
  /** Connections accepted (including refused ones). */
  connections: number;
  /** Connections currently open (client side). */
  active: number;
  /** Connections closed immediately because of refuse(true). */
  refused: number;
  /** Connections closed by cutAfter. */
  cut: number;
  /** Connections aborted by reset(). */
  resets: number;
  /** Connections whose upstream connect to HQ failed. */
  upstreamFailures: number;
  /** Bytes forwarded client → HQ and HQ → client. */
  bytesUp: number;
  bytesDown: number;
  /** Bytes read but not yet forwarded (delay, throttle, black hole). */
  heldBytes: number;
}

/** Above this many held bytes per direction the source socket is paused (backpressure). */
const HIGH_WATER = 256 * 1024;

interface Chunk {
  buf: Buffer;
  /** Not forwarded before this time (delay). */
  readyAt: number;
}

class Pipe {
  queue: Chunk[] = [];
  queued = 0;
  /** Throttle: earliest time the next byte may go. */
  nextFree = 0;
  /** cutAfter: bytes forwarded since the limit was armed. */
  counted = 0;
  timer: NodeJS.Timeout | undefined;
  waitingDrain = false;
  /** The source sent FIN: pass it on once the queue is empty. */
  ended = false;
  constructor(readonly dir: Direction, readonly conn: Conn) {}
  get src(): net.Socket | undefined {
    return this.dir === 'up' ? this.conn.client : this.conn.upstream;
  }
  get dst(): net.Socket | undefined {
    return this.dir === 'up' ? this.conn.upstream : this.conn.client;
  }
}

class Conn {
  readonly up: Pipe;
  readonly down: Pipe;
  upstream: net.Socket | undefined;
  upstreamReady = false;
  closed = false;
  constructor(readonly id: number, readonly client: net.Socket) {
    this.up = new Pipe('up', this);
    this.down = new Pipe('down', this);
  }
}

export class FaultProxy extends EventEmitter {
  readonly stats: FaultProxyStats = {
    connections: 0, active: 0, refused: 0, cut: 0, resets: 0, upstreamFailures: 0, bytesUp: 0, bytesDown: 0, heldBytes: 0,
  };
  private readonly conns = new Set<Conn>();
  private nextId = 1;
  private blackholed = false;
  private refusing = false;
  private delayMs = 0;
  private rate = 0;
  private cutLimit: number | null = null;
  private readonly server: net.Server;
  private targetHost: string;
  private targetPort: number;
  port = 0;
  readonly host: string;

  private constructor(opts: FaultProxyOptions) {
    super();
    this.targetHost = opts.targetHost ?? '127.0.0.1';
    this.targetPort = opts.targetPort;
    this.host = opts.host ?? '127.0.0.1';
    this.server = net.createServer({ allowHalfOpen: true }, (s) => this.onConnection(s));
  }

  static async start(opts: FaultProxyOptions): Promise<FaultProxy> {
    const p = new FaultProxy(opts);
    await new Promise<void>((resolve, reject) => {
      p.server.once('error', reject);
      p.server.listen(opts.port ?? 0, p.host, () => {
        p.server.off('error', reject);
        resolve();
      });
    });
    p.port = (p.server.address() as net.AddressInfo).port;
    return p;
  }

  /** "127.0.0.1:PORT", as an uplink endpoint. */
  get endpoint(): string {
    return `${this.host}:${this.port}`;
  }

  /** Connections currently open. */
  get active(): number {
    return this.conns.size;
  }

  /** New connections go to this HQ address (current ones are untouched). */
  retarget(port: number, host = this.targetHost): void {
    this.targetPort = port;
    this.targetHost = host;
  }

  // --- faults ------------------------------------------------------------------------------------

  /** Closes every current connection on both sides; resolves when all are closed. */
  async drop(): Promise<void> {
    const all = [...this.conns];
    for (const c of all) this.closeConn(c, 'end');
    await this.allClosed(all);
  }

  /** Aborts every current connection on both sides with RST; resolves when all are closed. */
  async reset(): Promise<void> {
    const all = [...this.conns];
    for (const c of all) {
      this.stats.resets++;
      this.closeConn(c, 'rst');
    }
    await this.allClosed(all);
  }

  blackhole(on: boolean): void {
    if (this.blackholed === on) return;
    this.blackholed = on;
    if (!on) {
      for (const c of this.conns) {
        if (!c.upstream) this.dial(c);
        this.pump(c.up);
        this.pump(c.down);
      }
    }
  }

  /** Latency added to every chunk in both directions; 0 = none. */
  delay(ms: number): void {
    this.delayMs = Math.max(0, ms);
  }

  /** Bytes per second per direction per connection; 0 = unlimited. */
  throttle(bytesPerSecond: number): void {
    this.rate = Math.max(0, bytesPerSecond);
    for (const c of this.conns) {
      c.up.nextFree = 0;
      c.down.nextFree = 0;
      this.pump(c.up);
      this.pump(c.down);
    }
  }

  /** Closes a connection once n bytes (both directions together) were forwarded on it; null = off. */
  cutAfter(nBytes: number | null): void {
    this.cutLimit = nBytes;
    for (const c of this.conns) {
      c.up.counted = 0;
      c.down.counted = 0;
    }
  }

  refuse(on: boolean): void {
    this.refusing = on;
  }

  /** Turns every fault off (does not reopen closed connections). */
  clearFaults(): void {
    this.refuse(false);
    this.cutAfter(null);
    this.delay(0);
    this.throttle(0);
    this.blackhole(false);
  }

  /** Stops listening and closes every connection. */
  async close(): Promise<void> {
    const closing = new Promise<void>((resolve) => this.server.close(() => resolve()));
    const all = [...this.conns];
    for (const c of all) this.closeConn(c, 'destroy');
    await this.allClosed(all);
    await closing;
  }

  // --- waiting -----------------------------------------------------------------------------------

  /** Resolves when `cond` holds, re-checked on every proxy event; fails after `timeoutMs`. */
  until(cond: () => boolean, what = 'a proxy condition', timeoutMs = 5000): Promise<void> {
    if (cond()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const events = ['connection', 'close', 'forward', 'held', 'upstream'] as const;
      const check = (): void => {
        if (cond()) {
          cleanup();
          resolve();
        }
      };
      const cleanup = (): void => {
        clearTimeout(timer);
        for (const e of events) this.off(e, check);
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new Error(`fault proxy: timed out after ${timeoutMs} ms waiting for ${what}; stats ${JSON.stringify(this.stats)}`));
      }, timeoutMs);
      for (const e of events) this.on(e, check);
    });
  }

  // --- internals ---------------------------------------------------------------------------------

  private allClosed(conns: Conn[]): Promise<void> {
    return this.until(() => conns.every((c) => c.closed), 'connections to close');
  }

  private onConnection(client: net.Socket): void {
    this.stats.connections++;
    client.on('error', () => undefined);
    if (this.refusing) {
      this.stats.refused++;
      client.destroy();
      this.emit('connection', -1);
      return;
    }
    const c = new Conn(this.nextId++, client);
    this.conns.add(c);
    this.stats.active = this.conns.size;
    client.setNoDelay(true);
    client.on('data', (d: Buffer) => this.onData(c, c.up, d));
    client.once('close', () => this.closeConn(c, 'destroy'));
    client.once('end', () => this.halfClose(c, c.up));
    if (!this.blackholed) this.dial(c);
    this.emit('connection', c.id);
  }

  private dial(c: Conn): void {
    if (c.closed || c.upstream) return;
    const up = net.connect({ host: this.targetHost, port: this.targetPort, allowHalfOpen: true });
    c.upstream = up;
    up.setNoDelay(true);
    up.on('error', () => undefined);
    up.once('connect', () => {
      c.upstreamReady = true;
      this.emit('upstream', c.id);
      this.pump(c.up);
    });
    up.on('data', (d: Buffer) => this.onData(c, c.down, d));
    up.once('end', () => this.halfClose(c, c.down));
    up.once('close', () => {
      if (!c.upstreamReady) this.stats.upstreamFailures++;
      this.closeConn(c, 'destroy');
    });
  }

  private onData(c: Conn, p: Pipe, d: Buffer): void {
    if (c.closed) return;
    p.queue.push({ buf: d, readyAt: Date.now() + this.delayMs });
    p.queued += d.length;
    this.stats.heldBytes += d.length;
    if (p.queued > HIGH_WATER) p.src?.pause();
    this.emit('held', p.dir, d.length);
    this.pump(p);
  }

  /** The other side ended its writes: pass the FIN on once everything read was forwarded. */
  private halfClose(_c: Conn, p: Pipe): void {
    p.ended = true;
    this.pump(p);
  }

  /** Forwards what may go now, and arms a timer for the rest. */
  private pump(p: Pipe): void {
    const c = p.conn;
    if (c.closed) return;
    if (p.timer) {
      clearTimeout(p.timer);
      p.timer = undefined;
    }
    while (p.queue.length > 0) {
      if (this.blackholed || !c.upstreamReady || !p.dst || p.waitingDrain) return;
      const head = p.queue[0]!;
      const now = Date.now();
      let at = head.readyAt;
      if (this.rate > 0) at = Math.max(at, p.nextFree);
      if (at > now) {
        p.timer = setTimeout(() => this.pump(p), at - now);
        return;
      }
      let n = head.buf.length;
      // Throttle: slices of about 1/20 s so the rate is smooth.
      if (this.rate > 0) n = Math.min(n, Math.max(1, Math.floor(this.rate / 20)));
      // cutAfter: forward up to the limit exactly.
      let cutNow = false;
      if (this.cutLimit !== null) {
        const left = this.cutLimit - (c.up.counted + c.down.counted);
        if (left <= n) {
          n = Math.max(0, left);
          cutNow = true;
        }
      }
      const slice = head.buf.subarray(0, n);
      if (n === head.buf.length) p.queue.shift();
      else head.buf = head.buf.subarray(n);
      p.queued -= n;
      this.stats.heldBytes -= n;
      if (n > 0) {
        p.counted += n;
        if (p.dir === 'up') this.stats.bytesUp += n;
        else this.stats.bytesDown += n;
        if (this.rate > 0) p.nextFree = Math.max(p.nextFree, now) + (n * 1000) / this.rate;
        const ok = p.dst.write(slice);
        this.emit('forward', p.dir, n);
        if (cutNow) {
          this.stats.cut++;
          this.closeConn(c, 'end');
          return;
        }
        if (!ok) {
          p.waitingDrain = true;
          p.dst.once('drain', () => {
            p.waitingDrain = false;
            this.pump(p);
          });
          return;
        }
      } else if (cutNow) {
        this.stats.cut++;
        this.closeConn(c, 'end');
        return;
      }
      if (p.queued <= HIGH_WATER / 2 && p.src?.isPaused()) p.src.resume();
    }
    if (p.src?.isPaused()) p.src.resume();
    if (p.ended && c.upstreamReady) p.dst?.end();
  }

  /**
   * 'end': flush what was written and close with FIN (the rest of the queue is discarded);
   * 'rst': abort with RST; 'destroy': close at once.
   */
  private closeConn(c: Conn, how: 'end' | 'rst' | 'destroy'): void {
    if (c.closed) return;
    c.closed = true;
    for (const p of [c.up, c.down]) {
      if (p.timer) clearTimeout(p.timer);
      this.stats.heldBytes -= p.queued;
      p.queue = [];
      p.queued = 0;
    }
    const socks = [c.client, c.upstream].filter((s): s is net.Socket => s !== undefined);
    let open = socks.length;
    const finished = (): void => {
      if (--open > 0) return;
      this.conns.delete(c);
      this.stats.active = this.conns.size;
      this.emit('close', c.id);
    };
    for (const s of socks) {
      if (s.destroyed || s.closed) {
        finished();
        continue;
      }
      s.once('close', finished);
      if (how === 'rst') {
        s.resetAndDestroy();
      } else if (how === 'end') {
        s.end();
        // Do not wait for the peer's FIN forever: the socket is ours to close.
        s.once('finish', () => s.destroy());
      } else {
        s.destroy();
      }
    }
  }
}

export function startFaultProxy(opts: FaultProxyOptions): Promise<FaultProxy> {
  return FaultProxy.start(opts);
}
