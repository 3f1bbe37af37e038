// Debian's Chromium, driven through playwright-core, for tests and benchmarks of the web UI.
// Headless, no sandbox (tests run as root), nothing fetched from outside: no QUIC, no
// component updates, no sync, no background networking, and a fresh profile that is
// removed when the browser closes.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { chromium, type Browser, type BrowserContext } from "playwright-core";

export const CHROMIUM_PATH = "/usr/bin/chromium";

export const CHROMIUM_FLAGS: readonly string[] = [
  "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
];

export interface LaunchedBrowser {
  /** A persistent context on the temporary profile: open pages with context.newPage(). */
  context: BrowserContext;
  browser: Browser | null;
  /** Closes the browser and removes its profile. */
  close(): Promise<void>;
}

/** Launches /usr/bin/chromium headless on a new temporary profile. */
export async function launchChromium(options: { extraArgs?: readonly string[]; viewport?: { width: number; height: number } } = {}): Promise<LaunchedBrowser> {
  if (!fs.existsSync(CHROMIUM_PATH)) {
    throw new Error(`${CHROMIUM_PATH} is missing: install Debian's chromium (apt-get install chromium, or run scripts/setup)`);
  }
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), "bulkhead-chromium-"));
  let context: BrowserContext;
  try {
    // launchPersistentContext passes the profile as --user-data-dir.
    context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM_PATH,
      headless: true,
      args: [...CHROMIUM_FLAGS, ...(options.extraArgs ?? [])],
      viewport: options.viewport ?? { width: 1400, height: 900 },
    });
  } catch (err) {
    fs.rmSync(profile, { recursive: true, force: true });
    throw new Error(`launching ${CHROMIUM_PATH}: ${(err as Error).message}`);
  }
  let closed = false;
  return {
    context,
    browser: context.browser(),
    async close() {
      if (closed) return;
      closed = true;
      try {
        await context.close();
      } finally {
        fs.rmSync(profile, { recursive: true, force: true });
      }
    },
  };
}
