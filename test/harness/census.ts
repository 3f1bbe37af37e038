// The census lock: an exclusive flock(1) on one file for "the machine's BPF programs and
// links are being counted". Kernel-project files that compare the machine-wide counts
// (capture.test.ts, addon.test.ts) hold it while their counts must not move; kernel-own
// files, which run beside the kernel project (vitest.config.ts), hold it while they have
// programs or links loaded. So a census never sees another file's programs come or go.
import { spawn } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { afterAll, beforeAll, expect } from "vitest";
import os from "node:os";
import path from "node:path";
import { native } from "../../native/index.js";

export const CENSUS_LOCK = path.join(os.tmpdir(), "bulkhead-bpf-census.lock");
/** The longest a file waits for the lock: another file's whole run on a loaded machine. */
export const CENSUS_WAIT_MS = 240_000;

/** How long a holder's release waits at most for the kernel to free the programs and links
 * made while it held the lock (an RCU grace period after their last fd or pin went; seconds
 * on a loaded machine, where capture once counted two of enforce's programs still there). */
const FREED_WAIT_MS = 15_000;
/** The release stops waiting once none of them went for this long: the rest are not the
 * holder's. Kernel-project files that count nothing (the lab's) do not take the lock, so
 * their programs come and go during a hold beside them, and stay while their lab runs. */
const SETTLED_MS = 3_000;

/** The machine's BPF programs and links ("p<id>", "l<id>"). */
function bpfObjects(): Set<string> {
  const ids = native().kernelObjectIds();
  return new Set([...ids.programs.map((id) => `p${id}`), ...ids.links.map((id) => `l${id}`)]);
}

/** Waits while the programs and links made since `before` are still going: until none is
 * left, none went for SETTLED_MS, or FREED_WAIT_MS passed. */
async function waitUntilFreed(before: Set<string>): Promise<void> {
  const deadline = Date.now() + FREED_WAIT_MS;
  let left = [...bpfObjects()].filter((id) => !before.has(id));
  let lastWent = Date.now();
  while (left.length > 0 && Date.now() < deadline && Date.now() - lastWent < SETTLED_MS) {
    await new Promise((r) => setTimeout(r, 50));
    const now = bpfObjects();
    const still = left.filter((id) => now.has(id));
    if (still.length < left.length) lastWent = Date.now();
    left = still;
  }
}

/** Writes who holds the lock into the lock file (flock ignores the content), so that a file
 * that waited too long can say whom it waited for. Only a diagnostic: a file it cannot write
 * leaves the lock as it is. */
function recordHolder(): void {
  const file = expect.getState().testPath ?? process.argv[1] ?? "?";
  try {
    writeFileSync(CENSUS_LOCK, `${path.relative(process.cwd(), file)} (pid ${process.pid}) since ${new Date().toISOString()}\n`);
  } catch {
    // the error message then says "held by unknown"
  }
}

function lastHolder(): string {
  try {
    return readFileSync(CENSUS_LOCK, "utf8").trim() || "unknown";
  } catch {
    return "unknown";
  }
}

/**
 * Waits until this process holds the census lock (at most `timeoutMs`) and returns its
 * release. The lock is held by a `flock` child that exits, releasing it, when release()
 * closes its stdin or this process dies (its stdin pipe closes then too).
 */
export async function holdCensusLock(timeoutMs = CENSUS_WAIT_MS): Promise<() => Promise<void>> {
  const child = spawn("flock", ["--exclusive", CENSUS_LOCK, "sh", "-c", "echo held; exec cat >/dev/null"],
    { stdio: ["pipe", "pipe", "pipe"] });
  let stderr = "";
  child.stderr.on("data", (b: Buffer) => { stderr += b.toString("utf8"); });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  // flock prints nothing until it holds the lock; then the shell says "held".
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`the BPF census lock ${CENSUS_LOCK} (test/harness/census.ts) was not free within ${timeoutMs} ms; `
        + `held by ${lastHolder()}`));
    }, timeoutMs);
    child.stdout.once("data", () => { clearTimeout(timer); resolve(); });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`flock on ${CENSUS_LOCK} exited (${code}) before holding it: ${stderr}`));
    });
    child.once("error", (err) => { clearTimeout(timer); reject(err); });
  });
  recordHolder();
  const before = bpfObjects();
  return async () => {
    // The next census must not see this holder's programs and links go: the lock goes once
    // the kernel has freed them. Which of those made during the hold were the holder's the
    // kernel does not say (a lab beside it makes some too), so a leak is not judged here.
    await waitUntilFreed(before);
    child.stdin.end();
    await exited;
  };
}

/**
 * Holds the census lock from before this file's first hook to after its last: for files
 * whose kernel objects live as long as the file (or whose counts must hold that long).
 */
export function holdCensusLockForFile(): void {
  let release: (() => Promise<void>) | undefined;
  beforeAll(async () => { release = await holdCensusLock(); }, CENSUS_WAIT_MS + 10_000);
  afterAll(async () => { await release?.(); });
}
