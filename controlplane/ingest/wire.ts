// What the control plane and its ingest workers send each other. A worker answers an
// admitted batch with numbers per row: the row's ends, addresses and attribution as ids of
// values it sends once (in the answer that first uses them), so that a value crosses the
// thread boundary once, not once per row, and the control plane's side turns ids back into
// shared objects with an array read (Mirror). Ids are dense and start again (reset) when a
// table reaches MAX_IDS, so neither side's tables grow without bound.
import type { AdmittedColumns, LocalEndProblem } from "../cluster/enrich.js";
import type { ObjectEvent } from "../metadata/source.js";
import type { EnrichedColumns } from "../store/enriched-columns.js";
import type { FlowColumns } from "../../flowcolumns/columns.js";
import type { Endpoint, PolicyAttribution } from "../../proto/gen/bulkhead/v1/flow.js";

export type ToWorker =
  | { kind: "apply"; events: ObjectEvent[]; observedAtNs: bigint }
  /** Compile policy now, as the control plane just did (so that both compilers' versions agree). */
  | { kind: "compile" }
  | { kind: "admit"; id: number; node: string; columns: FlowColumns; shiftMs: number };

/** A batch admitted by a worker: per row (indexed as the batch's columns), 0 for none or k for value k - 1. */
export interface Admitted {
  kind: "admitted";
  id: number;
  rows: Uint32Array;
  sourceEnds: Uint32Array;
  destinationEnds: Uint32Array;
  /** Every admitted row has both addresses: value k (no offset). */
  sourceAddresses: Uint32Array;
  destinationAddresses: Uint32Array;
  attributions: Uint32Array;
  sourceHashes: Uint32Array;
  destinationHashes: Uint32Array;
  sourceHints: Uint32Array;
  destinationHints: Uint32Array;
  startSeconds: Float64Array;
  startNanos: Uint32Array;
  endSeconds: Float64Array;
  endNanos: Uint32Array;
  /** The tables start again from this answer's values. */
  reset: boolean;
  /** Values first used by this answer, in id order after those sent before. */
  endpoints: Endpoint[];
  addresses: string[];
  policyAttributions: PolicyAttribution[];
  problems: [LocalEndProblem, number][];
}

export type FromWorker = Admitted | { kind: "failed"; id: number; message: string };

/** Values a table holds before both sides start their tables again. */
export const MAX_IDS = 65_536;

/** One kind of value and its ids, on the worker's side. */
class IdTable<T> {
  readonly ids = new Map<T, number>();
  fresh: T[] = [];

  /** The id of `value`, new ones queued in `fresh` for the next answer. */
  id(value: T): number {
    let id = this.ids.get(value);
    if (id === undefined) {
      id = this.ids.size;
      this.ids.set(value, id);
      this.fresh.push(value);
    }
    return id;
  }

  take(): T[] {
    const fresh = this.fresh;
    this.fresh = [];
    return fresh;
  }

  clear(): void {
    this.ids.clear();
    this.fresh = [];
  }
}

/** The worker's side: ids of the values its answers carry. */
export class WireIds {
  /** `maxIds`: values a table holds before the tables start again (smaller in tests). */
  constructor(private readonly maxIds = MAX_IDS) {}

  private readonly endpoints = new IdTable<Endpoint>();
  private readonly addresses = new IdTable<string>();
  private readonly attributions = new IdTable<PolicyAttribution>();

  /** The answer for admitted batch `id`. */
  answer(id: number, admitted: AdmittedColumns): Admitted {
    // Started again before the batch rather than in it, so that every id it uses is in this answer or an earlier one.
    const max = this.maxIds;
    const reset = this.endpoints.ids.size >= max || this.addresses.ids.size >= max || this.attributions.ids.size >= max;
    if (reset) {
      this.endpoints.clear();
      this.addresses.clear();
      this.attributions.clear();
    }
    const b = admitted.batch, n = b.columns.rows;
    const sourceEnds = new Uint32Array(n), destinationEnds = new Uint32Array(n);
    const sourceAddresses = new Uint32Array(n), destinationAddresses = new Uint32Array(n);
    const attributions = new Uint32Array(n);
    for (let k = 0; k < b.rows.length; k++) {
      const i = b.rows[k]!;
      const source = b.sources[i], destination = b.destinations[i], attribution = b.attributions[i];
      if (source !== undefined) sourceEnds[i] = this.endpoints.id(source) + 1;
      if (destination !== undefined) destinationEnds[i] = this.endpoints.id(destination) + 1;
      if (attribution !== undefined) attributions[i] = this.attributions.id(attribution) + 1;
      sourceAddresses[i] = this.addresses.id(b.sourceIps[i]!);
      destinationAddresses[i] = this.addresses.id(b.destinationIps[i]!);
    }
    return {
      kind: "admitted", id, rows: b.rows, sourceEnds, destinationEnds, sourceAddresses, destinationAddresses, attributions,
      sourceHashes: b.sourceHashes, destinationHashes: b.destinationHashes, sourceHints: b.sourceHints, destinationHints: b.destinationHints,
      startSeconds: b.startSeconds, startNanos: b.startNanos, endSeconds: b.endSeconds, endNanos: b.endNanos,
      reset, endpoints: this.endpoints.take(), addresses: this.addresses.take(), policyAttributions: this.attributions.take(),
      problems: [...admitted.problems],
    };
  }

  /** The buffers of `answer` to move rather than copy (each is the answer's own). */
  transfers(answer: Admitted): ArrayBuffer[] {
    const views = [answer.rows, answer.sourceEnds, answer.destinationEnds, answer.sourceAddresses, answer.destinationAddresses,
      answer.attributions, answer.sourceHashes, answer.destinationHashes, answer.sourceHints, answer.destinationHints,
      answer.startSeconds, answer.startNanos, answer.endSeconds, answer.endNanos];
    return [...new Set(views.map((v) => v.buffer as ArrayBuffer))];
  }
}

/** The control plane's side of one worker: its values by id, as objects shared by every row that names them. */
export class Mirror {
  private endpoints: Endpoint[] = [];
  private addresses: string[] = [];
  private attributions: PolicyAttribution[] = [];

  /** The enriched columns of `columns` (the batch sent as admit `answer.id`) from the worker's answer. */
  enriched(node: string, columns: FlowColumns, answer: Admitted): EnrichedColumns {
    if (answer.reset) {
      this.endpoints = [];
      this.addresses = [];
      this.attributions = [];
    }
    for (const e of answer.endpoints) this.endpoints.push(e);
    for (const a of answer.addresses) this.addresses.push(a);
    for (const a of answer.policyAttributions) this.attributions.push(a);
    const n = columns.rows;
    const sources = new Array<Endpoint | undefined>(n), destinations = new Array<Endpoint | undefined>(n);
    const sourceIps = new Array<string>(n), destinationIps = new Array<string>(n);
    const attributions = new Array<PolicyAttribution | undefined>(n);
    const { rows, sourceEnds, destinationEnds, sourceAddresses, destinationAddresses } = answer;
    for (let k = 0; k < rows.length; k++) {
      const i = rows[k]!;
      const s = sourceEnds[i]!, d = destinationEnds[i]!, a = answer.attributions[i]!;
      sources[i] = s === 0 ? undefined : this.endpoints[s - 1];
      destinations[i] = d === 0 ? undefined : this.endpoints[d - 1];
      attributions[i] = a === 0 ? undefined : this.attributions[a - 1];
      sourceIps[i] = this.addresses[sourceAddresses[i]!]!;
      destinationIps[i] = this.addresses[destinationAddresses[i]!]!;
    }
    return {
      node, columns, rows, sources, destinations, sourceIps, destinationIps, attributions,
      sourceHashes: answer.sourceHashes, destinationHashes: answer.destinationHashes,
      sourceHints: answer.sourceHints, destinationHints: answer.destinationHints,
      startSeconds: answer.startSeconds, startNanos: answer.startNanos, endSeconds: answer.endSeconds, endNanos: answer.endNanos,
    };
  }
}
