// The native addon against the real kernel: a small BPF object compiled here, two network
// namespaces (bhaddon-a-PID, bhaddon-b-PID) joined by a veth, 10.198.0.0/24 and
// fd00:198::/64 only. Everything made here is removed in afterAll, also on failure.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { execFileSync, spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import {
  addonPath, isBpfError, native, ringRecords,
  type BpfError, type BpfObject, type DrainResult, type LinkEvent, type RawPacket,
} from "../native/index.js";
import { repoRoot } from "../config/install.js";
import { holdCensusLockForFile } from "./harness/census.js";

// The BPF census lock for the whole file (harness/census.ts): the file compares the machine's BPF
// link counts before and after its tests.
holdCensusLockForFile();

const addon = native();
const fixtureSource = path.join(repoRoot, "test", "fixtures", "addon_fixture.bpf.c");
const cniSource = path.join(repoRoot, "test", "fixtures", "cni_standin.bpf.c");
const NS_A = `bhaddon-a-${process.pid}`;
const NS_B = `bhaddon-b-${process.pid}`;
const nsA = `/run/netns/${NS_A}`;
const nsB = `/run/netns/${NS_B}`;
const pinDir = "/sys/fs/bpf";
const pinPrefix = `bhaddon-${process.pid}-`;

let workDir = "";
let objectPath = "";
let cniObjectPath = "";
const opened: BpfObject[] = [];

function run(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
}
const ip = (...args: string[]): string => run("ip", args);

function removeOwnNamespaces(): void {
  for (const ns of [NS_A, NS_B]) spawnSync("ip", ["netns", "del", ns], { stdio: "ignore" });
  for (const f of fs.existsSync(pinDir) ? fs.readdirSync(pinDir) : []) {
    if (f.startsWith(pinPrefix)) fs.rmSync(path.join(pinDir, f), { recursive: true, force: true });
  }
}

// Namespaces of an earlier run of this file whose process is gone (a crash skips afterAll).
function removeStaleNamespaces(): void {
  for (const line of run("ip", ["netns", "list"]).split("\n")) {
    const m = /^(bhaddon-[ab]-(\d+))\b/.exec(line);
    if (m?.[1] && m[2] && !fs.existsSync(`/proc/${m[2]}`)) {
      spawnSync("ip", ["netns", "del", m[1]], { stdio: "ignore" });
    }
  }
}

function openFixture(rodataKey = 0, maxEntries?: Record<string, number>): BpfObject {
  const rodata = { count_key: u32(rodataKey) };
  const obj = addon.openObject(objectPath, { rodata, ...(maxEntries ? { maxEntries } : {}) });
  opened.push(obj);
  return obj;
}

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b;
}
function u64(n: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(n));
  return b;
}
function countOf(obj: BpfObject, key: number): number {
  const v = obj.map("counts").lookup(u32(key));
  return v ? Number(v.readBigUInt64LE(0)) : 0;
}
// An Ethernet frame carrying nothing useful: enough for BPF_PROG_TEST_RUN on a tc program.
function frame(): Buffer {
  const f = Buffer.alloc(64);
  f.writeUInt16BE(0x0800, 12);
  return f;
}

/** Drained pieces of the fixture's `counts` map (u32 key → u64 value): together they hold
 * keys 0..n-1, each exactly once, each with its value `valueOf(key)`. */
function expectDrainedOnce(pieces: readonly DrainResult[], n: number, valueOf: (key: number) => number): void {
  const seen = new Set<number>();
  let total = 0;
  for (const p of pieces) {
    for (let i = 0; i < p.count; i++) {
      const k = p.keys.readUInt32LE(i * 4);
      expect(p.values.readBigUInt64LE(i * 8)).toBe(BigInt(valueOf(k)));
      seen.add(k);
    }
    total += p.count;
  }
  expect(total).toBe(n);
  expect(seen.size).toBe(n);
  expect(Math.min(...seen)).toBe(0);
  expect(Math.max(...seen)).toBe(n - 1);
}

function catchError(fn: () => unknown): BpfError {
  try {
    fn();
  } catch (err) {
    if (isBpfError(err)) return err;
    throw err;
  }
  throw new Error("expected a BpfError, nothing was thrown");
}

async function waitFor(cond: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const linkIds = (): Set<number> => new Set(addon.kernelObjectIds().links);
const progIds = (): Set<number> => new Set(addon.kernelObjectIds().programs);
// What each open fd is, sorted and counted by kind ("anon_inode:bpf-map", "socket", …).
function fdTargets(): Record<string, number> {
  const kinds: Record<string, number> = {};
  for (const fd of fs.readdirSync("/proc/self/fd")) {
    let target: string;
    try {
      target = fs.readlinkSync(`/proc/self/fd/${fd}`).replace(/\[\d+\]$/, "");
    } catch {
      continue; // the directory fd readdirSync itself used
    }
    kinds[target] = (kinds[target] ?? 0) + 1;
  }
  return kinds;
}
const ping = (ns: string, dst: string): string => run("ip", ["netns", "exec", ns, "ping", "-c", "2", "-i", "0.2", "-W", "1", dst]);
const tcFilters = (ns: string, dev: string, dir: "ingress" | "egress"): string =>
  run("ip", ["netns", "exec", ns, "tc", "filter", "show", "dev", dev, dir]);

// Runs a script in a child node process that loads the addon (for crash behaviour).
function child(script: string): string {
  const res = spawnSync(process.execPath, ["-e", `const addon = require(${JSON.stringify(addonPath)});\n${script}`], {
    encoding: "utf8", timeout: 20_000,
  });
  if (res.error) throw res.error;
  return `${res.stdout}`;
}

beforeAll(() => {
  removeStaleNamespaces();
  removeOwnNamespaces();
  workDir = fs.mkdtempSync(path.join(os.tmpdir(), "bhaddon-"));
  objectPath = path.join(workDir, "addon_fixture.bpf.o");
  run("clang", ["-O2", "-g", "-target", "bpf", "-mcpu=v3", "-I/usr/include/x86_64-linux-gnu",
    "-c", fixtureSource, "-o", objectPath]);
  cniObjectPath = path.join(workDir, "cni_standin.bpf.o");
  run("clang", ["-O2", "-g", "-target", "bpf", "-mcpu=v3", "-I/usr/include/x86_64-linux-gnu",
    "-c", cniSource, "-o", cniObjectPath]);
  try {
    ip("netns", "add", NS_A);
    ip("netns", "add", NS_B);
    ip("link", "add", "bha0", "netns", NS_A, "type", "veth", "peer", "name", "bhb0", "netns", NS_B);
    for (const [ns, dev, v4, v6] of [[NS_A, "bha0", "10.198.0.1/24", "fd00:198::1/64"],
      [NS_B, "bhb0", "10.198.0.2/24", "fd00:198::2/64"]] as const) {
      ip("-n", ns, "addr", "add", v4, "dev", dev);
      ip("-n", ns, "addr", "add", v6, "dev", dev, "nodad");
      ip("-n", ns, "link", "set", dev, "up");
      ip("-n", ns, "link", "set", "lo", "up");
    }
  } catch (err) {
    removeOwnNamespaces();
    throw err;
  }
});

afterAll(() => {
  for (const obj of opened) obj.close();
  removeOwnNamespaces();
  if (workDir) fs.rmSync(workDir, { recursive: true, force: true });
  expect(run("ip", ["netns", "list"])).not.toMatch(new RegExp(`bhaddon-[ab]-${process.pid}\\b`));
});
// A last resort if the worker dies between the hooks.
process.once("exit", removeOwnNamespaces);

describe("openObject", () => {
  it("throws op open, ENOENT for a missing file", () => {
    const err = catchError(() => addon.openObject(path.join(workDir, "missing.o")));
    expect(err).toMatchObject({ op: "open", object: path.join(workDir, "missing.o"), errno: 2, code: "ENOENT" });
    expect(err.message).toMatch(/^open .*missing\.o: No such file or directory \(errno 2\)/);
  });

  it("throws op open with libbpf's message for a corrupt file", () => {
    const bad = path.join(workDir, "corrupt.o");
    fs.writeFileSync(bad, "this is not an ELF object");
    const err = catchError(() => addon.openObject(bad));
    expect(err.op).toBe("open");
    expect(err.errno).toBeGreaterThan(0);
    expect(err.code).toBe("LIBBPF_ERRNO__FORMAT");
    expect(err.libbpfMessage).toMatch(/ELF/);
    expect(err.message).toContain("[libbpf: ");
  });

  it("rejects an unknown rodata variable and a value of the wrong size", () => {
    expect(catchError(() => addon.openObject(objectPath, { rodata: { nope: u32(1) } })))
      .toMatchObject({ op: "rodata", object: "nope", code: "ENOENT" });
    expect(catchError(() => addon.openObject(objectPath, { rodata: { count_key: Buffer.alloc(2) } })))
      .toMatchObject({ op: "rodata", object: "count_key", code: "EINVAL" });
  });

  it("makes a rodata value set before load visible to the program", () => {
    const obj = openFixture(7);
    const res = obj.program("count_packets").testRun(frame(), 3);
    expect(res.retval).toBe(-1);
    expect(countOf(obj, 7)).toBe(3);
    expect(obj.map("counts").dump().count).toBe(1);
  });

  it("applies maxEntries overrides before load", () => {
    const obj = openFixture(0, { counts: 8192 });
    const counts = obj.map("counts");
    expect(counts.maxEntries).toBe(8192);
    for (let i = 0; i < 5000; i++) counts.update(u32(i), u64(i)); // the compiled size is 1024
    expect(counts.dump().count).toBe(5000);
    expect(openFixture().map("counts").maxEntries).toBe(1024);
  });

  it("loads the endpoint object while the process is signalled every millisecond (node --cpu-prof)", () => {
    // The verifier stops with EAGAIN when a signal is pending; endpoint.bpf.o takes ~0.5 s to
    // verify, so every load failed under the CPU profiler's SIGPROF until the addon held
    // signals for it. Three loads in a profiled child process.
    const built = path.join(repoRoot, "dist", "native", "index.js");
    if (!fs.existsSync(built)) throw new Error("dist/ is missing: run npx tsc -p . first");
    const profDir = fs.mkdtempSync(path.join(workDir, "cpu-prof-"));
    const res = spawnSync(process.execPath, ["--cpu-prof", "--cpu-prof-dir", profDir, "--input-type=module", "-e",
      `const { native, bpfObjectDir } = await import(${JSON.stringify(built)});
       for (let i = 0; i < 3; i++) native().openObject(bpfObjectDir + "/endpoint.bpf.o").close();
       console.log("loaded 3");`], { encoding: "utf8", timeout: 60_000 });
    expect(res.stderr).toBe("");
    expect(res.stdout.trim()).toBe("loaded 3");
    expect(fs.readdirSync(profDir).filter((f) => f.endsWith(".cpuprofile"))).toHaveLength(1);
  });

  it("lists maps and programs and describes a program", () => {
    const obj = openFixture();
    expect(obj.maps()).toEqual(expect.arrayContaining(["counts", "runs", "events", "outer", "inner"]));
    expect(obj.programs()).toEqual(["count_packets"]);
    const prog = obj.program("count_packets");
    expect(prog).toMatchObject({ name: "count_packets", type: "sched_cls" });
    expect(progIds().has(prog.id)).toBe(true);
    expect(catchError(() => obj.map("nope"))).toMatchObject({ op: "map", code: "ENOENT" });
  });
});

describe("BpfMap", () => {
  it("updates, looks up and deletes single entries", () => {
    const counts = openFixture().map("counts");
    expect(counts).toMatchObject({ type: "hash", keySize: 4, valueSize: 8 });
    expect(counts.lookup(u32(1))).toBeNull();
    counts.update(u32(1), u64(42));
    expect(counts.lookup(u32(1))?.readBigUInt64LE(0)).toBe(42n);
    expect(catchError(() => counts.update(u32(1), u64(43), 1))).toMatchObject({ op: "map_update", code: "EEXIST" });
    expect(catchError(() => counts.update(u32(2), u64(43), 2))).toMatchObject({ code: "ENOENT" });
    expect(catchError(() => counts.update(u32(1), u32(43)))).toMatchObject({ code: "EINVAL" });
    expect(catchError(() => counts.lookup(Buffer.alloc(2)))).toMatchObject({ code: "EINVAL" });
    expect(counts.delete(u32(1))).toBe(true);
    expect(counts.delete(u32(1))).toBe(false);
  });

  it.each([1, 64, 4096])("drain (batch %i) returns 5000 entries exactly once and empties the map", (batch) => {
    const counts = openFixture(0, { counts: 8192 }).map("counts");
    for (let i = 0; i < 5000; i++) counts.update(u32(i), u64(i * 3));
    const res = counts.drain(batch);
    expect(res.keys.length).toBe(5000 * 4);
    expect(res.values.length).toBe(5000 * 8);
    expectDrainedOnce([res], 5000, (k) => k * 3);
    expect(counts.dump().count).toBe(0);
    expect(counts.drain().count).toBe(0);
  });

  it("drain into caller Buffers reads in place (views of them, no fresh Buffer) and reuses them drain after drain", () => {
    const counts = openFixture(0, { counts: 8192 }).map("counts");
    const into = { keys: Buffer.alloc(8192 * 4), values: Buffer.alloc(8192 * 8) };
    for (const round of [1, 2]) {
      for (let i = 0; i < 5000; i++) counts.update(u32(i), u64(i * round));
      const res = counts.drain(64, into);
      expect(res.count).toBe(5000);
      expect(res.keys.length).toBe(5000 * 4);
      expect(res.values.length).toBe(5000 * 8);
      // The same memory as the caller's Buffers, from their start.
      expect(res.keys.buffer).toBe(into.keys.buffer);
      expect(res.keys.byteOffset).toBe(into.keys.byteOffset);
      expect(res.values.buffer).toBe(into.values.buffer);
      expect(res.values.byteOffset).toBe(into.values.byteOffset);
      expectDrainedOnce([res], 5000, (k) => k * round);
      expect(counts.dump().count).toBe(0);
    }
  });

  it("drain into Buffers too small for the map returns every entry exactly once in a fresh pair", () => {
    const counts = openFixture(0, { counts: 8192 }).map("counts");
    for (let i = 0; i < 5000; i++) counts.update(u32(i), u64(i * 3));
    const into = { keys: Buffer.alloc(1000 * 4), values: Buffer.alloc(1000 * 8) };
    const res = counts.drain(64, into);
    expect(res.keys.buffer).not.toBe(into.keys.buffer);
    expectDrainedOnce([res], 5000, (k) => k * 3);
    expect(counts.dump().count).toBe(0);
  });

  it.each([1, 64, 4096])("drain into Buffers with stopWhenFull (batch %i) reads pieces in place, each entry exactly once", (batch) => {
    const counts = openFixture(0, { counts: 8192 }).map("counts");
    for (let i = 0; i < 5000; i++) counts.update(u32(i), u64(i * 3));
    const into = { keys: Buffer.alloc(1000 * 4), values: Buffer.alloc(1000 * 8), stopWhenFull: true };
    const pieces: { keys: Buffer; values: Buffer; count: number }[] = [];
    for (;;) {
      const res = counts.drain(batch, into);
      expect(res.count).toBeLessThanOrEqual(1000);
      expect(res.keys.buffer).toBe(into.keys.buffer);
      // The next piece reuses the Buffers: keep a copy of this one.
      pieces.push({ keys: Buffer.from(res.keys), values: Buffer.from(res.values), count: res.count });
      if (res.count === 0) break;
    }
    // A piece ends where the room does (or before a bucket that would not fit).
    expect(pieces.length).toBeGreaterThanOrEqual(6);
    expectDrainedOnce(pieces, 5000, (k) => k * 3);
    expect(counts.dump().count).toBe(0);
  });

  it("a piece resumes at the kernel's batch position (.next → into.from): each entry once, the end without .next", () => {
    const counts = openFixture(0, { counts: 8192 }).map("counts");
    for (let i = 0; i < 5000; i++) counts.update(u32(i), u64(i * 3));
    const into = { keys: Buffer.alloc(1000 * 4), values: Buffer.alloc(1000 * 8), stopWhenFull: true };
    const pieces: { keys: Buffer; values: Buffer; count: number }[] = [];
    let from: Buffer | undefined;
    for (;;) {
      const res = counts.drain(64, from ? { ...into, from } : into);
      pieces.push({ keys: Buffer.from(res.keys), values: Buffer.from(res.values), count: res.count });
      if (res.next === undefined) break;
      expect(res.count).toBeGreaterThan(0);
      expect(pieces.length).toBeLessThan(50);
      from = res.next;
    }
    expect(pieces.length).toBeGreaterThanOrEqual(5);
    expectDrainedOnce(pieces, 5000, (k) => k * 3);
    expect(counts.dump().count).toBe(0);
  });

  it("drain refuses a `from` that is not a batch position Buffer of the map's token size", () => {
    const counts = openFixture(0, { counts: 8192 }).map("counts");
    counts.update(u32(1), u64(1));
    const into = { keys: Buffer.alloc(4), values: Buffer.alloc(8), stopWhenFull: true };
    const msg = "drain into.from must be the 8-byte Buffer an earlier drain of counts returned as .next";
    expect(() => counts.drain(64, { ...into, from: Buffer.alloc(4) })).toThrow(new TypeError(msg));
    expect(() => counts.drain(64, { ...into, from: 0 as unknown as Buffer })).toThrow(new TypeError(msg));
    expect(counts.dump().count).toBe(1);
  });

  it("drain refuses an `into` that is not two Buffers, naming the field", () => {
    const counts = openFixture(0, { counts: 8192 }).map("counts");
    const bad = (into: unknown) => () => counts.drain(64, into as { keys: Buffer; values: Buffer });
    expect(bad(5)).toThrow(new TypeError("drain into must be { keys: Buffer, values: Buffer }"));
    expect(bad({ keys: Buffer.alloc(8) })).toThrow(new TypeError("drain into.values must be a Buffer"));
    expect(bad({ keys: "0000", values: Buffer.alloc(8) })).toThrow(new TypeError("drain into.keys must be a Buffer"));
  });

  it("dump reads every entry and leaves them in place", () => {
    const counts = openFixture(0, { counts: 8192 }).map("counts");
    for (let i = 0; i < 3000; i++) counts.update(u32(i), u64(i));
    expect(counts.dump(100).count).toBe(3000);
    expect(counts.dump().count).toBe(3000);
  });

  it("sizes percpu values as possibleCpus * roundUp(valueSize, 8)", () => {
    const obj = openFixture();
    const runs = obj.map("runs");
    const cpus = addon.possibleCpus();
    expect(runs).toMatchObject({ type: "percpu_array", valueSize: 4 });
    expect(runs.lookup(u32(0))?.length).toBe(cpus * 8);
    obj.program("count_packets").testRun(frame(), 5);
    const v = runs.lookup(u32(0));
    let total = 0;
    for (let c = 0; c < cpus; c++) total += v?.readUInt32LE(c * 8) ?? 0;
    expect(total).toBe(5);
    expect(runs.dump().values.length).toBe(4 * cpus * 8);
    runs.update(u32(1), Buffer.alloc(cpus * 8, 1));
    expect(catchError(() => runs.update(u32(1), Buffer.alloc(4)))).toMatchObject({ code: "EINVAL" });
  });

  it("pins and unpins, and refuses to unlink a file that is not its pin", () => {
    const obj = openFixture();
    const pin = path.join(pinDir, `${pinPrefix}counts`);
    obj.map("counts").pin(pin);
    try {
      expect(fs.existsSync(pin)).toBe(true);
      expect(catchError(() => obj.map("runs").unpin(pin))).toMatchObject({ op: "map_unpin", code: "EINVAL" });
      const plain = path.join(workDir, "not-a-pin");
      fs.writeFileSync(plain, "x");
      expect(catchError(() => obj.map("counts").unpin(plain))).toMatchObject({ code: "EINVAL" });
      expect(fs.existsSync(plain)).toBe(true);
      obj.map("counts").unpin(pin);
      expect(fs.existsSync(pin)).toBe(false);
    } finally {
      fs.rmSync(pin, { force: true });
    }
  });

  it("reads the statically initialized inner map of an array of maps", () => {
    const outer = openFixture().map("outer");
    expect(outer.type).toBe("array_of_maps");
    expect(outer.lookup(u32(0))?.readUInt32LE(0)).toBeGreaterThan(0);
    expect(outer.lookup(u32(1))).toBeNull();
  });
});

describe("synchronize", () => {
  it("returns after a map-in-map update that leaves the outer map as it was", () => {
    const obj = openFixture();
    const before = obj.map("outer").lookup(u32(0));
    expect(obj.synchronize("outer")).toBeUndefined();
    expect(obj.map("outer").lookup(u32(0))).toEqual(before);
    expect(catchError(() => obj.synchronize("counts"))).toMatchObject({ op: "synchronize", code: "EINVAL" });
  });
});

describe("attachTc", () => {
  it("attaches tcx on ingress and egress in a netns and counts packets both ways", () => {
    const ingress = openFixture(1);
    const egress = openFixture(2);
    const links = [
      ingress.program("count_packets").attachTc({ iface: "bha0", direction: "ingress", netns: nsA, mode: "tcx" }),
      egress.program("count_packets").attachTc({ iface: "bha0", direction: "egress", netns: nsA }),
    ];
    try {
      for (const l of links) expect(l).toMatchObject({ mode: "tcx", attached: true });
      expect(links[0]?.id).toBeGreaterThan(0);
      expect(links[1]?.direction).toBe("egress");
      const ids = linkIds();
      for (const l of links) expect(ids.has(l.id)).toBe(true);
      ping(NS_B, "10.198.0.1");
      expect(countOf(ingress, 1)).toBeGreaterThanOrEqual(2); // echo requests arrive
      expect(countOf(egress, 2)).toBeGreaterThanOrEqual(2); // echo replies leave
    } finally {
      for (const l of links) l.detach();
    }
    const after = linkIds();
    for (const l of links) expect(after.has(l.id)).toBe(false);
    expect(() => links[0]?.detach()).not.toThrow();
  });

  it("attaches a clsact filter that tc lists, and detach removes it", () => {
    const obj = openFixture(3);
    const link = obj.program("count_packets").attachTc({ iface: "bha0", direction: "ingress", netns: nsA, mode: "clsact" });
    try {
      expect(link).toMatchObject({ mode: "clsact", id: 0 });
      expect(tcFilters(NS_A, "bha0", "ingress")).toMatch(/pref 1 .*handle 0xb1c/s);
      ping(NS_B, "10.198.0.1");
      expect(countOf(obj, 3)).toBeGreaterThanOrEqual(2);
      expect(catchError(() => link.pin(path.join(pinDir, `${pinPrefix}clsact`)))).toMatchObject({ code: "EOPNOTSUPP" });
    } finally {
      link.detach();
    }
    expect(tcFilters(NS_A, "bha0", "ingress")).not.toContain("0xb1c");
    link.detach();
  });

  it("replaces in place the clsact filter a killed process left behind; cleanupClsact removes them", () => {
    child(`
      const obj = addon.openObject(${JSON.stringify(objectPath)});
      for (const direction of ["ingress", "egress"])
        obj.program("count_packets").attachTc({ iface: "bha0", direction, netns: ${JSON.stringify(nsA)}, mode: "clsact" });
      process.kill(process.pid, "SIGKILL");`);
    expect(tcFilters(NS_A, "bha0", "ingress")).toContain("0xb1c");
    expect(tcFilters(NS_A, "bha0", "egress")).toContain("0xb1c");
    // The next agent's attach takes the stale filter's place: one filter, running the new program.
    const obj = openFixture(7);
    const link = obj.program("count_packets").attachTc({ iface: "bha0", direction: "ingress", netns: nsA, mode: "clsact" });
    expect(tcFilters(NS_A, "bha0", "ingress").match(/handle 0xb1c/g)).toHaveLength(1);
    ping(NS_B, "10.198.0.1");
    expect(countOf(obj, 7)).toBeGreaterThanOrEqual(2);
    link.detach();
    expect(addon.cleanupClsact("bha0", nsA)).toBe(1); // the egress one
    expect(tcFilters(NS_A, "bha0", "ingress")).not.toContain("0xb1c");
    expect(tcFilters(NS_A, "bha0", "egress")).not.toContain("0xb1c");
    expect(addon.cleanupClsact("bha0", nsA)).toBe(0);
    expect(catchError(() => addon.cleanupClsact("bhnope0", nsA))).toMatchObject({ code: "ENODEV" });
  });

  // A CNI's program that ends the chain (TCX_PASS) and was attached first must not hide
  // packets from bulkhead: bulkhead's go first and pass the packet on (TCX_NEXT), so the
  // CNI's still runs, after them.
  for (const mode of ["tcx", "clsact"] as const) {
    it(`${mode}: goes ahead of a program that ends the chain, which still runs after it`, () => {
      const cni = addon.openObject(cniObjectPath);
      opened.push(cni);
      const cniLink = cni.program("cni_pass").attachTc({ iface: "bha0", direction: "ingress", netns: nsA, mode, position: "last" });
      const obj = openFixture(8);
      const link = obj.program("count_packets").attachTc({ iface: "bha0", direction: "ingress", netns: nsA, mode });
      try {
        ping(NS_B, "10.198.0.1");
        expect(countOf(obj, 8)).toBeGreaterThanOrEqual(2);
        expect(cni.map("seen").lookup(u32(0))?.readBigUInt64LE(0)).toBeGreaterThanOrEqual(2n);
      } finally {
        link.detach();
        cniLink.detach();
      }
      expect(tcFilters(NS_A, "bha0", "ingress")).not.toContain("0xb1c");
    });
  }

  it("a tcx link dies with its process unless pinned; removePinnedLink removes a pinned one", async () => {
    const pin = path.join(pinDir, `${pinPrefix}link`);
    try {
      const out = child(`
        const obj = addon.openObject(${JSON.stringify(objectPath)});
        const prog = obj.program("count_packets");
        const a = prog.attachTc({ iface: "bha0", direction: "ingress", netns: ${JSON.stringify(nsA)}, mode: "tcx" });
        const b = prog.attachTc({ iface: "bha0", direction: "egress", netns: ${JSON.stringify(nsA)}, mode: "tcx" });
        b.pin(${JSON.stringify(pin)});
        console.log(JSON.stringify([a.id, b.id]));
        process.kill(process.pid, "SIGKILL");`);
      const [unpinned, pinned] = JSON.parse(out.trim()) as [number, number];
      const ids = linkIds();
      expect(ids.has(unpinned)).toBe(false);
      expect(ids.has(pinned)).toBe(true);
      expect(addon.removePinnedLink(pin)).toBe(true);
      // The pin's reference is dropped when bpffs frees the inode, after an RCU grace period.
      await waitFor(() => !linkIds().has(pinned), 5000, "the pinned link to be freed");
      expect(fs.existsSync(pin)).toBe(false);
      expect(addon.removePinnedLink(pin)).toBe(false);
    } finally {
      fs.rmSync(pin, { force: true });
    }
  });

  it("detach() of a pinned tcx link detaches it and removes its pin", async () => {
    const pin = path.join(pinDir, `${pinPrefix}detach`);
    try {
      const link = openFixture().program("count_packets").attachTc({ iface: "bha0", direction: "ingress", netns: nsA, mode: "tcx" });
      link.pin(pin);
      expect(fs.existsSync(pin)).toBe(true);
      link.detach();
      expect(fs.existsSync(pin)).toBe(false);
      await waitFor(() => !linkIds().has(link.id), 5000, "the pinned link to be freed");
    } finally {
      fs.rmSync(pin, { force: true });
    }
  });

  it("throws op attach with ENODEV for a missing interface, naming it and the netns", () => {
    const prog = openFixture().program("count_packets");
    const err = catchError(() => prog.attachTc({ iface: "bhnope0", direction: "ingress", netns: nsA }));
    expect(err).toMatchObject({ op: "attach", object: `bhnope0 (netns ${nsA})`, code: "ENODEV" });
    expect(catchError(() => prog.attachTc({ iface: 999999, direction: "egress", netns: nsA })))
      .toMatchObject({ op: "attach", code: "ENODEV" });
  });

  it("throws ENOENT for a netns path that does not exist", () => {
    const prog = openFixture().program("count_packets");
    const err = catchError(() => prog.attachTc({ iface: "bha0", direction: "ingress", netns: "/run/netns/bhaddon-none" }));
    expect(err).toMatchObject({ op: "attach", code: "ENOENT" });
    expect(err.message).toContain("/run/netns/bhaddon-none");
  });

  it("detach() works after the interface was deleted, for tcx and clsact", () => {
    ip("-n", NS_A, "link", "add", "bhd0", "type", "veth", "peer", "name", "bhd1");
    const obj = openFixture();
    const prog = obj.program("count_packets");
    const before = addon.kernelObjectCounts().links;
    const tcx = prog.attachTc({ iface: "bhd0", direction: "ingress", netns: nsA, mode: "tcx" });
    const clsact = prog.attachTc({ iface: "bhd0", direction: "egress", netns: nsA, mode: "clsact" });
    ip("-n", NS_A, "link", "del", "bhd0");
    expect(linkIds().has(tcx.id)).toBe(true); // the kernel detached it, our fd keeps it
    expect(() => tcx.detach()).not.toThrow();
    expect(() => clsact.detach()).not.toThrow();
    expect(addon.kernelObjectCounts().links).toBe(before);
    expect(linkIds().has(tcx.id)).toBe(false);
  });
});

describe("adopting pinned maps and links", () => {
  // Three variants of one map: the same, a value struct with its two members swapped
  // (same size: only the BTF layout differs), and another max_entries.
  const source = (value: string, maxEntries: number) => `#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
struct val { ${value} };
struct { __uint(type, BPF_MAP_TYPE_HASH); __uint(max_entries, ${maxEntries}); __type(key, __u32); __type(value, struct val); } m SEC(".maps");
SEC("tc") int prog(struct __sk_buff *skb) { __u32 k = 0; struct val *v = bpf_map_lookup_elem(&m, &k); return v ? -1 : -1; }
char LICENSE[] SEC("license") = "GPL";`;
  const dir = path.join(pinDir, `${pinPrefix}adopt`);
  const objects: Record<"same" | "swapped" | "bigger", string> = { same: "", swapped: "", bigger: "" };

  beforeAll(() => {
    const variants = { same: ["__u32 a; __u32 b;", 64], swapped: ["__u32 b; __u32 a;", 64], bigger: ["__u32 a; __u32 b;", 128] } as const;
    for (const [name, [value, max]] of Object.entries(variants) as [keyof typeof objects, readonly [string, number]][]) {
      const src = path.join(workDir, `adopt_${name}.bpf.c`);
      fs.writeFileSync(src, source(value, max));
      objects[name] = path.join(workDir, `adopt_${name}.bpf.o`);
      run("clang", ["-O2", "-g", "-target", "bpf", "-mcpu=v3", "-I/usr/include/x86_64-linux-gnu", "-c", src, "-o", objects[name]]);
    }
    fs.mkdirSync(dir, { recursive: true });
  });
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  it("reuses a pinned map only when definition and BTF layout are the same, and says what differs", () => {
    const first = addon.openObject(objects.same, { reuseMapsFrom: dir });
    opened.push(first);
    expect(first.adoption).toEqual({ reused: false, maps: { m: "absent" } });
    first.map("m").pin(path.join(dir, "m"));
    first.map("m").update(u32(1), Buffer.from([1, 0, 0, 0, 2, 0, 0, 0]));

    const again = addon.openObject(objects.same, { reuseMapsFrom: dir });
    opened.push(again);
    expect(again.adoption).toEqual({ reused: true, maps: { m: "same" } });
    expect(again.map("m").lookup(u32(1))).toEqual(Buffer.from([1, 0, 0, 0, 2, 0, 0, 0]));

    const swapped = addon.openObject(objects.swapped, { reuseMapsFrom: dir });
    opened.push(swapped);
    expect(swapped.adoption.reused).toBe(false);
    expect(swapped.adoption.maps.m).toBe("value layout: value: member 0 is a pinned vs b");
    expect(swapped.map("m").lookup(u32(1))).toBeNull();

    const bigger = addon.openObject(objects.bigger, { reuseMapsFrom: dir });
    opened.push(bigger);
    expect(bigger.adoption).toEqual({ reused: false, maps: { m: "max_entries 64 pinned vs 128" } });
  });

  it("swaps a program into a pinned tcx link (same link, new program) and sees a defunct one", async () => {
    const a = addon.openObject(objects.same);
    const b = addon.openObject(objects.same);
    opened.push(a, b);
    const pin = path.join(dir, "link");
    const link = a.program("prog").attachTc({ iface: "bha0", direction: "ingress", netns: nsA, mode: "tcx" });
    link.pin(pin);
    const oldProgram = a.program("prog").id;
    a.release(); // as process exit: the pinned link stays
    expect(addon.pinnedLink(pin)).toMatchObject({ id: link.id, programId: oldProgram, direction: "ingress" });
    const adopted = b.program("prog").adoptLink(pin);
    expect(adopted.id).toBe(link.id);
    expect(addon.pinnedLink(pin)?.programId).toBe(b.program("prog").id);
    expect(catchError(() => b.program("prog").adoptLink(path.join(dir, "none")))).toMatchObject({ code: "ENOENT" });
    b.release();
    expect(addon.removePinnedLink(pin)).toBe(true);
    expect(addon.pinnedLink(pin)).toBeNull();
    // The pin's reference is dropped when bpffs frees the inode, after an RCU grace period.
    await waitFor(() => !linkIds().has(link.id), 5000, "the pinned link to be freed");
  });
});

describe("BpfObject.close", () => {
  it("detaches every link, invalidates its maps and programs, and is idempotent", async () => {
    const obj = openFixture();
    const prog = obj.program("count_packets");
    const progId = prog.id;
    const counts = obj.map("counts");
    const before = addon.kernelObjectCounts().links;
    const links = (["ingress", "egress"] as const).map((direction) =>
      prog.attachTc({ iface: "bha0", direction, netns: nsA, mode: "tcx" }));
    expect(addon.kernelObjectCounts().links).toBe(before + 2);
    obj.close();
    expect(addon.kernelObjectCounts().links).toBe(before);
    const ids = linkIds();
    for (const l of links) {
      expect(ids.has(l.id)).toBe(false);
      expect(l.attached).toBe(false);
      expect(() => l.detach()).not.toThrow();
      const err = catchError(() => l.pin(path.join(pinDir, `${pinPrefix}closed`)));
      expect(err).toMatchObject({ code: "EBADF" });
      expect(err.message).toMatch(/BpfObject was closed/);
    }
    const err = catchError(() => counts.lookup(u32(0)));
    expect(err).toMatchObject({ op: "map_lookup", object: "counts", code: "EBADF" });
    expect(err.message).toContain("was closed");
    expect(counts.fd).toBe(-1);
    expect(catchError(() => prog.attachTc({ iface: "bha0", direction: "ingress", netns: nsA }))).toMatchObject({ code: "EBADF" });
    expect(catchError(() => obj.map("counts"))).toMatchObject({ code: "EBADF" });
    expect(() => obj.close()).not.toThrow();
    await waitFor(() => !progIds().has(progId), 5000, "the program to be freed");
  });
});

describe("ringBuffer", () => {
  it("delivers N events exactly once, in order, in batches of at most maxPerBatch", async () => {
    const obj = openFixture();
    const batches: number[] = [];
    const seqs: number[] = [];
    const ring = addon.ringBuffer(obj.map("events"), (records, count) => {
      batches.push(count);
      for (const r of ringRecords(records, count)) {
        expect(r.length).toBe(8);
        seqs.push(r.readUInt32LE(0));
      }
    }, { maxPerBatch: 100 });
    try {
      const n = 5000;
      obj.program("count_packets").testRun(frame(), n); // all events are queued before we read
      await waitFor(() => seqs.length >= n, 5000, `${n} events`);
      await new Promise((r) => setTimeout(r, 50));
      expect(seqs.length).toBe(n);
      expect(seqs).toEqual(Array.from({ length: n }, (_, i) => i + 1));
      expect(Math.max(...batches)).toBeLessThanOrEqual(100);
      expect(batches.length).toBeGreaterThanOrEqual(n / 100);
    } finally {
      ring.close();
    }
    const total = seqs.length;
    obj.program("count_packets").testRun(frame(), 10);
    await new Promise((r) => setTimeout(r, 100));
    expect(seqs.length).toBe(total);
    expect(() => ring.close()).not.toThrow();
  });

  it("rejects a map that is not a ring buffer", () => {
    const obj = openFixture();
    expect(catchError(() => addon.ringBuffer(obj.map("counts"), () => undefined))).toMatchObject({ op: "ring_buffer", code: "EINVAL" });
  });

  it("does not keep the process alive after close()", () => {
    const res = spawnSync(process.execPath, ["-e", `
      const addon = require(${JSON.stringify(addonPath)});
      const obj = addon.openObject(${JSON.stringify(objectPath)});
      const ring = addon.ringBuffer(obj.map("events"), () => {});
      const w = addon.watchLinks(() => {});
      setTimeout(() => { ring.close(); w.close(); console.log("closed"); }, 50);`], { encoding: "utf8", timeout: 10_000 });
    expect(res.error).toBeUndefined();
    expect(res.status).toBe(0);
    expect(res.stdout).toContain("closed");
  });
});

describe("links (rtnetlink)", () => {
  it("listLinks finds the veth whose peer lives in another netns", () => {
    const a = addon.listLinks(nsA);
    const b = addon.listLinks(nsB);
    const veth = a.find((l) => l.name === "bha0");
    const peer = b.find((l) => l.name === "bhb0");
    expect(veth).toMatchObject({ kind: "veth", up: true });
    expect(veth?.linkNetnsId).toBeGreaterThanOrEqual(0);
    expect(veth?.peerIfindex).toBe(peer?.ifindex);
    expect(veth?.mac).toMatch(/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/);
    expect(a.find((l) => l.name === "lo")).toMatchObject({ ifindex: 1, kind: "", linkNetnsId: -1 });
    expect(catchError(() => addon.listLinks("/run/netns/bhaddon-none"))).toMatchObject({ code: "ENOENT" });
  });

  it("watchLinks reports a new and a deleted veth within 1 s", async () => {
    const events: LinkEvent[] = [];
    const watcher = addon.watchLinks((batch) => events.push(...batch), nsA);
    const has = (type: string, name: string) => (): boolean => events.some((e) => e.type === type && e.name === name);
    try {
      ip("-n", NS_A, "link", "add", "bhw0", "type", "veth", "peer", "name", "bhw1");
      await waitFor(has("new", "bhw0"), 1000, "new bhw0");
      await waitFor(has("new", "bhw1"), 1000, "new bhw1");
      ip("-n", NS_A, "link", "del", "bhw0");
      await waitFor(has("del", "bhw0"), 1000, "del bhw0");
      await waitFor(has("del", "bhw1"), 1000, "del bhw1");
      expect(events.find((e) => e.type === "new" && e.name === "bhw0")).toMatchObject({ kind: "veth" });
    } finally {
      watcher.close();
      spawnSync("ip", ["-n", NS_A, "link", "del", "bhw0"], { stdio: "ignore" });
    }
  });
});

describe("rawSocket", () => {
  // An SCTP common header (ports, verification tag, checksum) and a few bytes.
  const sctp = Buffer.from("0b0b0c0c000000010000000001020304", "hex");

  it.each([[4, "10.198.0.2", "10.198.0.1"], [6, "fd00:198::2", "fd00:198::1"]] as const)(
    "carries an SCTP-protocol packet between netns (IPv%i)", async (family, dst, src) => {
      const received: RawPacket[] = [];
      const listener = addon.rawSocket(family, 132, (packets) => received.push(...packets), nsB);
      const sender = addon.rawSocket(family, 132, undefined, nsA);
      try {
        const got = (): boolean => received.some((p) => p.payload.equals(sctp));
        // The first IPv6 packet may wait on neighbour discovery: resend until seen.
        const end = Date.now() + 3000;
        while (!got() && Date.now() < end) {
          sender.send(dst, sctp);
          await new Promise((r) => setTimeout(r, 100));
        }
        expect(got()).toBe(true);
        expect(received.find((p) => p.payload.equals(sctp))?.src).toBe(src);
      } finally {
        listener.close();
        sender.close();
      }
      expect(catchError(() => sender.send(dst, sctp))).toMatchObject({ code: "EBADF" });
    });
});

describe("leaks and kernel counts", () => {
  it("keeps the fd count stable over many open/attach/ring/close cycles", async () => {
    const cycle = (): void => {
      const obj = addon.openObject(objectPath);
      obj.map("counts").update(u32(1), u64(1));
      obj.map("counts").drain();
      obj.synchronize("outer");
      obj.program("count_packets").attachTc({ iface: "bha0", direction: "ingress", netns: nsA });
      addon.ringBuffer(obj.map("events"), () => undefined).close();
      addon.watchLinks(() => undefined, nsA).close();
      addon.rawSocket(4, 132, () => undefined, nsB).close();
      addon.listLinks(nsA);
      obj.close();
    };
    const settle = (): Promise<void> => new Promise((r) => setTimeout(r, 30)); // libuv closes poll handles on a later turn
    cycle();
    await settle();
    const before = fdTargets();
    for (let i = 0; i < 30; i++) cycle();
    await settle();
    expect(fdTargets()).toEqual(before);
  });

  it("possibleCpus matches /sys and kernelObjectCounts sees our program", () => {
    const possible = fs.readFileSync("/sys/devices/system/cpu/possible", "utf8").trim();
    const last = Number(possible.split(/[-,]/).pop());
    expect(addon.possibleCpus()).toBe(last + 1);
    const counts = addon.kernelObjectCounts();
    expect(counts.programs).toBeGreaterThan(0);
    const obj = openFixture();
    expect(progIds().has(obj.program("count_packets").id)).toBe(true);
    expect(addon.kernelObjectIds().maps.length).toBeGreaterThan(0);
  });
});
