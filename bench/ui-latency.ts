// Packet → browser: how long from a pod sending the first packet of a new edge until that
// edge is on the web UI's map in Debian's Chromium, against the same packets' arrival on
// the control plane's gRPC follow stream (`bulkhead observe -f`) in the same run.
//
// Method. The demo lab (lab/topologies/demo.yaml, agents with their default 1 s drain, its
// traffic running, so the map stream carries other changes too) with its Observer API on
// 127.0.0.1:22490 and UI on 127.0.0.1:22491. A sender process runs in the loadgen pod's
// network namespace for the whole run; per trial it sends one UDP datagram to the catalog
// pod's IP on a port no trial used before (shop enforces default-deny ingress, so catalog's
// veth drops it: the edge loadgen → catalog UDP/<port> is new each trial) and reports
// Date.now() just before send(). Seen at, on the same wall clock:
//   - observe: `bulkhead observe -f -o json --protocol UDP --from-workload loadgen/loadgen`
//     (a child process; the line's arrival on its stdout) — the reference;
//   - graph: the page (?namespace=shop) polls every 5 ms for a new map version and then looks
//     the edge up in window.bulkheadMap.edges() — the delta applied to the cytoscape graph;
//   - row: a MutationObserver on the edge table sees its row inserted (the accessible
//     mirror, batched at most every 500 ms).
// Trials run one after another, each after a random pause of 0-1000 ms, so sends fall at
// random phases of the agents' drain tick. Figures: p50 / p99 / max per stage and the
// ratio of the browser's median to the reference's. Prints; asserts nothing.
//
// Usage (brings up a lab: hold the lab lock):
//   npm run build && flock /tmp/bulkhead-lab.lock node dist/bench/ui-latency.js [--trials N]
import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import readline from "node:readline";
import { cliMain } from "../config/install.js";
import { upDemo } from "../lab/demo.js";
import type { Lab } from "../lab/lab.js";
import { FlowRecord } from "../proto/gen/bulkhead/v1/flow.js";
import { launchChromium, type LaunchedBrowser } from "../test/harness/browser.js";

const OBSERVER = "127.0.0.1:22490";
const UI = "127.0.0.1:22491";
const FIRST_PORT = 31_000;
const TRIAL_TIMEOUT_MS = 15_000;

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i === -1 ? undefined : process.argv[i + 1];
}
const TRIALS = Number(arg("trials") ?? 30);
if (!Number.isInteger(TRIALS) || TRIALS < 1 || TRIALS > 1000) {
  process.stderr.write(`ui-latency: --trials must be an integer 1-1000, got ${JSON.stringify(arg("trials"))}\n`);
  process.exit(2);
}

// Runs in the pod: one line "IP PORT" in → one datagram out, then "PORT SENT_AT_MS".
const SENDER = `
const dgram = require("node:dgram");
const sock = dgram.createSocket("udp4");
require("node:readline").createInterface({ input: process.stdin }).on("line", (line) => {
  const [ip, port] = line.trim().split(" ");
  const at = Date.now();
  sock.send(Buffer.from("bulkhead ui-latency"), Number(port), ip, (err) => {
    process.stdout.write(err ? "error " + port + " " + err.message + "\\n" : port + " " + at + "\\n");
  });
});
process.stdin.on("end", () => sock.close());
`;

// Runs in the page: marks when each watched edge reaches the graph and its table row.
const WATCH = `(ids) => {
  const seen = window.__latency = window.__latency || { graph: {}, row: {} };
  const watched = new Set(ids);
  let version = -1;
  setInterval(() => {
    if (window.bulkheadMap.version === version) return;
    version = window.bulkheadMap.version;
    const now = Date.now();
    for (const e of window.bulkheadMap.edges()) if (watched.has(e.id) && seen.graph[e.id] === undefined) seen.graph[e.id] = now;
  }, 5);
  new MutationObserver((mutations) => {
    const now = Date.now();
    for (const m of mutations) for (const n of m.addedNodes) {
      const id = n.getAttribute && n.getAttribute("data-edge-id");
      if (id && watched.has(id) && seen.row[id] === undefined) seen.row[id] = now;
    }
  }).observe(document.querySelector("[data-testid=edge-list]"), { childList: true, subtree: true });
}`;

interface Trial { port: number; sent: number; observe?: number; graph?: number; row?: number }

function quantile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(p * s.length))] ?? NaN;
}
const median = (xs: number[]) => quantile(xs, 0.5);

async function main(): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "bhbench-uilat-"));
  const stateDir = path.join(dir, "state");
  let lab: Lab | undefined;
  let browser: LaunchedBrowser | undefined;
  let sender: ChildProcess | undefined;
  let follower: ChildProcess | undefined;
  const cleanup = async () => {
    sender?.kill();
    follower?.kill();
    await browser?.close().catch(() => undefined);
    await lab?.down().catch((err: Error) => process.stderr.write(`ui-latency: lab down: ${err.message}\n`));
    lab = undefined;
    fs.rmSync(dir, { recursive: true, force: true });
  };
  for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
    process.once(signal, () => { void cleanup().finally(() => process.exit(130)); });
  }
  try {
    process.stdout.write("ui-latency: bringing up the demo lab…\n");
    lab = await upDemo({ stateDir, pinDir: path.join(dir, "pins"), controlplane: { observer: OBSERVER, ui: UI } });
    const status = await lab.status();
    const from = status.pods.find((p) => p.namespace === "loadgen" && p.name.startsWith("loadgen-"));
    const to = status.pods.find((p) => p.namespace === "shop" && p.name.startsWith("catalog-"));
    if (!from || !to) throw new Error("the demo lab has no loadgen or catalog pod");
    const edgeOf = (port: number) => `workload:loadgen/Deployment/loadgen,workload:shop/Deployment/catalog,UDP,${port}`;
    const trials: Trial[] = [];
    const byPort = new Map<number, Trial>();

    // The reference: the gRPC follow stream, as `bulkhead observe -f` prints it.
    follower = spawn(process.execPath, [cliMain, "observe", "-f", "-o", "json", "--server", OBSERVER,
      "--protocol", "UDP", "--from-workload", "loadgen/loadgen"], { env: { ...process.env, BULKHEAD_LAB_STATE_DIR: stateDir }, stdio: ["ignore", "pipe", "inherit"] });
    readline.createInterface({ input: follower.stdout! }).on("line", (line) => {
      const now = Date.now();
      const r = FlowRecord.fromJSON(JSON.parse(line));
      const t = byPort.get(r.l4?.destinationPort ?? 0);
      if (t && t.observe === undefined && r.ip?.destination === to.ip) t.observe = now;
    });

    sender = await lab.spawn({ namespace: from.namespace, name: from.name }, [process.execPath, "-e", SENDER], { stdio: ["pipe", "pipe", "inherit"] });
    const sentAt = new Map<number, (at: number) => void>();
    readline.createInterface({ input: sender.stdout! }).on("line", (line) => {
      const [port, at] = line.split(" ");
      if (port === "error") { process.stderr.write(`ui-latency: send failed: ${line}\n`); return; }
      sentAt.get(Number(port))?.(Number(at));
    });

    browser = await launchChromium();
    const page = await browser.context.newPage();
    await page.goto(`http://${UI}/?namespace=shop&window=5m`);
    await page.waitForFunction("document.querySelector('[data-testid=connection-state]').dataset.state === 'live'", undefined, { timeout: 30_000 });
    const ports = Array.from({ length: TRIALS }, (_, i) => FIRST_PORT + i);
    await page.evaluate(`(${WATCH})(${JSON.stringify(ports.map(edgeOf))})`);
    // Give the agents and the stream a moment with the page live before the first trial.
    await new Promise((r) => setTimeout(r, 3000));

    process.stdout.write(`ui-latency: ${TRIALS} trials, ${from.namespace}/${from.name} → ${to.namespace}/${to.name} (${to.ip}) UDP, one datagram each; page ${page.url()}\n`);
    for (const port of ports) {
      await new Promise((r) => setTimeout(r, Math.random() * 1000));
      const sent = await new Promise<number>((resolve, reject) => {
        sentAt.set(port, resolve);
        sender!.stdin!.write(`${to.ip} ${port}\n`);
        setTimeout(() => reject(new Error(`the sender did not report port ${port}`)), 5000);
      });
      const t: Trial = { port, sent };
      byPort.set(port, t);
      trials.push(t);
      const deadline = Date.now() + TRIAL_TIMEOUT_MS;
      for (;;) {
        const seen = await page.evaluate(`[window.__latency.graph[${JSON.stringify(edgeOf(port))}], window.__latency.row[${JSON.stringify(edgeOf(port))}]]`) as [number | undefined, number | undefined];
        t.graph = seen[0];
        t.row = seen[1];
        if ((t.row !== undefined && t.observe !== undefined) || Date.now() > deadline) break;
        await new Promise((r) => setTimeout(r, 50));
      }
      const ms = (x: number | undefined) => (x === undefined ? "—" : String(x - t.sent)).padStart(5);
      process.stdout.write(`  port ${port}: observe ${ms(t.observe)} ms, graph ${ms(t.graph)} ms, row ${ms(t.row)} ms\n`);
    }

    const complete = trials.filter((t): t is Required<Trial> => t.observe !== undefined && t.graph !== undefined && t.row !== undefined);
    const stage = (label: string, xs: number[]) => {
      process.stdout.write(`  ${label.padEnd(44)} ${median(xs).toFixed(0).padStart(6)} ${quantile(xs, 0.99).toFixed(0).padStart(6)} ${Math.max(...xs).toFixed(0).padStart(6)}\n`);
      return median(xs);
    };
    process.stdout.write(`\n${complete.length} of ${trials.length} trials seen on every path (ms)     p50    p99    max\n`);
    const observe = stage("packet → observe -f (reference)", complete.map((t) => t.observe - t.sent));
    const graph = stage("packet → graph (cytoscape)", complete.map((t) => t.graph - t.sent));
    const row = stage("packet → edge row in the page", complete.map((t) => t.row - t.sent));
    process.stdout.write("  breakdown\n");
    stage("  observe -f → graph (UI stream + apply)", complete.map((t) => t.graph - t.observe));
    stage("  graph → row (mirror table batching)", complete.map((t) => t.row - t.graph));
    process.stdout.write(`  ratio of medians: graph/observe ${(graph / observe).toFixed(2)}, row/observe ${(row / observe).toFixed(2)}\n`);
    process.stdout.write(`SUMMARY trials=${complete.length}/${trials.length} observe_p50_ms=${observe.toFixed(0)} graph_p50_ms=${graph.toFixed(0)} `
      + `row_p50_ms=${row.toFixed(0)} row_p99_ms=${quantile(complete.map((t) => t.row - t.sent), 0.99).toFixed(0)} ratio_row_observe=${(row / observe).toFixed(2)}\n`);
  } finally {
    await cleanup();
  }
}

main().catch((err: Error) => {
  process.stderr.write(`ui-latency: ${err.stack ?? err.message}\n`);
  process.exit(1);
});
