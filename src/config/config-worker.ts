// Runs in a short-lived worker thread: parses and validates the configuration, posts the plain
// result and exits. The schema library and the TOML parser are then never resident in the
// gateway's own isolate, which keeps its memory small (see load-in-worker.ts).
import { parentPort, workerData } from 'node:worker_threads';
import { defaultConfig, loadConfigFile } from './load.js';

const { path } = workerData as { path: string | undefined };
try {
  const config = path === undefined ? defaultConfig() : loadConfigFile(path);
  parentPort!.postMessage({ ok: true, config });
} catch (err) {
  const e = err as Error;
  parentPort!.postMessage({ ok: false, name: e.name, message: e.message });
}
