// Which policies allowed or denied each admitted row of a columnar batch: the rule of
// which rows carry a judgement to attribute, and the per-address policy identity looked
// up once per compile. Used where a batch is admitted: the control plane's own thread, or
// an ingest worker (workers.ts) with its own compiler over the same cluster model.
import type { AddressEntry, AdmittedColumns } from "../cluster/enrich.js";
import type { PolicyCompiler } from "../policy/compile.js";
import type { AddressIdentity } from "../policy/kernel-view.js";
import { travelsToClient } from "../store/flowmap.js";
import { ObservationPoint, Verdict, VerdictReason } from "../../proto/gen/bulkhead/v1/flow.js";

/**
 * Whether a record carries a judgement to attribute: not a flow observe mode forwarded
 * unjudged, nor one of a connection to a Service address (judged at its backend, after
 * translation): the client's from-pod record toward it, or a reply from it.
 *
 * What a record is attributed is its connection's: the policies that allow (or deny) a
 * connection from its client to its server port. A reply (`reply`: reason ESTABLISHED and,
 * as the flow map orients records, travelling from server to client) was let through by
 * conntrack for the connection its client opened, so it is attributed as that connection,
 * never as a new one from the server to the client's ephemeral port (which would name the
 * client's isolating policies as denying it, and miss every cache). Records do not say
 * which end opened the connection: the flow map's rule 3 (store/flowmap.ts) decides, so a
 * reply is attributed as the edge it is counted on. A POLICY record is its connection's
 * opening packets, judged as they travel.
 */
export function attributable(verdict: Verdict, reason: number, point: ObservationPoint, reply: boolean, serverIsService: boolean): boolean {
  if (reason === 0 && verdict === Verdict.VERDICT_FORWARDED) return false;
  if (!serverIsService) return true;
  return !reply && point !== ObservationPoint.OBSERVATION_POINT_FROM_POD;
}

/**
 * Attributes the rows of admitted columnar batches from the policy identities of their
 * addresses, looked up once per address and compile: no address text per row. Call
 * compiled() after every compile of `policy`.
 */
export class ColumnAttribution {
  /** Compiles so far: an AddressEntry's policy identity looked up at another generation is looked up again. */
  private generation = 0;

  constructor(private readonly policy: PolicyCompiler) {}

  /** The compiler compiled again: identities looked up before are stale. */
  compiled(): void {
    this.generation++;
  }

  /** attribute() for every admitted row of `admitted` (sets batch.attributions). */
  attribute(admitted: AdmittedColumns): void {
    const b = admitted.batch, c = b.columns;
    for (let k = 0; k < b.rows.length; k++) {
      const i = b.rows[k]!;
      const reason = c.verdictReasons[i]!, verdict = c.verdicts[i]!;
      const source = b.sources[i], destination = b.destinations[i];
      const proto = c.protocols[i]!;
      const icmp = proto === 1 || proto === 58;
      const sourcePort = icmp ? 0 : c.sourcePorts[i]!, destinationPort = icmp ? 0 : c.destinationPorts[i]!;
      const reply = reason === VerdictReason.VERDICT_REASON_ESTABLISHED
        && travelsToClient(Boolean(source?.service), Boolean(destination?.service), proto, sourcePort, destinationPort,
          icmp ? c.sourcePorts[i]! : 0, proto === 6 ? c.tcpFlags[i]! : -1);
      if (!attributable(verdict, reason, c.points[i]!, reply, Boolean((reply ? source : destination)?.service))) continue;
      const src = this.identity(admitted.sourceEntries[i]!), dst = this.identity(admitted.destinationEntries[i]!);
      b.attributions[i] = reply
        ? this.policy.attributionBetween(dst, src, proto, sourcePort)
        : this.policy.attributionBetween(src, dst, proto, destinationPort);
    }
  }

  /** The policy identity of an address of a columnar batch, looked up once per compile. */
  private identity(entry: AddressEntry): AddressIdentity {
    if (entry.policyGeneration !== this.generation || entry.policy === undefined) {
      entry.policy = this.policy.addressIdentity(entry.ip);
      entry.policyGeneration = this.generation;
    }
    return entry.policy;
  }
}
