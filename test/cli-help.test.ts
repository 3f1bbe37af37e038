// The CLI's help, as kubectl and hubble users expect it: every command and subcommand
// answers --help on stdout with exit 0, `bulkhead help CMD` is `bulkhead CMD --help`, the
// README's synopses name only flags the help texts list, and `bulkhead version` says which
// bulkhead and which agent protocol; default ports clear of the CNIs' (deploy/COMPATIBILITY.md).
// Runs the built CLI (dist/cli/main.js).
import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import path from "node:path";
import { describe, expect, it, vi } from "vitest";
import { cliMain, repoRoot } from "../config/install.js";
import { parseAgentArgs } from "../agent/config.js";
import { parseControlPlaneArgs } from "../controlplane/config.js";
import { DEFAULT_SERVER } from "../cli/client.js";
import { AGENT_METRICS_PORT } from "../lab/agents.js";
import { DEFAULT_OBSERVER_ADDRESS, DEFAULT_UI_ADDRESS } from "../lab/controlplane.js";

// ~60 CLI starts in all, four at a time: seconds on an idle machine, a minute on a busy one.
vi.setConfig({ testTimeout: 180_000 });

interface Ran { code: number; stdout: string; stderr: string }

// At most four CLI processes at once (each loads Node and the CLI: ~0.3 s of CPU), and each
// distinct command line run once: the README's synopses ask again for the same help texts.
const MAX_RUNNING = 4;
let running = 0;
const queue: (() => void)[] = [];
const ran = new Map<string, Promise<Ran>>();

function bulkhead(...args: string[]): Promise<Ran> {
  const key = JSON.stringify(args);
  let result = ran.get(key);
  if (result === undefined) {
    result = new Promise<void>((go) => { if (running < MAX_RUNNING) go(); else queue.push(go); }).then(() => {
      running++;
      return new Promise<Ran>((resolve) => {
        execFile(process.execPath, [cliMain, ...args], { timeout: 60_000 }, (err, stdout, stderr) => {
          running--;
          queue.shift()?.();
          resolve({ code: err === null ? 0 : typeof err.code === "number" ? err.code : -1, stdout, stderr });
        });
      });
    });
    ran.set(key, result);
  }
  return result;
}

/** The command names listed in a usage text's section: lines indented by exactly two spaces. */
function listed(usage: string, after: RegExp): string[] {
  const start = usage.search(after);
  return [...usage.slice(start).matchAll(/^ {2}([a-z][a-z-]*)/gm)].map((m) => m[1]!);
}

describe("help", () => {
  it("every command answers --help with its usage on stdout and exit 0, and `help CMD` prints the same", async () => {
    const top = await bulkhead("help");
    expect(top.code).toBe(0);
    const commands = listed(top.stdout, /^commands:/m).filter((c) => c !== "help");
    expect(commands).toEqual(expect.arrayContaining(["agent", "controlplane", "observe", "map", "status", "lab", "version"]));
    const results = await Promise.all(commands.map(async (c) => ({ c, flag: await bulkhead(c, "--help"), help: await bulkhead("help", c) })));
    for (const { c, flag, help } of results) {
      expect({ c, code: flag.code, usage: flag.stdout.startsWith("usage:") }).toEqual({ c, code: 0, usage: true });
      expect({ c, code: help.code, same: help.stdout === flag.stdout }).toEqual({ c, code: 0, same: true });
    }
  });

  it("every lab command answers --help with its own usage and exit 0", async () => {
    const lab = await bulkhead("lab", "help");
    expect(lab.code).toBe(0);
    const commands = [...new Set(listed(lab.stdout, /^usage:/m))];
    expect(commands).toEqual(expect.arrayContaining(["up", "down", "status", "restart", "exec", "pod", "traffic", "conformance"]));
    const results = await Promise.all(commands.map(async (c) => ({ c, r: await bulkhead("lab", c, "--help") })));
    for (const { c, r } of results) {
      expect({ c, code: r.code, usage: r.stdout.startsWith("usage:"), names: r.stdout.includes(`lab ${c}`) })
        .toEqual({ c, code: 0, usage: true, names: true });
    }
    // After "--", --help belongs to the command run in the pod, not to `lab exec`.
    const exec = await bulkhead("lab", "exec", "--state-dir", "/nonexistent", "ns/pod", "--", "ls", "--help");
    expect(exec.code).toBe(1);
    expect(exec.stderr).toMatch(/no lab is up/);
  });

  it("subcommands of probe, flows and policy answer --help with exit 0", async () => {
    for (const args of [["probe", "udp-send"], ["probe", "tcp-serve"], ["flows", "tail"], ["policy", "explain"], ["policy", "what-if"], ["policy", "suggest"]]) {
      const r = await bulkhead(...args, "--help");
      expect({ args, code: r.code, usage: r.stdout.startsWith("usage:") }).toEqual({ args, code: 0, usage: true });
    }
  });

  // A synopsis is a line of a README code block that starts with "bulkhead CMD" (lines
  // indented below it continue it); each --flag on it must be in `bulkhead CMD --help`.
  it("the README's synopses name only flags that the help texts list", async () => {
    const readme = readFileSync(path.join(repoRoot, "README.md"), "utf8");
    const lines = [...readme.matchAll(/```[a-z]*\n([\s\S]*?)```/g)]
      .flatMap((m) => m[1]!.replace(/\n\s+(?=\S)/g, " ").split("\n"))
      .map((l) => l.replace(/#.*$/, ""));
    const labCommands = ["up", "down", "status", "restart", "stop", "start", "exec", "pod", "traffic", "conformance"];
    const synopses = lines.flatMap((line) => {
      const m = /^bulkhead ([a-z][a-z-]*)(?: ([a-z][a-z-]*))?(.*)$/.exec(line);
      if (!m) return [];
      const command = m[1] === "lab" && m[2] !== undefined && labCommands.includes(m[2]) ? ["lab", m[2]] : [m[1]!];
      const rest = command.length === 2 ? m[3]! : `${m[2] ?? ""}${m[3]!}`;
      return [{ command, flags: [...new Set([...rest.matchAll(/(?<![\w-])(--[a-z][a-z0-9-]*)/g)].map((f) => f[1]!))] }];
    });
    expect(synopses.length).toBeGreaterThan(15);
    const helps = await Promise.all(synopses.map((s) => bulkhead(...s.command, "--help")));
    for (const [i, s] of synopses.entries()) {
      const help = helps[i]!;
      expect({ command: s.command.join(" "), code: help.code, missing: s.flags.filter((f) => !help.stdout.includes(f)) })
        .toEqual({ command: s.command.join(" "), code: 0, missing: [] });
    }
  });
});

describe("version", () => {
  it("prints package.json's version and the agent protocol version, as text or JSON", async () => {
    const { version } = JSON.parse(readFileSync(path.join(repoRoot, "package.json"), "utf8")) as { version: string };
    const text = await bulkhead("version");
    expect(text).toMatchObject({ code: 0, stdout: `bulkhead ${version} (agent protocol 2)\n` });
    expect((await bulkhead("--version")).stdout).toBe(text.stdout);
    const json = await bulkhead("version", "-o", "json");
    expect(JSON.parse(json.stdout)).toEqual({ version, protocolVersion: 2 });
    const yaml = await bulkhead("version", "-o", "yaml");
    expect(yaml.stdout).toBe(`---\nversion: ${version}\nprotocolVersion: 2\n`);
    const bad = await bulkhead("version", "-o", "xml");
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/version: -o\/--output: "xml" is not one of text, json, yaml/);
  });
});

describe("default ports", () => {
  // deploy/COMPATIBILITY.md's "Ports" table: what other node software listens on by default.
  const taken = (): Map<number, string> => {
    const text = readFileSync(path.join(repoRoot, "deploy", "COMPATIBILITY.md"), "utf8");
    const section = text.slice(text.indexOf("## Ports"), text.indexOf("## Kernels"));
    const ports = new Map<number, string>();
    for (const row of section.split("\n").filter((l) => /^\| [^-]/.test(l) && !l.startsWith("| software"))) {
      const [software = "", list = ""] = row.split("|").slice(1).map((c) => c.trim());
      for (const p of list.split(",")) ports.set(Number(p.trim()), software);
    }
    return ports;
  };
  const portOf = (address: string) => Number(address.slice(address.lastIndexOf(":") + 1));

  it("the table lists the ports of Kubernetes, Cilium, Calico and the other CNIs", () => {
    const ports = taken();
    for (const p of [10250, 4244, 4245, 9962, 9964, 179, 5473, 9099, 8472]) expect(ports.has(p), String(p)).toBe(true);
    expect([...ports.keys()].every((p) => Number.isInteger(p) && p > 0 && p < 65536)).toBe(true);
  });

  it("no default of the agent, the control plane, the CLI or the manifests is one of them", () => {
    const ports = taken();
    const defaults = new Map<string, number>([
      ["agent --metrics-addr", parseAgentArgs(["--node", "n1", "--controlplane", "127.0.0.1:1"]).metricsAddr?.port ?? 0],
      ["controlplane --listen", portOf(parseControlPlaneArgs(["--manifests", repoRoot, "--allow-unauthenticated"]).listen[0] ?? "")],
      ["CLI --server", portOf(DEFAULT_SERVER)],
      ["lab observer", portOf(DEFAULT_OBSERVER_ADDRESS)],
      ["lab UI", portOf(DEFAULT_UI_ADDRESS)],
      ["lab agents' metrics", AGENT_METRICS_PORT],
    ]);
    const base = path.join(repoRoot, "deploy", "kustomize", "base");
    for (const file of ["agent-daemonset.yaml", "controlplane-deployment.yaml", "controlplane-service.yaml"]) {
      for (const m of readFileSync(path.join(base, file), "utf8").matchAll(/(?:containerPort|port|targetPort): (\d+)/g)) defaults.set(`${file} ${m[0]}`, Number(m[1]));
    }
    for (const [what, port] of defaults) {
      expect(port, what).toBeGreaterThan(0);
      expect(ports.get(port), `${what} (${port})`).toBeUndefined();
    }
  });
});

describe("controlplane --ingest-workers", () => {
  const workers = (...flag: string[]) => parseControlPlaneArgs(["--manifests", repoRoot, "--allow-unauthenticated", ...flag]).ingestWorkers;

  it("is 0 unless given, takes 0..16 threads, and names itself when refused", () => {
    expect(workers()).toBe(0);
    expect([workers("--ingest-workers", "0"), workers("--ingest-workers", "2"), workers("--ingest-workers", "16")]).toEqual([0, 2, 16]);
    for (const bad of ["17", "-1", "1.5", "two", ""]) expect(() => workers(`--ingest-workers=${bad}`)).toThrow(/--ingest-workers: ".*" is not a whole number in 0\.\.16/);
  });
});

describe("agent --controlplane", () => {
  const addresses = (raw: string) => parseAgentArgs(["--node", "n1", "--controlplane", raw]).controlplane;

  it("takes one address or the replicas' addresses, in order", () => {
    expect(addresses("10.96.0.10:4387")).toEqual(["10.96.0.10:4387"]);
    expect(addresses("unix:///run/a.sock,10.0.0.2:4387,cp-2.bulkhead:4387")).toEqual(["unix:///run/a.sock", "10.0.0.2:4387", "cp-2.bulkhead:4387"]);
  });

  it("refuses an empty entry, a repeated address and a bad one, naming it", () => {
    expect(() => addresses("10.0.0.1:4387,")).toThrow(/--controlplane: "10\.0\.0\.1:4387," has an empty address/);
    expect(() => addresses("10.0.0.1:4387,10.0.0.1:4387")).toThrow(/--controlplane: "10\.0\.0\.1:4387" is given twice/);
    expect(() => addresses("10.0.0.1:4387,unix://")).toThrow(/--controlplane: "unix:\/\/" names no socket path/);
    expect(() => addresses("10.0.0.1:4387,10.0.0.2")).toThrow(/--controlplane/);
  });
});

describe("map --window", () => {
  it("is refused before any call when the server would refuse it: not positive, or beyond 366 days", async () => {
    for (const window of ["0s", "400d"]) {
      const r = await bulkhead("map", "-A", "--window", window, "--server", "127.0.0.1:1");
      expect(r.code, window).toBe(2);
      expect(r.stderr).toContain(`--window: "${window}" is outside (0, 366d]`);
    }
  });
});
