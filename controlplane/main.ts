// `bulkhead controlplane`: runs the control plane until SIGTERM or SIGINT.
import pino from "pino";
import { controlPlaneUsage, parseControlPlaneArgs } from "./config.js";
import { ControlPlane } from "./controlplane.js";
import type { FlowStore } from "./store/durable.js";
import { ConfigError, parseHostPort } from "../config/flags.js";
import { FolderSource } from "./metadata/folder.js";
import { AccessControl } from "./access/control.js";
import { TokenFileError } from "./access/tokens.js";
import type { KubernetesSource } from "./metadata/kubernetes.js";
import type { MetadataError, MetadataSource } from "./metadata/source.js";
import { StopSignals } from "../config/signals.js";
import { describeKubeConnection } from "./metadata/kubernetes-connection.js";
import type { NodeCertificateSigner } from "./certificates/signer.js";

// The Kubernetes client, the certificate signer and each store engine are loaded only by the
// runs that use them: the Kubernetes client alone costs about a CPU-second to load, and a lab
// (folder source, embedded store) starts a control plane for every `lab up`.

export async function runControlPlane(argv: string[]): Promise<number> {
  if (argv.includes("--help") || argv.includes("-h")) {
    process.stdout.write(controlPlaneUsage);
    return 0;
  }
  const config = parseControlPlaneArgs(argv);
  const log = pino({ level: config.logLevel, base: { component: "controlplane" } });
  let access: AccessControl;
  try {
    access = config.tokens !== undefined
      ? AccessControl.fromTokenFile(config.tokens, { allowUnauthenticated: config.allowUnauthenticated })
      : new AccessControl({ tokens: [], allowUnauthenticated: true });
  } catch (err) {
    // A bad token file is a bad flag value: exit 2 with the file, entry and field.
    if (err instanceof TokenFileError) throw new ConfigError(`--tokens: ${err.message}`);
    throw err;
  }
  if (config.tokens !== undefined) access.watch(config.tokens, log);
  const onErrorsChanged = (errors: MetadataError[]): void => {
    for (const e of errors) log.error({ file: e.file, document: e.document, err: e.message }, "metadata error; last good state kept");
    if (errors.length === 0) log.info("metadata errors cleared");
  };
  let source: MetadataSource;
  let kubernetes: KubernetesSource | undefined;
  let signer: NodeCertificateSigner | undefined;
  if (config.source.kind === "folder") {
    source = new FolderSource({ dir: config.source.manifests, onErrorsChanged });
  } else {
    const { apiServerOf, loadKubeConfig } = await import("./metadata/kubernetes-client.js");
    const { KubernetesSource } = await import("./metadata/kubernetes.js");
    let kubeConfig;
    try {
      kubeConfig = loadKubeConfig(config.source.connection);
    } catch (err) {
      throw new ConfigError(`--source kubernetes: ${(err as Error).message}`);
    }
    log.info({ credentials: describeKubeConnection(config.source.connection), server: apiServerOf(kubeConfig) },
      "watching the Kubernetes API; the control plane serves once every resource has been listed");
    source = kubernetes = new KubernetesSource({ kubeConfig, onErrorsChanged });
    if (config.nodeSigner !== undefined) {
      const { NodeCertificateSigner } = await import("./certificates/signer.js");
      signer = new NodeCertificateSigner({ kubeConfig, ...config.nodeSigner, log: log.child({ component: "node-signer" }) });
    }
  }
  let store: FlowStore | undefined;
  if (config.store.kind !== "memory") {
    const { retentionMs, retentionBytes } = config.store;
    const keep = { ...(retentionMs !== undefined ? { retentionMs } : {}), ...(retentionBytes !== undefined ? { retentionBytes } : {}) };
    try {
      store = config.store.kind === "duckdb"
        ? await (await import("./store/duckdb.js")).DuckDBFlowStore.open(config.store.dataDir, keep)
        : await (await import("./store/clickhouse/store.js")).openClickHouseStore({ location: config.store.location, ...keep });
    } catch (err) {
      log.fatal({ err: (err as Error).message }, "flow store refused");
      process.stderr.write(`bulkhead: ${(err as Error).message}\n`);
      access.close();
      return 1;
    }
    const s = store.status();
    log.info({ store: s.location, records: Number(s.records), bytes: Number(s.bytes) }, "flow store opened");
  } else {
    log.warn("no --data-dir: the flow history is the in-memory window only, lost on restart");
  }
  const cp = new ControlPlane({ source, storeCapacity: config.storeCapacity, ingestWorkers: config.ingestWorkers, ...(store !== undefined ? { store } : {}),
    defaultMode: config.defaultMode, access, log, ...(config.tls ? { tls: config.tls } : {}),
    ...(config.uiListen !== undefined ? { uiListen: parseHostPort("ui-listen", config.uiListen) } : {}),
    ...(config.uiTls !== undefined ? { ui: { tls: config.uiTls } } : {}) });
  const signals = new StopSignals();
  try {
    await cp.start(config.listen);
  } catch (err) {
    log.fatal({ err: (err as Error).message }, "control plane failed to start");
    // The reason where an operator looks first (kubectl logs shows both streams).
    process.stderr.write(`bulkhead: ${(err as Error).message}\n`);
    await cp.stop().catch(() => undefined);
    await store?.close().catch(() => undefined);
    access.close();
    return 1;
  }
  log.info({ tokens: access.tokenCount, allowUnauthenticated: config.allowUnauthenticated }, "observer access");
  if (kubernetes?.serverVersion) {
    const v = kubernetes.serverVersion;
    log.info({ kubernetes: v.gitVersion || `${v.major}.${v.minor}` }, "Kubernetes API server version checked (1.21 or newer needed)");
  }
  if (signer !== undefined) {
    signer.start();
    log.info({ agentUser: config.nodeSigner?.agentUser }, "signing node certificates requested through the CSR API (bulkhead.io/agent)");
  }
  return await new Promise<number>((resolve) => signals.onStop((signal) => {
    log.info({ signal }, "stopping");
    access.close();
    (signer?.stop() ?? Promise.resolve()).then(() => cp.stop()).then(() => store?.close()).then(() => resolve(0), () => resolve(1));
  }));
}
