// One table for every reason the broker refuses, closes or acknowledges: its MQTT 5 reason code,
// the MQTT 3.1.1 CONNACK return code where one exists, and a stable name for logs and metrics.

export const Reason = {
  Success: 0x00,
  GrantedQoS1: 0x01,
  GrantedQoS2: 0x02,
  DisconnectWithWill: 0x04,
  NoMatchingSubscribers: 0x10,
  NoSubscriptionExisted: 0x11,
  ContinueAuthentication: 0x18,
  ReAuthenticate: 0x19,
  UnspecifiedError: 0x80,
  MalformedPacket: 0x81,
  ProtocolError: 0x82,
  ImplementationSpecificError: 0x83,
  UnsupportedProtocolVersion: 0x84,
  ClientIdentifierNotValid: 0x85,
  BadUserNameOrPassword: 0x86,
  NotAuthorized: 0x87,
  ServerUnavailable: 0x88,
  ServerBusy: 0x89,
  Banned: 0x8a,
  ServerShuttingDown: 0x8b,
  BadAuthenticationMethod: 0x8c,
  KeepAliveTimeout: 0x8d,
  SessionTakenOver: 0x8e,
  TopicFilterInvalid: 0x8f,
  TopicNameInvalid: 0x90,
  PacketIdentifierInUse: 0x91,
  PacketIdentifierNotFound: 0x92,
  ReceiveMaximumExceeded: 0x93,
  TopicAliasInvalid: 0x94,
  PacketTooLarge: 0x95,
  MessageRateTooHigh: 0x96,
  QuotaExceeded: 0x97,
  AdministrativeAction: 0x98,
  PayloadFormatInvalid: 0x99,
  RetainNotSupported: 0x9a,
  QoSNotSupported: 0x9b,
  UseAnotherServer: 0x9c,
  ServerMoved: 0x9d,
  SharedSubscriptionsNotSupported: 0x9e,
  ConnectionRateExceeded: 0x9f,
  MaximumConnectTime: 0xa0,
  SubscriptionIdentifiersNotSupported: 0xa1,
  WildcardSubscriptionsNotSupported: 0xa2,
} as const;

export type ReasonCode = (typeof Reason)[keyof typeof Reason];

const names = new Map<number, string>(Object.entries(Reason).map(([k, v]) => [v, k]));

/** Stable name of a reason code, for logs and metrics ("ProtocolError"). */
export function reasonName(code: number): string {
  return names.get(code) ?? `0x${code.toString(16)}`;
}

/** MQTT 3.1.1 CONNACK return codes ([MQTT-3.2.2-*], table 3.1). */
export const ConnackReturnCode311 = {
  Accepted: 0,
  UnacceptableProtocolVersion: 1,
  IdentifierRejected: 2,
  ServerUnavailable: 3,
  BadUserNameOrPassword: 4,
  NotAuthorized: 5,
} as const;

/**
 * The MQTT 3.1.1 CONNACK return code for a v5 CONNACK reason code. 3.1.1 has six codes; every
 * other refusal maps to "server unavailable", the closest in meaning that a 3.1.1 client handles.
 */
export function connackCode311(reason: number): number {
  switch (reason) {
    case Reason.Success: return ConnackReturnCode311.Accepted;
    case Reason.UnsupportedProtocolVersion: return ConnackReturnCode311.UnacceptableProtocolVersion;
    case Reason.ClientIdentifierNotValid: return ConnackReturnCode311.IdentifierRejected;
    case Reason.BadUserNameOrPassword:
    case Reason.BadAuthenticationMethod: return ConnackReturnCode311.BadUserNameOrPassword;
    case Reason.NotAuthorized:
    case Reason.Banned: return ConnackReturnCode311.NotAuthorized;
    default: return ConnackReturnCode311.ServerUnavailable;
  }
}

/**
 * Reason codes a 3.1.1 CONNACK may carry at all. For malformed CONNECTs 3.1.1 sends no CONNACK:
 * the server just closes the connection [MQTT-3.1.4-1].
 */
export function connackAllowed311(reason: number): boolean {
  switch (reason) {
    case Reason.Success:
    case Reason.UnsupportedProtocolVersion:
    case Reason.ClientIdentifierNotValid:
    case Reason.BadUserNameOrPassword:
    case Reason.NotAuthorized:
    case Reason.Banned:
    case Reason.ServerUnavailable:
    case Reason.ServerBusy:
    case Reason.ServerShuttingDown:
    case Reason.BadAuthenticationMethod:
    case Reason.QuotaExceeded:
    case Reason.ConnectionRateExceeded:
      return true;
    default:
      return false;
  }
}
