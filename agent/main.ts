// `bulkhead agent`: parse the flags, then run the agent until a stop signal, or remove
// the pinned datapath (--uninstall).
import pino from "pino";
import { parseAgentArgs, agentUsage } from "./config.js";
import { Agent } from "./agent.js";
import { PinDir } from "./pins.js";
import { StopSignals } from "../config/signals.js";

export async function runAgent(argv: string[]): Promise<number> {
  if (argv.includes("--help") || argv.includes("-h")) {
    process.stdout.write(agentUsage);
    return 0;
  }
  const config = parseAgentArgs(argv);
  if (config.uninstall) {
    const removed = new PinDir(config.bpfDir).uninstall();
    process.stdout.write(`${JSON.stringify({ uninstalled: config.bpfDir, ...removed })}\n`);
    return 0;
  }
  const log = pino({ level: config.logLevel, base: { node: config.node } });
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
