// Downlink: a message from HQ on a downlink filter enters the local broker through the ordinary
// publish path (limits and, later, ACLs apply), with the sender id '$uplink' so that the publish
// tap never sends it back up. Retain is cleared (HQ's retained orders are delivered to the truck
// as ordinary messages); application properties, user properties included, are kept.
import type { Logger } from '../diagnostics/log.js';
import type { InternalPublish } from '../broker/message.js';
import { findRoute, mapTopic, type DownlinkRoute } from './routes.js';
import { UPLINK_SENDER_ID, type DownlinkMessage } from './link.js';

export interface DownlinkStats {
  /** Messages published locally. */
  delivered: number;
  /** Messages on a topic no downlink route matches (a confused or hostile HQ): dropped. */
  unexpected: number;
  /** Messages the local broker refused (threw). */
  failed: number;
}

export interface DownlinkOptions {
  routes: readonly DownlinkRoute[];
  broker: { publishInternal(p: InternalPublish, senderId?: string): void };
  log: Logger;
}

export class Downlink {
  private readonly st: DownlinkStats = { delivered: 0, unexpected: 0, failed: 0 };

  constructor(private readonly opts: DownlinkOptions) {}

  /** Handles one message from HQ; never throws. Returns whether it was published locally. */
  handle(m: DownlinkMessage): boolean {
    try {
      const route = findRoute(this.opts.routes, m.topic);
      if (!route) {
        this.st.unexpected++;
        this.opts.log.warn({ topic: m.topic }, 'uplink: HQ sent a message matching no downlink route; dropped');
        return false;
      }
      const topic = mapTopic(route, m.topic);
      const p: InternalPublish = { topic, payload: m.payload, qos: m.qos, retain: false };
      if (m.properties) p.properties = m.properties;
      this.opts.broker.publishInternal(p, UPLINK_SENDER_ID);
      this.st.delivered++;
      return true;
    } catch (err) {
      this.st.failed++;
      this.opts.log.error({ err, topic: m.topic }, 'uplink: downlink message could not be published locally');
      return false;
    }
  }

  stats(): DownlinkStats {
    return { ...this.st };
  }
}
