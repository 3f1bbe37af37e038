// What every metadata source (a folder of manifests, the Kubernetes API) gives the rest
// of the control plane: a stream of object changes into one sink, and the problems that
// currently keep it from reflecting its input.
import type { KubeObject } from "./objects.js";

/**
 * A change to one object. A delete carries the last state the source knew, so that the
 * sink can still read its uid, IPs and deletionTimestamp.
 */
export type ObjectEvent =
  | { type: "upsert"; object: KubeObject }
  | { type: "delete"; object: KubeObject };

export interface MetadataError {
  /** The source's name. */
  source: string;
  /** File the problem is in (folder sources). */
  file?: string;
  /** 0-based index of the YAML document in `file`. */
  document?: number;
  message: string;
}

export interface MetadataSink {
  /**
   * Applies changes in order. `observedAtNs` is the wall-clock time (ns since the Unix
   * epoch) at which the source saw them; the sink dates lease changes with it.
   */
  apply(events: ObjectEvent[], observedAtNs: bigint): void;
}

export interface MetadataSource {
  readonly name: string;
  /** Resolves once the initial full state has been applied to `sink`. */
  start(sink: MetadataSink): Promise<void>;
  /** Stops watching; no apply() call happens after it resolves. */
  stop(): Promise<void>;
  /** Problems currently in force; empty when the source reflects all of its input. */
  errors(): MetadataError[];
}
