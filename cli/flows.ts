// `bulkhead flows tail`: follows JSON-lines flow export files and prints one compact line
// per record. Until the control plane exists, this is the lab's live view of flows.
import fs from "node:fs";
import path from "node:path";
import { parseArgs } from "node:util";
import { FlowRecord, ObservationPoint } from "../proto/gen/bulkhead/v1/flow.js";
import { ConfigError } from "../config/flags.js";

const usage = `usage: bulkhead flows tail [--no-follow] PATH…

PATH is a JSON-lines export file or a folder of them (*.jsonl). Prints every record,
then (unless --no-follow) new records as agents append them.
`;

function endpoint(ip: string, port: number, v6: boolean): string {
  if (!port) return ip;
  return v6 ? `[${ip}]:${port}` : `${ip}:${port}`;
}

export function compactLine(r: FlowRecord): string {
  const t = r.endTime ? new Date(Number(r.endTime.seconds) * 1000 + Math.floor(r.endTime.nanos / 1e6)) : undefined;
  const time = t ? t.toISOString().slice(11, 23) : "--:--:--.---";
  const v6 = r.ip?.version === 2;
  const l4 = r.l4;
  const proto = l4?.protocolName ?? "?";
  const src = endpoint(r.ip?.source ?? "?", l4?.sourcePort ?? 0, v6);
  const dst = endpoint(r.ip?.destination ?? "?", l4?.destinationPort ?? 0, v6);
  const point = r.point === ObservationPoint.OBSERVATION_POINT_FROM_POD ? "from-pod" : "to-pod";
  const extra = l4?.tcpFlags
    ? " " + Object.entries(l4.tcpFlags).filter(([, on]) => on).map(([f]) => f.toUpperCase()).join(",")
    : (proto.startsWith("ICMP") ? ` type ${l4?.icmpType} code ${l4?.icmpCode}` : "");
  return `${time} ${r.node} ${r.interface} ${point} ${src} -> ${dst} ${proto}${extra} `
    + `${r.packets} pkts ${r.bytes} B`;
}

class Tail {
  private offset = 0;
  private partial = "";
  private lineNo = 0;
  constructor(readonly file: string) {}

  read(onRecord: (r: FlowRecord) => void): void {
    let fd: number;
    try { fd = fs.openSync(this.file, "r"); } catch { return; }
    try {
      const size = fs.fstatSync(fd).size;
      if (size < this.offset) { this.offset = 0; this.partial = ""; }
      if (size === this.offset) return;
      const buf = Buffer.alloc(size - this.offset);
      fs.readSync(fd, buf, 0, buf.length, this.offset);
      this.offset = size;
      const lines = (this.partial + buf.toString("utf8")).split("\n");
      this.partial = lines.pop() ?? "";
      for (const line of lines) {
        this.lineNo++;
        if (!line.trim()) continue;
        try {
          onRecord(FlowRecord.fromJSON(JSON.parse(line)));
        } catch (err) {
          process.stderr.write(`${this.file}:${this.lineNo}: not a FlowRecord JSON line: ${(err as Error).message}\n`);
        }
      }
    } finally {
      fs.closeSync(fd);
    }
  }
}

function exportFiles(paths: string[]): string[] {
  const out: string[] = [];
  for (const p of paths) {
    const st = fs.statSync(p, { throwIfNoEntry: false });
    if (st?.isDirectory()) {
      for (const f of fs.readdirSync(p).sort()) if (f.endsWith(".jsonl")) out.push(path.join(p, f));
    } else {
      out.push(p);
    }
  }
  return out;
}

export async function runFlows(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  if (argv.includes("--help") || argv.includes("-h")) {
    process.stdout.write(usage);
    return 0;
  }
  if (sub !== "tail") {
    process.stderr.write(usage);
    return 2;
  }
  let parsed;
  try {
    parsed = parseArgs({ args: rest, allowPositionals: true, options: { "no-follow": { type: "boolean" } } });
  } catch (err) {
    throw new ConfigError((err as Error).message);
  }
  if (parsed.positionals.length === 0) throw new ConfigError("flows tail: give at least one file or folder");
  const tails = new Map<string, Tail>();
  const print = (r: FlowRecord) => process.stdout.write(compactLine(r) + "\n");
  const scan = () => {
    for (const f of exportFiles(parsed.positionals)) {
      if (!tails.has(f)) tails.set(f, new Tail(f));
      tails.get(f)?.read(print);
    }
  };
  scan();
  if (parsed.values["no-follow"]) return 0;
  return await new Promise<number>((resolve) => {
    const timer = setInterval(scan, 250);
    const stop = () => { clearInterval(timer); resolve(0); };
    process.once("SIGINT", stop);
    process.once("SIGTERM", stop);
  });
}
