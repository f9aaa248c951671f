// CONNECT as a named list of steps, in the order of the spec: validate → authenticate → take over
// an existing connection → restore or create the session → keepalive → will → CONNACK → resume
// delivery. Frames behind the CONNECT wait until the steps finish (authentication is async).
import { randomBytes } from 'node:crypto';
import { writeAuth, writeConnack } from '../../mqtt/codec/encode.js';
import { ProtocolError } from '../../mqtt/errors.js';
import type { ConnectPacket, Properties } from '../../mqtt/packets.js';
import { Reason } from '../../mqtt/reason-codes.js';
import { validateTopicName } from '../../mqtt/topic.js';
import type { Connection } from '../connection.js';

/** 3.1.1 sessions with clean session 0 never expire by themselves. */
const NEVER = 0xffffffff;

export function handleConnect(conn: Connection, packet: ConnectPacket): void {
  conn.state = 'connecting';
  conn.version = packet.protocolVersion;
  conn.pauseFrames();
  connectSteps(conn, packet).then(
    () => conn.resumeFrames(),
    (err: unknown) => {
      conn.fail(err instanceof ProtocolError ? err : new ProtocolError(Reason.UnspecifiedError, `CONNECT failed: ${String(err)}`));
    },
  );
}

async function connectSteps(conn: Connection, packet: ConnectPacket): Promise<void> {
  // Known before anything can refuse the CONNECT: it decides whether the refusal carries a reason string.
  if (packet.properties?.requestProblemInformation === 0) conn.requestProblemInformation = false;
  const assignedId = validate(conn, packet);
  const authData = await enhancedAuthentication(conn, packet, assignedId ?? packet.clientId);
  await conn.broker.authenticate(conn, packet);
  if (conn.isClosed()) return; // the socket went away while authenticating
  const clientId = assignedId ?? packet.clientId;
  conn.clientId = clientId;
  applyLimits(conn, packet);
  const { sessionPresent, expiryChanged } = conn.broker.attachSession(conn, packet);
  conn.will = packet.will;
  conn.state = 'connected';
  const props = connackProperties(conn, packet, assignedId, expiryChanged);
  if (props && packet.properties?.authenticationMethod !== undefined) {
    props.authenticationMethod = packet.properties.authenticationMethod;
    if (authData) props.authenticationData = authData;
  }
  writeConnack(conn.out, conn.version, sessionPresent, 0, props);
  conn.touch();
  conn.broker.log.info(
    { client: clientId, remote: conn.remoteAddress, listener: conn.listener.name, version: conn.version, clean: packet.clean, keepalive: packet.keepalive, sessionPresent },
    'client connected',
  );
  // Resend unacknowledged messages and the queue [MQTT-4.4.0-1].
  conn.session!.resume();
  conn.broker.flushSoon();
}

/**
 * Runs the MQTT 5 enhanced-authentication exchange when CONNECT names a method (4.12): AUTH 0x18
 * back and forth until the method is done. Returns the method's final data for CONNACK.
 */
async function enhancedAuthentication(conn: Connection, p: ConnectPacket, clientId: string): Promise<Buffer | undefined> {
  const name = p.properties?.authenticationMethod;
  if (name === undefined) return undefined;
  const method = conn.broker.authMethods.get(name)!;
  const exchange = method.begin({ clientId, username: p.username, remoteAddress: conn.remoteAddress });
  let step = await exchange.step(p.properties?.authenticationData);
  while (!step.done) {
    const props: Properties = { authenticationMethod: name };
    if (step.data) props.authenticationData = step.data;
    writeAuth(conn.out, Reason.ContinueAuthentication, props);
    conn.touch();
    conn.broker.flushSoon();
    const reply = await conn.nextAuthPacket();
    // [MQTT-4.12.0-?]: the reply continues the same method with reason 0x18.
    if (reply.reasonCode !== Reason.ContinueAuthentication || reply.properties?.authenticationMethod !== name) {
      throw new ProtocolError(Reason.ProtocolError, `AUTH during CONNECT must continue method "${name}" with reason 0x18`);
    }
    step = await exchange.step(reply.properties.authenticationData);
  }
  return step.data;
}

/** Checks the CONNECT; returns an assigned client id when the client sent none. */
function validate(conn: Connection, p: ConnectPacket): string | undefined {
  const limits = conn.broker.limits;
  let assigned: string | undefined;
  if (p.clientId.length === 0) {
    // [MQTT-3.1.3-6]/[MQTT-3.1.3-7]: an empty id is allowed with a clean session and gets a
    // unique id; with clean session 0 (3.1.1) it is refused with return code 2 [MQTT-3.1.3-8].
    // MQTT 3.1 (MQIsdp) requires an id of 1..23 characters.
    if (!limits.allowZeroLengthClientId || p.protocolVersion === 3 || (p.protocolVersion === 4 && !p.clean)) {
      throw new ProtocolError(Reason.ClientIdentifierNotValid, 'empty client identifier not allowed here [MQTT-3.1.3-8]');
    }
    assigned = `auto-${randomBytes(8).toString('hex')}`;
  }
  if (p.will) {
    const invalid = validateTopicName(p.will.topic, limits.maxTopicLength, limits.maxTopicLevels);
    if (invalid) throw new ProtocolError(Reason.TopicNameInvalid, `will topic "${p.will.topic.slice(0, 100)}": ${invalid}`);
    if (p.will.qos > limits.maximumQoS) throw new ProtocolError(Reason.QoSNotSupported, `will QoS ${p.will.qos} above the maximum ${limits.maximumQoS}`);
  }
  const props = p.properties;
  if (props) {
    if (props.receiveMaximum === 0) throw new ProtocolError(Reason.ProtocolError, 'receive maximum 0 [MQTT-3.1.2-?]: must be 1..65535');
    if (props.maximumPacketSize === 0) throw new ProtocolError(Reason.ProtocolError, 'maximum packet size 0: must be at least 1');
    if (props.authenticationMethod !== undefined && !conn.broker.authMethods.has(props.authenticationMethod)) {
      throw new ProtocolError(Reason.BadAuthenticationMethod, `authentication method "${props.authenticationMethod}" is not supported`);
    }
    if (props.authenticationMethod === undefined && props.authenticationData !== undefined) {
      throw new ProtocolError(Reason.ProtocolError, 'authentication data without an authentication method [MQTT-3.1.2-?]');
    }
  }
  return assigned;
}

function applyLimits(conn: Connection, p: ConnectPacket): void {
  const limits = conn.broker.limits;
  let keepalive = p.keepalive;
  if (keepalive > limits.keepaliveMax || (keepalive === 0 && limits.keepaliveMax < 65535)) keepalive = limits.keepaliveMax;
  if (keepalive > 0 && keepalive < limits.keepaliveMin) keepalive = limits.keepaliveMin;
  // For 3.1.1 the client cannot be told; the broker still enforces its own bound.
  conn.keepaliveMs = keepalive * 1000;
  conn.negotiatedKeepalive = keepalive;
  const props = p.properties;
  if (props) {
    if (props.receiveMaximum !== undefined) conn.clientReceiveMaximum = props.receiveMaximum;
    if (props.maximumPacketSize !== undefined) conn.clientMaximumPacketSize = props.maximumPacketSize;
  }
}

function connackProperties(conn: Connection, p: ConnectPacket, assignedId: string | undefined, expiryChanged: boolean): Properties | undefined {
  if (conn.version !== 5) return undefined;
  const limits = conn.broker.limits;
  const props: Properties = {
    receiveMaximum: limits.receiveMaximum,
    maximumPacketSize: limits.maxPacketSize,
    topicAliasMaximum: limits.topicAliasMaximum,
    retainAvailable: 1,
    wildcardSubscriptionAvailable: 1,
    subscriptionIdentifiersAvailable: 1,
    sharedSubscriptionAvailable: 1,
  };
  if (limits.maximumQoS < 2) props.maximumQoS = limits.maximumQoS;
  if (assignedId) props.assignedClientIdentifier = assignedId;
  if (conn.negotiatedKeepalive !== p.keepalive) props.serverKeepAlive = conn.negotiatedKeepalive;
  if (expiryChanged) props.sessionExpiryInterval = conn.session!.expiryInterval;
  // Response Information only when asked for [MQTT-3.1.2-28]: a topic prefix for its responses.
  if (p.properties?.requestResponseInformation === 1) props.responseInformation = `convoy/response/${conn.clientId}`;
  return props;
}

export { NEVER as SESSION_NEVER_EXPIRES };
