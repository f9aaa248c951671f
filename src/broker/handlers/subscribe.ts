// SUBSCRIBE: validate each filter, grant at most QoS 2, store in the session and the trie, answer
// SUBACK (one code per filter, in order [MQTT-3.8.4-5]), then send matching retained messages.
import { ProtocolError } from '../../mqtt/errors.js';
import { PacketType, type QoS, type SubscribePacket } from '../../mqtt/packets.js';
import { Reason } from '../../mqtt/reason-codes.js';
import { parseSharedFilter, validateTopicFilter } from '../../mqtt/topic.js';
import type { Connection } from '../connection.js';
import type { Subscription } from '../subscriptions.js';

/** 3.1.1 SUBACK failure return code [MQTT-3.9.3-2]. */
const FAILURE_311 = 0x80;

export function handleSubscribe(conn: Connection, p: SubscribePacket): void {
  const broker = conn.broker;
  const limits = broker.limits;
  const session = conn.session!;
  const v5 = conn.version === 5;
  const subscriptionId = p.properties?.subscriptionIdentifiers?.[0];
  const codes: number[] = [];
  const retainedFor: Subscription[] = [];
  for (const req of p.subscriptions) {
    const invalid = validateTopicFilter(req.filter, limits.maxTopicLength, limits.maxTopicLevels, true);
    if (invalid) {
      broker.log.info({ client: conn.clientId, filter: req.filter.slice(0, 100) }, `subscription refused: ${invalid}`);
      codes.push(v5 ? Reason.TopicFilterInvalid : FAILURE_311);
      continue;
    }
    const shared = parseSharedFilter(req.filter);
    const acl = broker.authorizer;
    if (acl && !acl.canSubscribe({ clientId: conn.clientId, username: conn.username }, shared ? shared.filter : req.filter)) {
      broker.metrics.aclDenied++;
      broker.log.info({ client: conn.clientId, user: conn.username, filter: req.filter.slice(0, 200) }, 'subscription refused by the ACL');
      codes.push(v5 ? Reason.NotAuthorized : FAILURE_311);
      continue;
    }
    // No Local on a shared subscription is a protocol error [MQTT-3.8.3-4].
    if (shared && req.noLocal) throw new ProtocolError(Reason.ProtocolError, `No Local set on shared subscription "${req.filter}" [MQTT-3.8.3-4]`);
    const qos = Math.min(req.qos, limits.maximumQoS) as QoS;
    const sub: Subscription = {
      clientId: conn.clientId, filter: req.filter, qos,
      noLocal: req.noLocal, retainAsPublished: req.retainAsPublished, retainHandling: req.retainHandling,
    };
    if (subscriptionId !== undefined) sub.subscriptionId = subscriptionId;
    if (shared) sub.shareGroup = shared.group;
    const existed = session.subscriptions.has(req.filter);
    // A subscription to an existing filter replaces it [MQTT-3.8.4-3].
    session.addSubscription(sub);
    broker.router.subscribe(sub);
    codes.push(qos);
    // Retained messages: never for shared subscriptions [MQTT-3.8.4-?]; retain handling 1 only
    // for a new subscription, 2 never.
    if (!shared && (req.retainHandling === 0 || (req.retainHandling === 1 && !existed))) retainedFor.push(sub);
  }
  // Retained messages follow the SUBACK, also when it waits for the commit.
  conn.subUnsubAck(PacketType.SUBACK, p.packetId, codes, retainedFor.length === 0 ? undefined : () => {
    for (const sub of retainedFor) broker.sendRetained(session, sub);
  });
}
