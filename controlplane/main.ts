// `bulkhead controlplane`: runs the control plane until SIGTERM or SIGINT.
import pino from "pino";
import { controlPlaneUsage, parseControlPlaneArgs } from "./config.js";
import { ControlPlane } from "./controlplane.js";
import { FolderSource } from "./metadata/folder.js";

export async function runControlPlane(argv: string[]): Promise<number> {
  if (argv.includes("--help") || argv.includes("-h")) {
    process.stdout.write(controlPlaneUsage);
    return 0;
  }
  const config = parseControlPlaneArgs(argv);
  const log = pino({ level: config.logLevel, base: { component: "controlplane" } });
  const source = new FolderSource({
    dir: config.manifests,
    onErrorsChanged: (errors) => {
      for (const e of errors) log.error({ file: e.file, document: e.document, err: e.message }, "metadata error; last good state kept");
      if (errors.length === 0) log.info("metadata errors cleared");
    },
  });
  const cp = new ControlPlane({ source, storeCapacity: config.storeCapacity, drainIntervalMs: config.drainIntervalMs,
    defaultMode: config.defaultMode, log, ...(config.tls ? { tls: config.tls } : {}) });
  try {
    await cp.start(config.listen);
  } catch (err) {
    log.fatal({ err: (err as Error).message }, "control plane failed to start");
    await cp.stop().catch(() => undefined);
    return 1;
  }
  return await new Promise<number>((resolve) => {
    const shutdown = (signal: string) => {
      log.info({ signal }, "stopping");
      cp.stop().then(() => resolve(0), () => resolve(1));
    };
    process.once("SIGTERM", () => shutdown("SIGTERM"));
    process.once("SIGINT", () => shutdown("SIGINT"));
  });
}
