// $SYS/broker/... status topics, retained, with Mosquitto's names where one exists, so existing
// dashboards and `mosquitto_sub -t '$SYS/#'` habits work.
import os from 'node:os';
import type { Metrics } from '../diagnostics/metrics.js';
import type { Broker } from './broker.js';

/** Exponentially smoothed per-minute rates over 1, 5 and 15 minutes, as Mosquitto's load topics. */
class LoadAverage {
  private last = 0;
  readonly avg = [0, 0, 0];
  private readonly windows = [60, 300, 900];

  update(total: number, intervalS: number): void {
    const perMinute = ((total - this.last) / intervalS) * 60;
    this.last = total;
    for (let i = 0; i < 3; i++) {
      const k = Math.exp(-intervalS / this.windows[i]!);
      this.avg[i] = this.avg[i]! * k + perMinute * (1 - k);
    }
  }
}

/** Counters that get 1/5/15-minute rate topics, as Mosquitto's $SYS/broker/load/... */
function loadTotals(m: Metrics): Array<[string, number]> {
  return [
    ['messages/received', m.messagesReceived], ['messages/sent', m.messagesSent],
    ['publish/received', m.publishReceived], ['publish/sent', m.publishSent],
    ['bytes/received', m.bytesReceived], ['bytes/sent', m.bytesSent],
    ['publish/dropped', m.publishDropped], ['connections', m.connectionsAccepted],
  ];
}

export class SysTopics {
  private timer: NodeJS.Timeout | null = null;
  private readonly loads = new Map<string, LoadAverage>();
  /** More topics from other parts of the gateway (the uplink). */
  private readonly sources: Array<() => Map<string, string>> = [];

  constructor(private readonly broker: Broker, private readonly intervalS: number) {}

  start(): void {
    if (this.intervalS <= 0) return;
    this.publishOnce();
    this.timer = setInterval(() => this.publishOnce(), this.intervalS * 1000);
    this.timer.unref();
  }

  addSource(source: () => Map<string, string>): void {
    this.sources.push(source);
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  /** Current values, topic → payload. Exposed for tests and diagnostics. */
  snapshot(): Map<string, string> {
    const b = this.broker;
    const m = b.metrics;
    const t = new Map<string, string>();
    const connected = b.clients.size;
    t.set('$SYS/broker/version', `convoy ${b.version}`);
    t.set('$SYS/broker/uptime', `${Math.floor((Date.now() - m.startedAt) / 1000)} seconds`);
    t.set('$SYS/broker/clients/connected', String(connected));
    t.set('$SYS/broker/clients/active', String(connected));
    t.set('$SYS/broker/clients/total', String(b.sessions.size));
    t.set('$SYS/broker/clients/disconnected', String(Math.max(0, b.sessions.size - connected)));
    t.set('$SYS/broker/messages/received', String(m.messagesReceived));
    t.set('$SYS/broker/messages/sent', String(m.messagesSent));
    t.set('$SYS/broker/publish/messages/received', String(m.publishReceived));
    t.set('$SYS/broker/publish/messages/sent', String(m.publishSent));
    t.set('$SYS/broker/publish/messages/dropped', String(m.publishDropped));
    for (const [reason, n] of Object.entries(m.dropped)) t.set(`$SYS/broker/publish/messages/dropped/${reason}`, String(n));
    t.set('$SYS/broker/bytes/received', String(m.bytesReceived));
    t.set('$SYS/broker/bytes/sent', String(m.bytesSent));
    t.set('$SYS/broker/subscriptions/count', String(b.router.tree.size));
    t.set('$SYS/broker/retained messages/count', String(b.retained.size));
    t.set('$SYS/broker/connections/refused', String(m.connectionsRefused));
    t.set('$SYS/broker/security/auth_failures', String(m.authFailures));
    t.set('$SYS/broker/security/logins_banned', String(m.loginsBanned));
    t.set('$SYS/broker/security/acl_denied', String(m.aclDenied));
    t.set('$SYS/broker/security/refused_per_address', String(m.refusedPerAddress));
    t.set('$SYS/broker/security/rate_limited', String(m.rateLimited));
    t.set('$SYS/broker/heap/current', String(process.memoryUsage().heapUsed));
    const la = os.loadavg();
    t.set('$SYS/broker/load/system/1min', la[0]!.toFixed(2));
    for (const [key] of loadTotals(m)) {
      const load = this.loads.get(key);
      if (!load) continue;
      t.set(`$SYS/broker/load/${key}/1min`, load.avg[0]!.toFixed(2));
      t.set(`$SYS/broker/load/${key}/5min`, load.avg[1]!.toFixed(2));
      t.set(`$SYS/broker/load/${key}/15min`, load.avg[2]!.toFixed(2));
    }
    for (const source of this.sources) for (const [k, v] of source()) t.set(k, v);
    return t;
  }

  publishOnce(): void {
    const m = this.broker.metrics;
    for (const [key, total] of loadTotals(m)) {
      let load = this.loads.get(key);
      if (!load) this.loads.set(key, (load = new LoadAverage()));
      load.update(total, this.intervalS);
    }
    for (const [topic, payload] of this.snapshot()) {
      this.broker.publishInternal({ topic, payload, qos: 0, retain: true });
    }
  }
}
