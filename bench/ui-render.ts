// Render and update cost of the web UI's map: 500 workloads and 2,000 edges in one
// namespace, in Debian's Chromium (headless, software rendering).
//
// Method. A ControlPlane runs in this process on generated manifests (500 pods in namespace
// `bench`, each its own workload; 20 pods in `peer` for cross-namespace edges) with its UI
// server on 127.0.0.1:0 serving dist/ui (run `npm run build:ui` first). Synthetic FROM_POD
// records are fed through cp.ingest: first one per edge (2,000 edges; 5 % dropped, 5 %
// audit), then, while frames are measured, records touching 200 edges per second (20 every
// 100 ms). Each run opens a fresh page on ?namespace=bench and measures:
//   - first render: navigation start → all 2,000 edges drawn (after the layout, ui/src/layout.ts),
//     and its phases from the page's User Timing marks (page loaded, snapshot received, laid out and
//     added to cytoscape, first frame drawn, mirror tables written);
//   - frame intervals (requestAnimationFrame) over 8 s while updates stream;
//   - frame intervals over a scripted pan and zoom (mouse drags and wheel, 4 s) while updates stream.
// Reference, same run: the page with ?reference=whole-map answers every stream notification
// by fetching /api/v1/map and redrawing the whole map (what a whole-map poll costs), with
// positions kept and no relayout (generous to it). Runs alternate delta / reference;
// figures are medians over runs. Prints; asserts nothing.
//
// With --profile DIR, the first delta run also records Chrome's CPU profile and metrics
// (Performance.getMetrics: script, style, layout time) for the first render and for the
// streaming window, prints the functions with the most self time in each and writes the
// profiles to DIR (first-render.cpuprofile, streaming.cpuprofile: open them in DevTools).
//
// With --trace FILE, the first delta run's first render is also traced (Chrome's timeline, as
// DevTools' Performance panel records it) into FILE, and the main thread's time is printed per
// kind of work (CPU time of the main thread, which the machine's load sways much less than
// wall time, and wall time) and per 500 ms.
//
// Usage: npm run build:ts && npm run build:ui && node dist/bench/ui-render.js [--runs N] [--screenshot FILE] [--profile DIR] [--trace FILE]
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import pino from "pino";
import { AccessControl } from "../controlplane/access/index.js";
import { ControlPlane } from "../controlplane/controlplane.js";
import { FolderSource } from "../controlplane/metadata/folder.js";
import { DEFAULT_STATIC_DIR } from "../controlplane/ui/server.js";
import { FlowRecord, IpVersion, ObservationPoint, ReporterSide, Verdict, VerdictReason } from "../proto/gen/bulkhead/v1/flow.js";
import type { CDPSession } from "playwright-core";
import { launchChromium } from "../test/harness/browser.js";
import { seededRandom } from "../test/harness/seeded-random.js";

const WORKLOADS = 500, PEERS = 20, EDGES = 2000;
const EDGES_PER_SECOND = 200, TICK_MS = 100;
const STREAM_MS = 8000, PANZOOM_MS = 4000;

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i === -1 ? undefined : process.argv[i + 1];
}
const RUNS = Number(arg("runs") ?? 3);
const SCREENSHOT = arg("screenshot");
const PROFILE = arg("profile");
const TRACE = arg("trace");

const ipOf = (ns: "bench" | "peer", i: number) => (ns === "bench" ? `10.60.${Math.floor(i / 250)}.${(i % 250) + 2}` : `10.61.0.${i + 2}`);

function manifests(): string {
  const docs = [
    "apiVersion: v1\nkind: Namespace\nmetadata: { name: bench, annotations: { bulkhead.io/mode: audit } }",
    "apiVersion: v1\nkind: Namespace\nmetadata: { name: peer }",
    "apiVersion: v1\nkind: Node\nmetadata: { name: node1 }\nstatus: { addresses: [{ type: InternalIP, address: 192.168.77.1 }] }",
  ];
  const pod = (ns: "bench" | "peer", i: number) => `apiVersion: v1\nkind: Pod\nmetadata: { name: ${ns === "bench" ? "w" : "p"}${i}-0, namespace: ${ns}, uid: uid-${ns}-${i}, labels: { app: ${ns}-${i} }, creationTimestamp: "2024-01-01T00:00:00Z" }\nspec: { nodeName: node1 }\nstatus: { phase: Running, podIP: ${ipOf(ns, i)} }`;
  for (let i = 0; i < WORKLOADS; i++) docs.push(pod("bench", i));
  for (let i = 0; i < PEERS; i++) docs.push(pod("peer", i));
  return docs.join("\n---\n") + "\n";
}

interface EdgeSpec { src: string; dst: string; port: number; verdict: Verdict }

function edges(): EdgeSpec[] {
  const random = seededRandom(5);
  const out: EdgeSpec[] = [];
  const seen = new Set<string>();
  while (out.length < EDGES) {
    const a = Math.floor(random() * WORKLOADS);
    const cross = random() < 0.05;
    const src = ipOf("bench", a);
    const dst = cross ? ipOf("peer", Math.floor(random() * PEERS)) : ipOf("bench", Math.floor(random() * WORKLOADS));
    const port = 8000 + Math.floor(random() * 3);
    const key = `${src}>${dst}:${port}`;
    if (src === dst || seen.has(key)) continue;
    seen.add(key);
    const r = random();
    out.push({ src, dst, port, verdict: r < 0.05 ? Verdict.VERDICT_DROPPED : r < 0.1 ? Verdict.VERDICT_AUDIT : Verdict.VERDICT_FORWARDED });
  }
  return out;
}

let sequence = 0n;
function record(e: EdgeSpec): FlowRecord {
  const now = Date.now();
  const ts = (ms: number) => ({ seconds: BigInt(Math.floor(ms / 1000)), nanos: (ms % 1000) * 1e6 });
  return FlowRecord.fromPartial({
    startTime: ts(now - 200), endTime: ts(now), node: "node1", point: ObservationPoint.OBSERVATION_POINT_FROM_POD,
    reporter: ReporterSide.REPORTER_SIDE_SOURCE, interface: "veth", ifindex: 3,
    ip: { source: e.src, destination: e.dst, version: IpVersion.IP_VERSION_IPV4 },
    l4: { protocol: 6, protocolName: "TCP", sourcePort: 40_000 + Number(sequence % 20_000n), destinationPort: e.port },
    packets: 3n, bytes: 300n, verdict: e.verdict,
    verdictReason: e.verdict === Verdict.VERDICT_FORWARDED ? VerdictReason.VERDICT_REASON_UNSPECIFIED : VerdictReason.VERDICT_REASON_POLICY,
    sequence: ++sequence,
  });
}

interface FrameStats { frames: number; p50: number; p99: number; max: number; long: number }
interface RunResult { firstRenderMs: number; stream: FrameStats; panzoom: FrameStats; deltas: number }

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

// Runs in the page: rAF intervals for `ms` milliseconds.
const MEASURE_FRAMES = `(ms) => new Promise((resolve) => {
  const gaps = []; let last = performance.now(); const end = last + ms;
  const tick = (t) => { gaps.push(t - last); last = t; if (t < end) requestAnimationFrame(tick); else {
    gaps.sort((a, b) => a - b); const q = (p) => gaps[Math.min(gaps.length - 1, Math.floor(p * gaps.length))];
    resolve({ frames: gaps.length, p50: q(0.5), p99: q(0.99), max: gaps[gaps.length - 1], long: gaps.filter((g) => g > 50).length });
  } };
  requestAnimationFrame(tick);
})`;

interface ProfileNode { id: number; callFrame: { functionName: string; url: string; lineNumber: number }; hitCount?: number }
interface CpuProfile { nodes: ProfileNode[]; samples: number[]; timeDeltas: number[] }

/** What a profiled stretch cost: Chrome's own durations and the functions with the most self time. */
class Profiling {
  private before = new Map<string, number>();
  constructor(private readonly cdp: CDPSession, private readonly dir: string) {}
  static async start(cdp: CDPSession, dir: string): Promise<Profiling> {
    fs.mkdirSync(dir, { recursive: true });
    const p = new Profiling(cdp, dir);
    await cdp.send("Performance.enable");
    await cdp.send("Profiler.enable");
    await cdp.send("Profiler.setSamplingInterval", { interval: 200 });
    await p.begin();
    return p;
  }
  private async metrics(): Promise<Map<string, number>> {
    const { metrics } = await this.cdp.send("Performance.getMetrics");
    return new Map(metrics.map((m) => [m.name, m.value]));
  }
  async begin(): Promise<void> {
    this.before = await this.metrics();
    await this.cdp.send("Profiler.start");
  }
  async end(label: string, file: string): Promise<void> {
    const { profile } = await this.cdp.send("Profiler.stop") as unknown as { profile: CpuProfile };
    fs.writeFileSync(path.join(this.dir, file), JSON.stringify(profile));
    const after = await this.metrics();
    const d = (name: string) => ((after.get(name) ?? 0) - (this.before.get(name) ?? 0));
    process.stdout.write(`  profile ${label}: script ${(d("ScriptDuration") * 1000).toFixed(0)} ms, style ${(d("RecalcStyleDuration") * 1000).toFixed(0)} ms `
      + `(${d("RecalcStyleCount")} passes), layout ${(d("LayoutDuration") * 1000).toFixed(0)} ms (${d("LayoutCount")} passes), tasks ${(d("TaskDuration") * 1000).toFixed(0)} ms\n`);
    const byId = new Map(profile.nodes.map((n) => [n.id, n]));
    const self = new Map<string, number>();
    profile.samples.forEach((id, i) => {
      const f = byId.get(id)!.callFrame;
      const key = `${f.functionName || "(anonymous)"} ${f.url.replace(/^.*\//, "")}:${f.lineNumber + 1}`;
      self.set(key, (self.get(key) ?? 0) + (profile.timeDeltas[i] ?? 0) / 1000);
    });
    for (const [key, ms] of [...self].sort((a, b) => b[1] - a[1]).slice(0, 15)) process.stdout.write(`    ${ms.toFixed(0).padStart(6)} ms  ${key}\n`);
  }
}

/**
 * Chrome's timeline (the DevTools Performance panel's events) over the first render: written to
 * FILE (open it in DevTools), and summed per top-level task kind and per 500 ms of the page's
 * clock, so the seconds between navigation and the first frame can be read without a viewer.
 */
async function traceFirstRender(cdp: CDPSession, file: string, run: () => Promise<void>): Promise<void> {
  await cdp.send("Tracing.start", { transferMode: "ReturnAsStream", traceConfig: { includedCategories: ["toplevel", "devtools.timeline", "blink.user_timing", "v8.execute"] } });
  await run();
  const done = new Promise<string>((resolve) => cdp.once("Tracing.tracingComplete", (e) => resolve(e.stream!)));
  await cdp.send("Tracing.end");
  const stream = await done;
  let text = "";
  for (;;) {
    const chunk = await cdp.send("IO.read", { handle: stream });
    text += chunk.base64Encoded ? Buffer.from(chunk.data, "base64").toString() : chunk.data;
    if (chunk.eof) break;
  }
  await cdp.send("IO.close", { handle: stream });
  fs.writeFileSync(file, text);
  interface TraceEvent { name: string; ph: string; ts: number; dur?: number; tdur?: number; tid: number }
  const events = (JSON.parse(text) as { traceEvents: TraceEvent[] }).traceEvents;
  const navigation = events.find((e) => e.name === "navigationStart")?.ts ?? events[0]!.ts;
  // The renderer's main thread: the one that ran the map's marks.
  const mainTid = events.find((e) => e.name.startsWith("map: "))?.tid;
  // Wall time (dur) swings with the machine's load; the thread's CPU time (tdur) much less.
  const kinds: Record<string, string> = {
    ThreadControllerImpl__RunTask: "tasks", FunctionCall: "script", UpdateLayoutTree: "style", Layout: "layout", PrePaint: "paint", Paint: "paint",
    MinorGC: "gc", MajorGC: "gc",
  };
  const wall = new Map<string, number>(), cpu = new Map<string, number>();
  // The same up to the end of the task that drew the map's first frame (its "snapshot drawn"
  // mark): what the map itself cost, whether or not the mirror tables were written before the
  // bench's frame.
  const drawnAt = events.find((e) => e.tid === mainTid && e.name === "map: snapshot drawn")?.ts ?? Infinity;
  const drawnEnd = events.find((e) => e.tid === mainTid && e.ph === "X" && e.name === "ThreadControllerImpl::RunTask" && e.ts <= drawnAt && drawnAt <= e.ts + (e.dur ?? 0));
  const toDrawn = drawnEnd === undefined ? Infinity : drawnEnd.ts + (drawnEnd.dur ?? 0);
  const cpuToDrawn = new Map<string, number>();
  const buckets = new Map<number, Map<string, number>>();
  for (const e of events) {
    const kind = kinds[e.name.replace("::", "__")];
    if (e.tid !== mainTid || e.ph !== "X" || kind === undefined) continue;
    wall.set(kind, (wall.get(kind) ?? 0) + (e.dur ?? 0) / 1000);
    cpu.set(kind, (cpu.get(kind) ?? 0) + (e.tdur ?? 0) / 1000);
    if (e.ts < toDrawn) cpuToDrawn.set(kind, (cpuToDrawn.get(kind) ?? 0) + (e.tdur ?? 0) / 1000);
    if (kind === "tasks") continue;
    const at = Math.floor((e.ts - navigation) / 500_000) * 500;
    const b = buckets.get(at) ?? buckets.set(at, new Map()).get(at)!;
    b.set(kind, (b.get(kind) ?? 0) + (e.dur ?? 0) / 1000);
  }
  process.stdout.write(`  trace of the first render (${file}), main thread: ${[...cpu].map(([k, ms]) => `${k} ${ms.toFixed(0)} ms CPU (${(wall.get(k) ?? 0).toFixed(0)} wall)`).join(", ")}\n`);
  process.stdout.write(`  of it up to the map's first frame (the task with its "drawn" mark): ${[...cpuToDrawn].map(([k, ms]) => `${k} ${ms.toFixed(0)} ms CPU`).join(", ")}\n`);
  process.stdout.write("  wall ms per 500 ms from navigation (by start):\n");
  for (const [at, b] of [...buckets].sort((x, y) => x[0] - y[0])) {
    const parts = [...b].filter(([, ms]) => ms >= 5).sort((x, y) => y[1] - x[1]).map(([k, ms]) => `${k} ${ms.toFixed(0)}`);
    if (parts.length > 0) process.stdout.write(`    ${String(at).padStart(6)}  ${parts.join(", ")}\n`);
  }
}

async function main(): Promise<void> {
  if (!fs.existsSync(path.join(DEFAULT_STATIC_DIR, "index.html"))) {
    process.stderr.write(`ui-render: ${DEFAULT_STATIC_DIR}/index.html is missing: run npm run build:ui\n`);
    process.exit(2);
  }
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "bhbench-ui-"));
  fs.mkdirSync(path.join(tmp, "manifests"));
  fs.writeFileSync(path.join(tmp, "manifests", "cluster.yaml"), manifests());
  const cp = new ControlPlane({
    source: new FolderSource({ dir: path.join(tmp, "manifests") }), storeCapacity: 1_000_000,
    log: pino({ level: "warn" }), uiListen: { host: "127.0.0.1", port: 0 },
    access: new AccessControl({ tokens: [], allowUnauthenticated: true }),
  });
  const launched = await launchChromium();
  let feeder: NodeJS.Timeout | undefined;
  try {
    await cp.start([`unix://${path.join(tmp, "cp.sock")}`]);
    const specs = edges();
    cp.ingest("node1", specs.map(record));
    const mapEdges = cp.flowMap.getMap({ namespace: "bench" }).edges.length;
    process.stdout.write(`ui-render: ${WORKLOADS} workloads (+${PEERS} peers), ${mapEdges} edges in namespace bench; `
      + `updates: ${EDGES_PER_SECOND} edges/s; ${RUNS} runs per mode; UI ${cp.ui!.url}\n`);
    let cursor = 0;
    const perTick = Math.round(EDGES_PER_SECOND * TICK_MS / 1000);
    const startFeeding = () => {
      feeder = setInterval(() => {
        const batch: FlowRecord[] = [];
        for (let i = 0; i < perTick; i++) batch.push(record(specs[(cursor++) % specs.length]!));
        cp.ingest("node1", batch);
      }, TICK_MS);
    };
    const stopFeeding = () => { if (feeder) clearInterval(feeder); feeder = undefined; };

    const results: Record<"delta" | "reference", RunResult[]> = { delta: [], reference: [] };
    for (let run = 0; run < RUNS; run++) {
      for (const mode of (run % 2 === 0 ? ["delta", "reference"] : ["reference", "delta"]) as ("delta" | "reference")[]) {
        const page = await launched.context.newPage();
        const profiling = PROFILE && run === 0 && mode === "delta" ? await Profiling.start(await launched.context.newCDPSession(page), PROFILE) : undefined;
        const url = `${cp.ui!.url}?namespace=bench&window=5m${mode === "reference" ? "&reference=whole-map" : ""}`;
        let firstRenderMs = 0;
        const firstRender = async () => {
          await page.goto(url);
          await page.waitForFunction(`window.bulkheadMap && window.bulkheadMap.edges().length >= ${mapEdges}`, undefined, { timeout: 120_000, polling: 50 });
          firstRenderMs = await page.evaluate("new Promise((r) => requestAnimationFrame(() => r(performance.now())))") as number;
        };
        if (TRACE && run === 0 && mode === "delta") await traceFirstRender(await launched.context.newCDPSession(page), TRACE, firstRender);
        else await firstRender();
        await profiling?.end("first render", "first-render.cpuprofile");
        // Where the first render went: the page's User Timing marks (ui/src/main.ts, graph.ts), ms from navigation.
        // (A UI built before the marks has none: nothing to wait for.)
        await page.waitForFunction("performance.getEntriesByName('map: snapshot received').length === 0 || performance.getEntriesByName('map: mirror tables written').length > 0", undefined, { timeout: 120_000, polling: 50 });
        const marks = await page.evaluate(`Object.fromEntries(performance.getEntriesByType("mark").reverse().map((m) => [m.name, m.startTime]))`) as Record<string, number>;
        const nav = await page.evaluate(`(() => { const n = performance.getEntriesByType("navigation")[0]; return { html: n.responseEnd, scripts: n.domContentLoadedEventEnd }; })()`) as { html: number; scripts: number };
        const phase = (name: string) => (marks[`map: ${name}`] ?? NaN).toFixed(0);
        process.stdout.write(`  run ${run + 1} ${mode.padEnd(9)} phases (ms from navigation): page loaded ${nav.scripts.toFixed(0)}, snapshot received ${phase("snapshot received")}, `
          + `laid out and added ${phase("snapshot laid out")}, drawn ${phase("snapshot drawn")}, mirror tables written ${phase("mirror tables written")}\n`);
        if (SCREENSHOT && run === 0 && mode === "delta") await page.screenshot({ path: SCREENSHOT });
        startFeeding();
        await new Promise((r) => setTimeout(r, 1000)); // the first deltas arrive
        const deltasBefore = await page.evaluate("window.bulkheadMap.deltas") as number;
        await profiling?.begin();
        const stream = await page.evaluate(`(${MEASURE_FRAMES})(${STREAM_MS})`) as FrameStats;
        await profiling?.end("streaming (8 s)", "streaming.cpuprofile");
        const deltas = (await page.evaluate("window.bulkheadMap.deltas") as number) - deltasBefore;
        const box = (await page.locator("#map").boundingBox())!;
        const cx = box.x + box.width / 2, cy = box.y + box.height / 2;
        const measuring = page.evaluate(`(${MEASURE_FRAMES})(${PANZOOM_MS})`) as Promise<FrameStats>;
        const until = Date.now() + PANZOOM_MS - 200;
        for (let i = 0; Date.now() < until; i++) {
          await page.mouse.move(cx, cy);
          await page.mouse.down();
          for (let s = 1; s <= 8; s++) await page.mouse.move(cx + (i % 2 ? -1 : 1) * s * 15, cy + s * 6);
          await page.mouse.up();
          await page.mouse.wheel(0, i % 2 ? 240 : -240);
        }
        const panzoom = await measuring;
        stopFeeding();
        await page.close();
        results[mode].push({ firstRenderMs, stream, panzoom, deltas });
        process.stdout.write(`  run ${run + 1} ${mode.padEnd(9)} first render ${firstRenderMs.toFixed(0)} ms; streaming: p50 ${stream.p50.toFixed(1)} p99 ${stream.p99.toFixed(1)} max ${stream.max.toFixed(0)} ms, ${stream.long} long of ${stream.frames}, ${deltas} updates applied; pan/zoom: p50 ${panzoom.p50.toFixed(1)} p99 ${panzoom.p99.toFixed(1)} max ${panzoom.max.toFixed(0)} ms, ${panzoom.long} long of ${panzoom.frames}\n`);
      }
    }
    const row = (label: string, pick: (r: RunResult) => number) => {
      const d = median(results.delta.map(pick)), r = median(results.reference.map(pick));
      process.stdout.write(`  ${label.padEnd(34)} ${d.toFixed(1).padStart(9)} ${r.toFixed(1).padStart(11)} ${(r / d).toFixed(2).padStart(7)}\n`);
      return { d, r };
    };
    process.stdout.write(`\nmedians over ${RUNS} runs              deltas   whole map   ratio (whole/delta)\n`);
    const first = row("first render (ms)", (x) => x.firstRenderMs);
    const p50 = row("streaming frame p50 (ms)", (x) => x.stream.p50);
    const p99 = row("streaming frame p99 (ms)", (x) => x.stream.p99);
    row("streaming frame max (ms)", (x) => x.stream.max);
    const long = row("streaming long frames (>50 ms)", (x) => x.stream.long);
    row("pan/zoom frame p50 (ms)", (x) => x.panzoom.p50);
    const pzp99 = row("pan/zoom frame p99 (ms)", (x) => x.panzoom.p99);
    row("pan/zoom frame max (ms)", (x) => x.panzoom.max);
    row("pan/zoom long frames (>50 ms)", (x) => x.panzoom.long);
    row("updates applied (8 s)", (x) => x.deltas);
    process.stdout.write(`SUMMARY first_render_ms=${first.d.toFixed(0)} stream_p50_ms=${p50.d.toFixed(1)} stream_p99_ms=${p99.d.toFixed(1)} `
      + `stream_long=${long.d} panzoom_p99_ms=${pzp99.d.toFixed(1)} reference_stream_p99_ms=${p99.r.toFixed(1)} ratio_p99=${(p99.r / p99.d).toFixed(2)}\n`);
  } finally {
    if (feeder) clearInterval(feeder);
    await launched.close();
    await cp.stop();
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

main().catch((err: Error) => {
  process.stderr.write(`ui-render: ${err.stack ?? err.message}\n`);
  process.exit(1);
});
