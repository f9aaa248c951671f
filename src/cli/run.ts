// `convoy run [--config FILE]`: start the gateway and run until SIGTERM/SIGINT.
import { loadConfigInWorker } from '../config/load-in-worker.js';
import { createLogger } from '../diagnostics/log.js';
import { startGateway, type Gateway } from '../gateway.js';
import { convoyVersion } from '../version.js';

export async function runCommand(opts: { configPath?: string }): Promise<void> {
  // A ConfigError propagates to main, which prints its FILE:LINE list and exits 1.
  const config = await loadConfigInWorker(opts.configPath);
  const log = createLogger(config.log.level);
  log.info({ version: convoyVersion(), config: opts.configPath ?? '(embedded default)', pid: process.pid }, 'convoy starting');
  // Installed before the gateway starts: SIGHUP's default action would end the process. A SIGHUP
  // during start-up is ignored (the files were just read).
  let gateway: Gateway | undefined;
  process.on('SIGHUP', () => {
    if (!gateway) return;
    log.info('SIGHUP: reloading certificates and security files');
    gateway.reload().catch((err: unknown) => log.error({ err: String(err) }, 'reload failed'));
  });
  const gw = (gateway = await startGateway(config, log));
  await new Promise<void>((resolve) => {
    const stop = (signal: string): void => {
      log.info({ signal }, 'stopping');
      gw.stop().then(resolve, (err: unknown) => {
        log.error({ err: String(err) }, 'error while stopping');
        resolve();
      });
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
  log.info('stopped');
  log.flush();
}
