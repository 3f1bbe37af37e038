// JSON lines straight from columns: each row's line is what
// JSON.stringify(FlowRecord.toJSON(record)) gives (the proto3 JSON mapping, checked by
// test/flowcolumns.test.ts), written without building the record. Strings that repeat
// (interfaces, local ends, enum names, TCP flags) are formatted once per chunk.
import {
  Endpoint, IpVersion, TcpFlags, ipVersionToJSON, observationPointToJSON, reporterSideToJSON, verdictReasonToJSON, verdictToJSON,
  ObservationPoint, ReporterSide,
} from "../proto/gen/bulkhead/v1/flow.js";
import { PROTOCOL_NAMES, formatAddress, localEndAt, tcpFlagsFromByte, type FlowColumns } from "./columns.js";

const TCP_FLAGS_JSON = Array.from({ length: 256 }, (_, b) => JSON.stringify(TcpFlags.toJSON(tcpFlagsFromByte(b))));
const enumJson = (f: (v: number) => string) => Array.from({ length: 8 }, (_, v) => JSON.stringify(f(v)));
const POINT_JSON = enumJson(observationPointToJSON);
const REPORTER_JSON = enumJson(reporterSideToJSON);
const VERDICT_JSON = enumJson(verdictToJSON);
const REASON_JSON = enumJson(verdictReasonToJSON);
const VERSION_JSON = { 4: `,"version":${JSON.stringify(ipVersionToJSON(IpVersion.IP_VERSION_IPV4))}`, 6: `,"version":${JSON.stringify(ipVersionToJSON(IpVersion.IP_VERSION_IPV6))}` };

/** ISO time (millisecond precision, as Date.toISOString) of a u64 ns column's row, from its 32-bit halves. */
function isoAt(col32: Uint32Array, i: number): string {
  const lo = col32[2 * i] ?? 0, hi = col32[2 * i + 1] ?? 0;
  // hi·2^32 + lo = hi·(4294·10^6 + 967296) + lo: every term exact in a double.
  const ms = hi * 4294 + Math.floor((hi * 967296 + lo) / 1e6);
  return new Date(ms).toISOString();
}

/** The JSON lines of every row, "\n"-terminated, in one string per call of `emit` (at most `rowsPerPart` rows each). */
export function jsonLines(c: FlowColumns, node: string, emit: (part: string) => void, rowsPerPart = 1024): void {
  const nodeJson = node === "" ? "" : `,"node":${JSON.stringify(node)}`;
  const ifaceJson = c.interfaceNames.map((n) => (n === "" ? "" : `,"interface":${JSON.stringify(n)}`));
  const endJson = new Map<number, string>();
  const start32 = new Uint32Array(c.startNs.buffer, c.startNs.byteOffset, c.rows * 2);
  const end32 = new Uint32Array(c.endNs.buffer, c.endNs.byteOffset, c.rows * 2);
  let part = "";
  for (let i = 0; i < c.rows; i++) {
    const proto = c.protocols[i] ?? 0, version = c.ipVersions[i] ?? 0;
    const point = c.points[i] ?? 0;
    const fromPod = point === ObservationPoint.OBSERVATION_POINT_FROM_POD;
    const isIcmp = proto === 1 || proto === 58;
    const sport = c.sourcePorts[i] ?? 0, dport = c.destinationPorts[i] ?? 0;
    let line = `{"startTime":"${isoAt(start32, i)}","endTime":"${isoAt(end32, i)}"${nodeJson}`;
    if (point !== 0) line += `,"point":${POINT_JSON[point] ?? JSON.stringify(observationPointToJSON(point))}`;
    line += `,"reporter":${REPORTER_JSON[fromPod ? ReporterSide.REPORTER_SIDE_SOURCE : ReporterSide.REPORTER_SIDE_DESTINATION]}`;
    line += ifaceJson[c.interfaces[i] ?? 0] ?? "";
    const ifindex = c.ifindexes[i] ?? 0;
    if (ifindex !== 0) line += `,"ifindex":${ifindex}`;
    const src = formatAddress(c.sourceAddresses, i, version), dst = formatAddress(c.destinationAddresses, i, version);
    const versionJson = version === 4 ? VERSION_JSON[4] : version === 6 ? VERSION_JSON[6] : "";
    line += `,"ip":{"source":"${src}","destination":"${dst}"${versionJson}}`;
    line += `,"l4":{`;
    const l4: string[] = [];
    if (proto !== 0) l4.push(`"protocol":${proto}`);
    l4.push(`"protocolName":${JSON.stringify(PROTOCOL_NAMES[proto] ?? String(proto))}`);
    if (!isIcmp && sport !== 0) l4.push(`"sourcePort":${sport}`);
    if (!isIcmp && dport !== 0) l4.push(`"destinationPort":${dport}`);
    if (proto === 6) l4.push(`"tcpFlags":${TCP_FLAGS_JSON[c.tcpFlags[i] ?? 0]}`);
    if (isIcmp && sport !== 0) l4.push(`"icmpType":${sport}`);
    if (isIcmp && dport !== 0) l4.push(`"icmpCode":${dport}`);
    line += l4.join(",") + "}";
    const packets = c.packets[i] ?? 0n, bytes = c.bytes[i] ?? 0n;
    if (packets !== 0n) line += `,"packets":"${packets}"`;
    if (bytes !== 0n) line += `,"bytes":"${bytes}"`;
    const k = c.localEndpoints[i] ?? 0;
    if (k !== 0) {
      let e = endJson.get(k);
      if (e === undefined) {
        const end = localEndAt(c, i);
        e = end ? JSON.stringify(Endpoint.toJSON(end)) : "";
        endJson.set(k, e);
      }
      if (e !== "") line += `,"${fromPod ? "source" : "destination"}":${e}`;
    }
    const verdict = c.verdicts[i] ?? 0, reason = c.verdictReasons[i] ?? 0;
    if (verdict !== 0) line += `,"verdict":${VERDICT_JSON[verdict] ?? JSON.stringify(verdictToJSON(verdict))}`;
    const seq = c.firstSequence + BigInt(i);
    if (seq !== 0n) line += `,"sequence":"${seq}"`;
    if (reason !== 0) line += `,"verdictReason":${REASON_JSON[reason] ?? JSON.stringify(verdictReasonToJSON(reason))}`;
    part += line + "}\n";
    if ((i + 1) % rowsPerPart === 0) { emit(part); part = ""; }
  }
  if (part !== "") emit(part);
}
