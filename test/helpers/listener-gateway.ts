// A gateway with the listeners a test asks for (tls, ws, wss… on port 0) plus one plain tcp
// listener on 127.0.0.1:0 for reference clients; startTestGateway forces a single tcp listener.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { defaultConfig } from '../../src/config/load.js';
import type { Config } from '../../src/config/schema.js';
import { silentLogger, type Logger } from '../../src/diagnostics/log.js';
import { startGateway, type Gateway } from '../../src/gateway.js';
import type { Listener } from '../../src/broker/listeners/listener.js';

export type ListenerConfig = Config['listeners'][number];

export interface ListenerGateway extends Gateway {
  /** Port of the extra plain tcp listener. */
  tcpPort: number;
  /** The requested listeners, in the order given. */
  under: Listener[];
  dataDir: string;
}

/** Fills a listener's keys with defaults: host 127.0.0.1, port 0, anonymous allowed. */
export function listener(l: Partial<ListenerConfig> & Pick<ListenerConfig, 'type'>): ListenerConfig {
  return {
    host: '127.0.0.1', port: 0, allow_anonymous: true, path: '/mqtt', cert: '', key: '', ca: '', crl: '',
    require_client_cert: false, use_identity_as_username: false, ...l,
  };
}

export async function startListenerGateway(
  listeners: ListenerConfig[], opts: { log?: Logger; limits?: Partial<Config['limits']> } = {},
): Promise<ListenerGateway> {
  const base = defaultConfig();
  const dataDir = mkdtempSync(join(tmpdir(), 'convoy-test-'));
  const config: Config = {
    ...base,
    data_dir: dataDir,
    log: { level: 'silent' },
    listeners: [listener({ type: 'tcp' }), ...listeners],
    limits: { ...base.limits, ...opts.limits },
    sys: { ...base.sys, interval_s: 0 },
    store: { ...base.store, enabled: false },
  };
  const gw = await startGateway(config, opts.log ?? silentLogger);
  return {
    ...gw,
    tcpPort: gw.listeners[0]!.port,
    under: gw.listeners.slice(1),
    dataDir,
    stop: async () => {
      await gw.stop();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
