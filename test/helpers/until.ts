// Waiting for a condition that no event announces (a counter of the gateway, a bridge's stats):
// re-checked every 20 ms, failing after a deadline with what was awaited.

export async function until(pred: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
