// Starts a real gateway in this process on port 0 for integration tests.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { defaultConfig } from '../../src/config/load.js';
import type { Config } from '../../src/config/schema.js';
import { silentLogger } from '../../src/diagnostics/log.js';
import { startGateway, type Gateway } from '../../src/gateway.js';

export interface TestGateway extends Gateway {
  port: number;
  dataDir: string;
}

type DeepPartial<T> = { [K in keyof T]?: T[K] extends object ? (T[K] extends unknown[] ? T[K] : DeepPartial<T[K]>) : T[K] };

/**
 * A gateway on 127.0.0.1:0 with a temporary data dir; `stop()` removes it. With `dataDir` the
 * caller owns the directory (restart tests start several gateways on one) and must remove it.
 */
export async function startTestGateway(overrides: DeepPartial<Config> = {}, opts: { dataDir?: string } = {}): Promise<TestGateway> {
  const base = defaultConfig();
  const dataDir = opts.dataDir ?? mkdtempSync(join(tmpdir(), 'convoy-test-'));
  const merged = deepMerge(base, overrides) as Config;
  const config: Config = {
    ...merged,
    data_dir: dataDir,
    log: { level: overrides.log?.level ?? 'silent' },
    listeners: [{ ...merged.listeners[0]!, type: 'tcp', host: '127.0.0.1', port: 0, allow_anonymous: true }],
    sys: { ...merged.sys, interval_s: overrides.sys?.interval_s ?? 0 },
    // Protocol suites run on the in-memory state; durability suites turn the SQLite store on.
    store: { ...merged.store, enabled: overrides.store?.enabled ?? process.env.CONVOY_TEST_STORE === '1' },
  };
  const gw = await startGateway(config, silentLogger);
  const port = gw.listeners[0]!.port;
  return {
    ...gw,
    port,
    dataDir,
    stop: async () => {
      await gw.stop();
      if (!opts.dataDir) rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** Plain objects merged key by key; arrays and values from `over` replace those of `base`. */
function deepMerge(base: unknown, over: unknown): unknown {
  if (over === undefined) return base;
  if (typeof base !== 'object' || base === null || Array.isArray(base) || typeof over !== 'object' || over === null || Array.isArray(over)) return over;
  const out: Record<string, unknown> = { ...(base as Record<string, unknown>) };
  for (const [k, v] of Object.entries(over)) out[k] = deepMerge(out[k], v);
  return out;
}
