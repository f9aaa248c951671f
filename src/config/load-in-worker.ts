// Loads the configuration in a worker thread (config-worker.ts). The gateway needs only the
// validated plain object; zod and smol-toml stay out of its heap (about 10 MB of a 60 MB budget
// on a small gateway). Errors keep their name and FILE:LINE message.
import { Worker } from 'node:worker_threads';
import type { Config } from './schema.js';

export async function loadConfigInWorker(path: string | undefined): Promise<Config> {
  const worker = new Worker(new URL('./config-worker.js', import.meta.url), { workerData: { path }, env: process.env });
  try {
    const result = await new Promise<{ ok: true; config: Config } | { ok: false; name: string; message: string }>((resolve, reject) => {
      worker.once('message', resolve);
      worker.once('error', reject);
      worker.once('exit', (code) => reject(new Error(`configuration worker exited with code ${code}`)));
    });
    if (result.ok) return result.config;
    const err = new Error(result.message);
    err.name = result.name; // "ConfigError": main prints the message without a stack
    throw err;
  } finally {
    await worker.terminate();
  }
}
