// Ingest worker threads: each admits and attributes the columnar batches of the agents
// routed to it (by node, so that one agent's batches stay in order), with a cluster model
// and policy compiler of its own fed the same metadata events as the control plane's. The
// control plane's thread keeps the history and the flow map, which every reader uses.
import { existsSync } from "node:fs";
import { Worker } from "node:worker_threads";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type { Logger } from "pino";
import type { LocalEndProblem } from "../cluster/enrich.js";
import type { ObjectEvent } from "../metadata/source.js";
import type { PolicyModeName } from "../policy/model.js";
import type { EnrichedColumns } from "../store/enriched-columns.js";
import type { FlowColumns } from "../../flowcolumns/columns.js";
import { Mirror, type FromWorker, type ToWorker } from "./wire.js";

/** The worker's compiled script: beside this one, or (this file run from source, as in tests) in the build. */
function workerScript(): string {
  const here = fileURLToPath(import.meta.url);
  if (here.endsWith(".js")) return path.join(path.dirname(here), "worker.js");
  const built = path.resolve(path.dirname(here), "../../dist/controlplane/ingest/worker.js");
  if (!existsSync(built)) throw new Error(`ingest workers run the built worker, ${built}, which does not exist: run npm run build:ts first`);
  return built;
}

/**
 * The worker's young generation: V8's default held ~30 MiB more RSS (1M stored, 1 worker:
 * 373-401 MiB after a full GC, 352-368 with 8 MB) for no records/s (bench/README, "Ingest workers").
 */
const WORKER_YOUNG_GENERATION_MB = 8;

/** The worker stopped before it answered (or had stopped): the caller admits the batch itself, its own model being current. */
export class WorkerStopped extends Error {}

interface Pending {
  node: string;
  columns: FlowColumns;
  resolve: (admitted: { batch: EnrichedColumns; problems: Map<LocalEndProblem, number> }) => void;
  reject: (err: Error) => void;
}

export class IngestWorker {
  readonly thread: Worker;
  private readonly mirror = new Mirror();
  private readonly pending = new Map<number, Pending>();
  private nextId = 0;
  /** Why it stopped; undefined while it runs. */
  stopped: string | undefined;
  /** Batches answered WorkerStopped. */
  handedBack = 0;

  constructor(readonly index: number, defaultMode: PolicyModeName, private readonly log: Logger) {
    this.thread = new Worker(workerScript(), { workerData: { defaultMode }, resourceLimits: { maxYoungGenerationSizeMb: WORKER_YOUNG_GENERATION_MB } });
    this.thread.on("message", (message: FromWorker) => this.answered(message));
    this.thread.on("error", (err) => this.stop(`failed: ${err.message}`));
    this.thread.on("exit", (code) => this.stop(`exited with code ${code}`));
  }

  post(message: ToWorker): void {
    this.thread.postMessage(message);
  }

  /**
   * The batch admitted by the thread. One in flight when the thread stops, and any after,
   * is handed back (WorkerStopped) for the caller to admit itself: without a durable store
   * an agent's session counts a batch as applied once it came, so refusing it would lose it
   * on the agent's resend. Answers and hand-backs settle in the order the batches came: the
   * thread answers in order, and stop() hands back what is in flight, in order, before any
   * later batch is sent.
   */
  admit(node: string, columns: FlowColumns, shiftMs: number): Promise<{ batch: EnrichedColumns; problems: Map<LocalEndProblem, number> }> {
    return new Promise((resolve, reject) => {
      if (this.stopped !== undefined) {
        this.handedBack++;
        reject(new WorkerStopped(`ingest worker ${this.index} ${this.stopped}`));
        return;
      }
      const id = this.nextId++;
      this.pending.set(id, { node, columns, resolve, reject });
      this.post({ kind: "admit", id, node, columns, shiftMs });
    });
  }

  private answered(message: FromWorker): void {
    const pending = this.pending.get(message.id);
    if (pending === undefined) return;
    this.pending.delete(message.id);
    if (message.kind === "failed") {
      pending.reject(new Error(`ingest worker ${this.index} could not admit a batch of ${pending.node}: ${message.message}`));
      return;
    }
    pending.resolve({ batch: this.mirror.enriched(pending.node, pending.columns, message), problems: new Map(message.problems) });
  }

  /** Ends the thread; batches not yet answered are handed back (WorkerStopped). */
  async close(): Promise<void> {
    this.stop("was closed", false);
    await this.thread.terminate();
  }

  private stop(reason: string, unexpected = true): void {
    if (this.stopped !== undefined) return;
    this.stopped = reason;
    if (unexpected) this.log.error({ worker: this.index, reason, inFlight: this.pending.size }, "an ingest worker stopped: its agents' batches, those in flight included, are admitted on the control plane's thread from now on");
    const err = new WorkerStopped(`ingest worker ${this.index} ${reason} before it admitted the batch`);
    this.handedBack += this.pending.size;
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
  }
}

export class IngestWorkers {
  private readonly workers: IngestWorker[];
  /** The worker of each node that sent a batch: the next in turn for a new one. */
  private readonly byNode = new Map<string, IngestWorker>();

  constructor(count: number, defaultMode: PolicyModeName, log: Logger) {
    this.workers = Array.from({ length: count }, (_, i) => new IngestWorker(i, defaultMode, log));
  }

  /** The same metadata events the control plane's cluster model applied, in the same order. */
  apply(events: ObjectEvent[], observedAtNs: bigint): void {
    this.post({ kind: "apply", events, observedAtNs });
  }

  /** The control plane compiled policy: so do the workers, over the same model (their attributions carry its version). */
  compile(): void {
    this.post({ kind: "compile" });
  }

  private post(message: ToWorker): void {
    for (const w of this.workers) if (w.stopped === undefined) w.post(message);
  }

  /** The worker of `node`'s batches, also once it stopped (then it hands them back in order: admit). */
  workerOf(node: string): IngestWorker {
    let worker = this.byNode.get(node);
    if (worker === undefined) {
      worker = this.workers[this.byNode.size % this.workers.length]!;
      this.byNode.set(node, worker);
    }
    return worker;
  }

  /** The threads, in order (tests stop one to see the control plane take over). */
  get threads(): readonly Worker[] {
    return this.workers.map((w) => w.thread);
  }

  /** Workers still running. */
  get running(): number {
    return this.workers.filter((w) => w.stopped === undefined).length;
  }

  /** Batches handed back to the control plane's thread by stopped workers. */
  get handedBack(): number {
    return this.workers.reduce((n, w) => n + w.handedBack, 0);
  }

  async close(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.close()));
  }
}
