// Downlink: a message from HQ on a downlink filter enters the local broker through the ordinary
// publish path (limits and, later, ACLs apply), with the sender id '$uplink' so that the publish
// tap never sends it back up. Retain is cleared (HQ's retained orders are delivered to the truck
// as ordinary messages); application properties, user properties included, are kept. A QoS 2
// message's `delivered` is called in the same turn as its local publish (see link.ts).
//
// Routes with `verify` deliver only signed orders (security/order-verifier.ts): a refused message is
// dropped (the verifier counts, logs and raises the alarm); an accepted one is published once its
// sequence number is durable, so a restart cannot let a replay of it in. Without a verifier a
// verify route delivers nothing.
import type { Logger } from '../diagnostics/log.js';
import type { InternalPublish } from '../broker/message.js';
import { findRoute, mapTopic, type DownlinkRoute } from './routes.js';
import { UPLINK_SENDER_ID, type DownlinkMessage } from './link.js';
import type { OrderVerifier } from '../security/order-verifier.js';

export interface DownlinkStats {
  /** Messages published locally. */
  delivered: number;
  /** Messages on a topic no downlink route matches (a confused or hostile HQ): dropped. */
  unexpected: number;
  /** Messages the local broker refused (threw). */
  failed: number;
  /** Messages on verify routes refused (by reason: the verifier's stats), never delivered. */
  rejected: number;
}

export interface DownlinkOptions {
  routes: ReadonlyArray<DownlinkRoute & { verify?: boolean }>;
  /** Checks messages on routes with verify; none = those routes deliver nothing. */
  verifier?: OrderVerifier | null;
  broker: { publishInternal(p: InternalPublish, senderId?: string): void; committed(): Promise<void> };
  log: Logger;
}

export class Downlink {
  private readonly st: DownlinkStats = { delivered: 0, unexpected: 0, failed: 0, rejected: 0 };

  constructor(private readonly opts: DownlinkOptions) {}

  /**
   * Handles one message from HQ; never throws. Returns false when it matched no route or could not
   * be published (a signed order is published asynchronously; a refused one counts as handled).
   */
  handle(m: DownlinkMessage): boolean {
    try {
      const route = findRoute(this.opts.routes, m.topic);
      if (!route) {
        this.st.unexpected++;
        this.opts.log.warn({ topic: m.topic }, 'uplink: HQ sent a message matching no downlink route; dropped');
        this.droppedForGood(m);
        return false;
      }
      const topic = mapTopic(route, m.topic);
      if (route.verify) return this.handleSigned(m, topic);
      const p: InternalPublish = { topic, payload: m.payload, qos: m.qos, retain: false };
      if (m.properties) p.properties = m.properties;
      this.opts.broker.publishInternal(p, UPLINK_SENDER_ID);
      // Same turn as the publish: the held QoS 2 copy goes in the same commit as the delivery.
      m.delivered?.();
      m.durable = this.opts.broker.committed();
      this.st.delivered++;
      return true;
    } catch (err) {
      this.st.failed++;
      this.opts.log.error({ err, topic: m.topic }, 'uplink: downlink message could not be published locally');
      return false;
    }
  }

  /**
   * A message that will never be delivered: a held QoS 2 copy goes now, and HQ's acknowledgement
   * (PUBCOMP) waits for the commit that deletes it, so a crash cannot leave it held.
   */
  private droppedForGood(m: DownlinkMessage): void {
    if (!m.delivered) return;
    m.delivered();
    m.durable = this.opts.broker.committed();
  }

  private handleSigned(m: DownlinkMessage, topic: string): boolean {
    const verifier = this.opts.verifier;
    if (!verifier) {
      this.st.rejected++;
      this.opts.log.error({ topic: m.topic }, 'uplink: downlink route requires signed orders but no verifier is configured; dropped');
      this.droppedForGood(m);
      return true;
    }
    const v = verifier.verify(m);
    if (!v.ok) {
      this.st.rejected++;
      this.droppedForGood(m);
      return true;
    }
    m.durable = v.durable.then(
      () => {
        try {
          const p: InternalPublish = { topic, payload: v.payload, qos: m.qos, retain: false };
          if (v.properties) p.properties = v.properties;
          this.opts.broker.publishInternal(p, UPLINK_SENDER_ID);
          m.delivered?.();
          this.st.delivered++;
          return this.opts.broker.committed();
        } catch (err) {
          this.st.failed++;
          this.opts.log.error({ err, topic: m.topic }, 'uplink: downlink message could not be published locally');
          throw err;
        }
      },
      (err: unknown) => {
        // Fail closed: an order whose sequence could not be made durable is not delivered, and
        // not acknowledged either: HQ sends it again after the reconnect.
        this.st.rejected++;
        verifier.reject(m.topic, 'store_error', `its sequence could not be stored (${String(err)})`, { kid: v.kid, seq: v.seq });
        throw err instanceof Error ? err : new Error(String(err));
      },
    );
    return true;
  }

  stats(): DownlinkStats {
    return { ...this.st };
  }
}
