// Who gets a message: the subscription trie's matches reduced to one delivery per client at the
// highest granted QoS, with all matching subscription identifiers ([MQTT-3.3.5-1]), and one
// member per shared-subscription group. Results are cached per topic and invalidated whenever
// the trie changes, so steady traffic costs one map lookup per message.
import type { QoS } from '../mqtt/packets.js';
import type { Session } from './session.js';
import { SubscriptionTree, type MatchResult, type SharedGroup, type Subscription } from './subscriptions.js';

export interface Target {
  session: Session;
  qos: QoS;
  subIds: number[] | undefined;
  noLocal: boolean;
  retainAsPublished: boolean;
}

interface Route {
  generation: number;
  targets: Target[];
  shared: SharedGroup[];
}

const CACHE_LIMIT = 20_000;

export class Router {
  readonly tree = new SubscriptionTree();
  private readonly cache = new Map<string, Route>();
  private readonly scratch: MatchResult = { direct: [], shared: [] };

  constructor(private readonly sessionOf: (clientId: string) => Session | undefined) {}

  subscribe(sub: Subscription): boolean {
    return this.tree.add(sub);
  }

  unsubscribe(clientId: string, filter: string): Subscription | undefined {
    return this.tree.remove(clientId, filter);
  }

  /** Targets for a topic. The returned arrays are shared: read them, never keep or change them. */
  route(topic: string): Route {
    const gen = this.tree.generation;
    const cached = this.cache.get(topic);
    if (cached && cached.generation === gen) return cached;
    const route = this.compute(topic, gen);
    if (this.cache.size >= CACHE_LIMIT) this.cache.clear();
    this.cache.set(topic, route);
    return route;
  }

  private compute(topic: string, generation: number): Route {
    const m = this.scratch;
    m.direct.length = 0;
    m.shared.length = 0;
    this.tree.match(topic, m);
    const byClient = new Map<string, Target>();
    for (const sub of m.direct) {
      const t = byClient.get(sub.clientId);
      if (!t) {
        const session = this.sessionOf(sub.clientId);
        if (!session) continue;
        byClient.set(sub.clientId, {
          session, qos: sub.qos, subIds: sub.subscriptionId !== undefined ? [sub.subscriptionId] : undefined,
          noLocal: sub.noLocal, retainAsPublished: sub.retainAsPublished,
        });
        continue;
      }
      // Overlapping subscriptions: one delivery at the highest QoS [MQTT-3.3.5-1].
      if (sub.qos > t.qos) t.qos = sub.qos;
      if (sub.subscriptionId !== undefined) (t.subIds ??= []).push(sub.subscriptionId);
      // No Local applies only when every matching subscription asks for it; retain as published
      // when any does.
      t.noLocal &&= sub.noLocal;
      t.retainAsPublished ||= sub.retainAsPublished;
    }
    return { generation, targets: [...byClient.values()], shared: m.shared.slice() };
  }

  /** Drops cached routes (after sessions are replaced). */
  invalidate(): void {
    this.cache.clear();
  }
}
