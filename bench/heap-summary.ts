// Sums a V8 heap snapshot (.heapsnapshot, as `node --heapsnapshot-signal`, v8.writeHeapSnapshot
// or `bench/ingest.ts --heap-snapshot FILE` write it) by what holds the bytes: self size per
// node type and constructor name, largest first, with strings and array-buffer backing stores
// (typed arrays' data, outside the JS heap) as their own rows. Self sizes only: a Map's row
// is its table, not the keys and values it points at.
// Run after `npm run build:ts` as `node dist/bench/heap-summary.js FILE [--top 30]`.
import fs from "node:fs";

interface Snapshot {
  snapshot: { meta: { node_fields: string[]; node_types: [string[], ...unknown[]]; edge_fields: string[]; edge_types: [string[], ...unknown[]] } };
  nodes: number[];
  edges: number[];
  strings: string[];
}

function parseSnapshot(file: string): Snapshot {
  const parsed: unknown = JSON.parse(fs.readFileSync(file, "utf8"));
  const s = parsed as Partial<Snapshot>;
  if (s.snapshot?.meta?.node_fields === undefined || !Array.isArray(s.nodes) || !Array.isArray(s.edges) || !Array.isArray(s.strings)) {
    throw new Error(`${file}: not a V8 heap snapshot (no snapshot.meta.node_fields, nodes, edges or strings)`);
  }
  return s as Snapshot;
}

/** A node's group: strings by kind, not by content; everything else by type and constructor or system name. */
function groupOf(type: string, name: string): string {
  if (type === "string" || type === "concatenated string" || type === "sliced string" || type === "number") return `(${type})`;
  return `${type}: ${name.length > 60 ? `${name.slice(0, 57)}...` : name}`;
}

function main(): void {
  const file = process.argv[2];
  if (file === undefined) throw new Error("usage: node dist/bench/heap-summary.js FILE.heapsnapshot [--top N] [--retainers N]");
  const flag = (name: string, fallback: number) => {
    const i = process.argv.indexOf(name);
    return i === -1 ? fallback : Number(process.argv[i + 1]);
  };
  const top = flag("--top", 30), retainersShown = flag("--retainers", 0);
  const { snapshot, nodes, edges, strings } = parseSnapshot(file);
  const meta = snapshot.meta;
  const fields = meta.node_fields, width = fields.length;
  const types = meta.node_types[0];
  const typeAt = fields.indexOf("type"), nameAt = fields.indexOf("name"), sizeAt = fields.indexOf("self_size");
  const edgeCountAt = fields.indexOf("edge_count");
  const edgeWidth = meta.edge_fields.length;
  const edgeTypeAt = meta.edge_fields.indexOf("type"), edgeNameAt = meta.edge_fields.indexOf("name_or_index");
  const edgeToAt = meta.edge_fields.indexOf("to_node");
  const edgeTypes = meta.edge_types[0];
  const keyOf = (n: number) => groupOf(types[nodes[n + typeAt]!]!, strings[nodes[n + nameAt]!]!);
  const groups = new Map<string, { bytes: number; count: number }>();
  let total = 0;
  for (let n = 0; n < nodes.length; n += width) {
    const size = nodes[n + sizeAt]!;
    const key = keyOf(n);
    const group = groups.get(key) ?? { bytes: 0, count: 0 };
    group.bytes += size;
    group.count++;
    groups.set(key, group);
    total += size;
  }
  const rows = [...groups].sort((a, b) => b[1].bytes - a[1].bytes).slice(0, top);
  // Retainers of the largest groups: the bytes each (holder's group, edge name) points at, weak edges left out.
  const shown = new Set(rows.slice(0, retainersShown).map(([key]) => key));
  const retainers = new Map<string, Map<string, number>>();
  if (shown.size > 0) {
    let e = 0;
    for (let n = 0; n < nodes.length; n += width) {
      const holder = keyOf(n);
      for (let k = 0; k < nodes[n + edgeCountAt]!; k++, e += edgeWidth) {
        const edgeType = edgeTypes[edges[e + edgeTypeAt]!]!;
        if (edgeType === "weak") continue;
        const to = edges[e + edgeToAt]!;
        const key = keyOf(to);
        if (!shown.has(key)) continue;
        const edgeName = edgeType === "element" || edgeType === "hidden" ? `[${edgeType}]` : strings[edges[e + edgeNameAt]!]!;
        const by = retainers.get(key) ?? new Map<string, number>();
        const via = `${holder} .${edgeName}`;
        by.set(via, (by.get(via) ?? 0) + nodes[to + sizeAt]!);
        retainers.set(key, by);
      }
    }
  }
  console.log(`${file}: ${(total / 1048576).toFixed(1)} MiB in ${(nodes.length / width).toLocaleString("en-US")} nodes (self sizes, backing stores included)`);
  for (const [key, { bytes, count }] of rows) {
    console.log(`${(bytes / 1048576).toFixed(2).padStart(9)} MiB ${count.toLocaleString("en-US").padStart(11)}  ${key}`);
    const by = retainers.get(key);
    if (by === undefined) continue;
    for (const [via, b] of [...by].sort((x, y) => y[1] - x[1]).slice(0, 6)) {
      console.log(`${"".padStart(26)}${(b / 1048576).toFixed(2).padStart(8)} MiB via ${via}`);
    }
  }
}

main();
