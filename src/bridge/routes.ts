// Topic routes between the truck and HQ (pure). A route maps a filter on one side to a topic on
// the other: the filter's literal prefix (the levels before its first wildcard) is replaced by
// the target's literal prefix, and the levels the wildcards matched follow unchanged.
//   local "truck/telemetry/#" → remote "fleet/{gateway}/telemetry/#"
//   truck/telemetry/engine/rpm → fleet/gw1/telemetry/engine/rpm
import { topicMatchesFilter } from '../mqtt/topic.js';
import type { QoS } from '../mqtt/packets.js';
import type { OutboxClass } from './types.js';

export interface UplinkRoute {
  /** Local filter. */
  filter: string;
  /** Remote prefix (literal levels of the remote template, {gateway} expanded), '' for none. */
  targetPrefix: string;
  /** Number of leading literal levels of `filter` that the target prefix replaces. */
  literalLevels: number;
  qos: QoS;
  cls: OutboxClass;
  ttlMs: number;
  storeQos0: boolean;
  /** Sign with the gateway key. */
  sign: boolean;
}

export interface DownlinkRoute {
  /** Filter subscribed at HQ ({gateway} expanded). */
  filter: string;
  targetPrefix: string;
  literalLevels: number;
  qos: QoS;
}

export function expandGateway(template: string, gatewayId: string): string {
  return template.split('{gateway}').join(gatewayId);
}

/** The levels of a filter before its first wildcard level. */
export function literalPrefixLevels(filter: string): string[] {
  const levels = filter.split('/');
  const out: string[] = [];
  for (const l of levels) {
    if (l === '+' || l === '#') break;
    out.push(l);
  }
  return out;
}

/** Checks that source filter and target template have the same wildcard tail; returns a problem or null. */
export function checkRouteShape(source: string, target: string): string | null {
  const tail = (f: string): string => f.split('/').slice(literalPrefixLevels(f).length).join('/');
  if (tail(source) !== tail(target)) {
    return `"${source}" and "${target}" must end in the same wildcard levels (here "${tail(source)}" vs "${tail(target)}")`;
  }
  return null;
}

function compile(source: string, target: string): { filter: string; targetPrefix: string; literalLevels: number } {
  const literal = literalPrefixLevels(source);
  return { filter: source, targetPrefix: literalPrefixLevels(target).join('/'), literalLevels: literal.length };
}

export function compileUplinkRoute(
  r: { local: string; remote: string; qos: number; class: OutboxClass; ttl_s: number; store_qos0: boolean; sign?: boolean }, gatewayId: string,
): UplinkRoute {
  const c = compile(r.local, expandGateway(r.remote, gatewayId));
  return { ...c, qos: r.qos as QoS, cls: r.class, ttlMs: r.ttl_s * 1000, storeQos0: r.store_qos0, sign: r.sign ?? false };
}

export function compileDownlinkRoute(r: { remote: string; local: string; qos: number }, gatewayId: string): DownlinkRoute {
  const c = compile(expandGateway(r.remote, gatewayId), r.local);
  return { ...c, qos: r.qos as QoS };
}

/** Maps a topic matched by a route's filter to the other side. */
export function mapTopic(route: { targetPrefix: string; literalLevels: number }, topic: string): string {
  // Where the levels after the literal ones start (-1: the topic has no more levels). Runs for
  // every uplink message: indexOf, not split and join.
  let at = 0;
  for (let i = 0; i < route.literalLevels && at >= 0; i++) {
    const slash = topic.indexOf('/', at);
    at = slash < 0 ? -1 : slash + 1;
  }
  const rest = at < 0 ? '' : topic.slice(at);
  if (route.targetPrefix === '') return rest;
  return at < 0 ? route.targetPrefix : `${route.targetPrefix}/${rest}`;
}

/** The first route whose filter matches the topic, or undefined. First match wins (config order). */
export function findRoute<R extends { filter: string }>(routes: readonly R[], topic: string): R | undefined {
  for (const r of routes) if (topicMatchesFilter(r.filter, topic)) return r;
  return undefined;
}
