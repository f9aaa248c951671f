/** A bound listener: sockets in, broker connections out. One file per transport beside this. */
export interface Listener {
  /** "tcp://127.0.0.1:1883": for logs and `convoy status`. */
  readonly name: string;
  readonly host: string;
  /** The bound port (the real one when 0 was configured). */
  readonly port: number;
  close(): Promise<void>;
}
