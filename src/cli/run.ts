// `convoy run [--config FILE]`: start the gateway and run until SIGTERM/SIGINT.
import { defaultConfig, loadConfigFile } from '../config/load.js';
import { createLogger } from '../diagnostics/log.js';
import { startGateway } from '../gateway.js';
import { convoyVersion } from '../version.js';

export async function runCommand(opts: { configPath?: string }): Promise<void> {
  // A ConfigError propagates to main, which prints its FILE:LINE list and exits 1.
  const config = opts.configPath ? loadConfigFile(opts.configPath) : defaultConfig();
  const log = createLogger(config.log.level);
  log.info({ version: convoyVersion(), config: opts.configPath ?? '(embedded default)', pid: process.pid }, 'convoy starting');
  const gateway = await startGateway(config, log);
  await new Promise<void>((resolve) => {
    const stop = (signal: string): void => {
      log.info({ signal }, 'stopping');
      gateway.stop().then(resolve, (err: unknown) => {
        log.error({ err: String(err) }, 'error while stopping');
        resolve();
      });
    };
    // SIGHUP: certificates, password file and ACL are re-read; connections stay up.
    process.on('SIGHUP', () => {
      log.info('SIGHUP: reloading certificates and security files');
      gateway.reload().catch((err: unknown) => log.error({ err: String(err) }, 'reload failed'));
    });
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
  log.info('stopped');
  log.flush();
}
