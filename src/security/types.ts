// The broker's security extension points. Implementations live beside this file; the broker only
// calls these interfaces (at CONNECT, PUBLISH, SUBSCRIBE, delivery, will, resume and reload).

/** Who a connection is, once authenticated. */
export interface ClientIdentity {
  clientId: string;
  /** Effective user name: from CONNECT, or the client certificate's CN with use_identity_as_username. */
  username: string | undefined;
}

/** What a listener allows, as the authenticator needs it. */
export interface ListenerPolicy {
  /** "tls://0.0.0.0:8883", for logs. */
  name: string;
  allowAnonymous: boolean;
  useIdentityAsUsername: boolean;
}

/** Facts about a connection attempt the authenticator decides on. */
export interface LoginAttempt {
  clientId: string;
  username: string | undefined;
  password: Buffer | undefined;
  /** IP address without port. */
  address: string;
  listener: ListenerPolicy;
  /** Common name of a verified client certificate (mutual TLS), if any. */
  certificateIdentity: string | undefined;
}

/**
 * Decides logins. Resolves to the effective user name (undefined = anonymous) or throws
 * ProtocolError with BadUserNameOrPassword (0x86), NotAuthorized (0x87) or Banned (0x8A).
 */
export interface LoginChecker {
  check(attempt: LoginAttempt): Promise<string | undefined>;
}

/** Topic permissions (deny by default once an ACL is configured). */
export interface Authorizer {
  canPublish(who: ClientIdentity, topic: string): boolean;
  /** True only if every topic the filter can match is readable by this client. */
  canSubscribe(who: ClientIdentity, filter: string): boolean;
  canReceive(who: ClientIdentity, topic: string): boolean;
}
