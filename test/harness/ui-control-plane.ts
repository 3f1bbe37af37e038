// What the UI's browser tests share: a control plane with its web UI on a free loopback
// port, over a manifests folder written from the test's text, in a temporary folder that
// also holds its socket (and whatever else the test puts there); the built UI checked
// first; and a teardown that closes the browser, the control plane and the folder, each
// even when the one before failed.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { pino } from "pino";
import { ControlPlane, type ControlPlaneOptions } from "../../controlplane/controlplane.js";
import { FolderSource } from "../../controlplane/metadata/folder.js";
import { AccessControl } from "../../controlplane/access/control.js";
import { DEFAULT_STATIC_DIR } from "../../controlplane/ui/server.js";
import type { LaunchedBrowser } from "./browser.js";

/** Where the browser tests leave their screenshots. */
export const SHOTS = path.resolve("test-results", "ui-e2e");

/** A temporary folder `bulkhead-<name>-*` with `manifests` as manifests/cluster.yaml; fails at once without a UI build. */
export function uiTestFolder(name: string, manifests: string): string {
  if (!fs.existsSync(path.join(DEFAULT_STATIC_DIR, "index.html"))) throw new Error(`${DEFAULT_STATIC_DIR}/index.html is missing: run npm run build:ui`);
  fs.mkdirSync(SHOTS, { recursive: true });
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), `bulkhead-${name}-`));
  fs.mkdirSync(path.join(tmp, "manifests"));
  fs.writeFileSync(path.join(tmp, "manifests", "cluster.yaml"), manifests);
  return tmp;
}

/** A started control plane over tmp/manifests, its UI on 127.0.0.1; open to requests without a token unless `access` says otherwise. */
export async function startUiControlPlane(tmp: string, options: Partial<ControlPlaneOptions> = {}): Promise<ControlPlane> {
  const cp = new ControlPlane({
    source: new FolderSource({ dir: path.join(tmp, "manifests") }), storeCapacity: 10_000,
    log: pino({ level: "silent" }), uiListen: { host: "127.0.0.1", port: 0 },
    access: new AccessControl({ tokens: [], allowUnauthenticated: true }),
    ...options,
  });
  await cp.start([`unix://${path.join(tmp, "cp.sock")}`]);
  return cp;
}

/** Closes the browser, then the control plane, then what `also` closes, then removes the folder. */
export async function closeUiTest(parts: { browser?: LaunchedBrowser; cp?: ControlPlane; also?: () => Promise<void>; tmp?: string }): Promise<void> {
  try {
    await parts.browser?.close();
  } finally {
    try {
      await parts.cp?.stop();
      await parts.also?.();
    } finally {
      if (parts.tmp) fs.rmSync(parts.tmp, { recursive: true, force: true });
    }
  }
}
