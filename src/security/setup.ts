// Builds the broker's login checker and ACL from the [security] section, and reloads them on
// SIGHUP. A broken file at start is a configuration error (the gateway does not start open); a
// broken file at reload is logged and the previous rules stay in force.
import type { Broker } from '../broker/broker.js';
import type { SecurityConfig } from '../config/schema.js';
import type { Logger } from '../diagnostics/log.js';
import { loadAcl } from './acl.js';
import { createLoginChecker } from './login.js';

export interface SecurityRuntime {
  /** Re-reads the password and ACL files; revoked access takes effect for existing sessions. */
  reload(): void;
}

export function applySecurity(s: SecurityConfig, broker: Broker, log: Logger): SecurityRuntime {
  const checker = createLoginChecker({
    passwordFile: s.password_file || undefined,
    banAfterFailures: s.ban_after_failures,
    banWindowS: s.ban_window_s,
    banDurationS: s.ban_duration_s,
    hashConcurrency: s.hash_concurrency,
    onFailure: (e) => {
      if (e.reason === 'Banned') broker.metrics.loginsBanned++;
      else broker.metrics.authFailures++;
      log.warn({ ...e }, 'login refused');
    },
  });
  broker.loginChecker = checker;
  broker.authorizer = s.acl_file ? loadAcl(s.acl_file) : null;
  return {
    reload: () => {
      try {
        checker.reload();
      } catch (err) {
        log.error({ file: s.password_file, err: (err as Error).message }, 'password file not reloaded: keeping the previous users');
      }
      if (s.acl_file) {
        try {
          broker.authorizer = loadAcl(s.acl_file);
        } catch (err) {
          log.error({ file: s.acl_file, err: (err as Error).message }, 'ACL file not reloaded: keeping the previous rules');
        }
      }
      broker.reapplyAcl();
      log.info('security files reloaded');
    },
  };
}
