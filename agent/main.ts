// `bulkhead agent`: parse the flags, get this node's certificate through the CSR API if
// asked to (--tls-bootstrap), then run the agent until a stop signal, or remove the pinned
// datapath (--uninstall).
import pino from "pino";
import { parseAgentArgs, agentUsage } from "./config.js";
import { Agent } from "./agent.js";
import { PinDir } from "./pins.js";
import { agentKubeConfig, requestNodeCertificate } from "./node-certificate.js";
import { StopSignals } from "../config/signals.js";

export async function runAgent(argv: string[]): Promise<number> {
  if (argv.includes("--help") || argv.includes("-h")) {
    process.stdout.write(agentUsage);
    return 0;
  }
  let config = parseAgentArgs(argv);
  if (config.uninstall) {
    const removed = new PinDir(config.bpfDir).uninstall();
    process.stdout.write(`${JSON.stringify({ uninstalled: config.bpfDir, ...removed })}\n`);
    return 0;
  }
  const log = pino({ level: config.logLevel, base: { node: config.node } });
  if (config.tlsBootstrap !== undefined) {
    const { kubeconfig, certFile, keyFile, timeoutMs, problem } = config.tlsBootstrap;
    log.info({ reason: problem }, "requesting this node's certificate through the Kubernetes CSR API (--tls-bootstrap)");
    try {
      await requestNodeCertificate({ kubeConfig: await agentKubeConfig(kubeconfig), node: config.node, certFile, keyFile, timeoutMs, log });
    } catch (err) {
      log.fatal({ err: (err as Error).message }, "no node certificate");
      process.stderr.write(`bulkhead agent: --tls-bootstrap: ${(err as Error).message}\n`);
      return 1;
    }
    config = parseAgentArgs(argv);
    if (config.tlsBootstrap !== undefined) {
      process.stderr.write(`bulkhead agent: --tls-bootstrap: the issued certificate cannot serve: ${config.tlsBootstrap.problem}\n`);
      return 1;
    }
  }
  const agent = new Agent(config, log);
  const signals = new StopSignals();
  try {
    await agent.start();
  } catch (err) {
    log.fatal({ err: (err as Error).message }, "agent failed to start");
    // The reason where an operator looks first (kubectl logs shows both streams).
    process.stderr.write(`bulkhead: ${(err as Error).message}\n`);
    await agent.stop().catch(() => undefined);
    return 1;
  }
  return await new Promise<number>((resolve) => signals.onStop((signal) => {
    log.info({ signal }, "stopping");
    agent.stop().then(() => resolve(0), (err: Error) => {
      log.error({ err: err.message }, "stop failed");
      resolve(1);
    });
  }));
}
