// Waiting in tests for something asynchronous to become true, with a message that says
// what was awaited and the last value seen.

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Reads every 25 ms until `done`; fails after `timeoutMs` naming `what` and the last value. */
export async function waitFor<T>(read: () => T | Promise<T>, done: (v: T) => boolean, timeoutMs = 15_000, what = "condition"): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await read();
    if (done(v)) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; last value: ${String(v)}`);
    await sleep(25);
  }
}
