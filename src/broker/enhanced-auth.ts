// The extension point for MQTT 5 enhanced authentication (spec 4.12): a method is registered on
// the broker by name; CONNECT with that Authentication Method runs its exchange of AUTH packets
// before CONNACK. With no method registered, any method is refused with 0x8C.

export interface AuthStep {
  /** True: authenticated. False: send `data` in AUTH 0x18 (continue) and wait for the reply. */
  done: boolean;
  /** Authentication Data for the client (in AUTH, or in CONNACK when done). */
  data?: Buffer;
}

/** One exchange, for one connection. Throw ProtocolError (e.g. 0x87 not authorized) to refuse. */
export interface AuthExchange {
  step(clientData: Buffer | undefined): Promise<AuthStep>;
}

export interface EnhancedAuthMethod {
  /** The Authentication Method name clients send, e.g. "SCRAM-SHA-256". */
  readonly name: string;
  begin(client: { clientId: string; username: string | undefined; remoteAddress: string }): AuthExchange;
}
