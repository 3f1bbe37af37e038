// The kernel ABI is written once, in native/bpf/endpoint.h; native/gen/abi.ts is generated
// from BTF by native/bpf/gen-abi.mjs and TypeScript uses nothing else. These tests prove
// the generator reads BTF right (a crafted object; the built headers against a C
// compiler), refuses what it cannot express or what disagrees, and that the module in the
// tree is the one the built objects give.
import { execFileSync, spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { afterAll, describe, expect, it } from "vitest";
import * as abi from "../native/gen/abi.js";
import { COUNTER, UNJUDGED_CAUSES, UNJUDGED_VERDICTS, unjudgedCounter } from "../agent/records.js";
import { bpfObjectDir } from "../native/index.js";
import { repoRoot } from "../config/install.js";

const GENERATOR = path.join(repoRoot, "native", "bpf", "gen-abi.mjs");
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "bh-layout-"));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

/** Compiles C source to a BPF object with BTF, as native/bpf/Makefile does. */
function bpfObject(name: string, source: string): string {
  const src = path.join(dir, `${name}.c`);
  const obj = path.join(dir, `${name}.bpf.o`);
  fs.writeFileSync(src, source);
  execFileSync("clang", ["-O2", "-g", "-target", "bpf", "-I", `/usr/include/${os.machine()}-linux-gnu`, "-c", src, "-o", obj]);
  return obj;
}

function generate(args: string[]): { status: number | null; stderr: string } {
  const r = spawnSync(process.execPath, [GENERATOR, ...args], { encoding: "utf8" });
  return { status: r.status, stderr: r.stderr };
}

const CRAFTED = `#include <linux/types.h>
struct t_inner { __u8 a; __u32 b; };
struct t_rec { __u8 tag; __u64 n; struct t_inner in; __u16 arr[3]; };
struct t_packed { __u32 a; __u8 b; __u16 c; } __attribute__((packed));
enum t_kind { T_A = 0, T_B = 5, T_C = 300 };
typedef struct t_rec t_rec_t;
struct bh_abi { t_rec_t rec; const struct t_packed packed; enum t_kind kind; };
struct bh_abi bh_abi __attribute__((used));
`;

describe("gen-abi.mjs on a crafted object", () => {
  it("writes struct sizes and byte offsets (padding, packing, nesting, typedefs) and enum values", async () => {
    const out = path.join(dir, "crafted-abi.ts");
    expect(generate(["--abi", bpfObject("crafted", CRAFTED), "--out", out])).toEqual({ status: 0, stderr: "" });
    const text = fs.readFileSync(out, "utf8");
    expect(text).toMatch(/^\/\/ generated from BTF — do not edit/);
    const m = (await import(pathToFileURL(out).href)) as Record<string, unknown>;
    expect(m.t_rec).toEqual({ size: 32, tag: 0, n: 8, in: 16, arr: 24 });
    expect(m.t_packed).toEqual({ size: 7, a: 0, b: 4, c: 5 });
    expect(m.t_kind).toEqual({ T_A: 0, T_B: 5, T_C: 300 });
    expect([m.T_A, m.T_B, m.T_C]).toEqual([0, 5, 300]);
    // Only what bh_abi names: the nested struct is an offset, not an export.
    expect(m.t_inner).toBeUndefined();
  });

  it("fails, writing nothing, when a checked object lays a struct out otherwise", () => {
    const good = bpfObject("crafted", CRAFTED);
    const other = bpfObject("other", `#include <linux/types.h>
struct t_packed { __u32 a; __u8 b; __u16 c; };
struct t_packed used __attribute__((used));
`);
    const out = path.join(dir, "refused.ts");
    const r = generate(["--abi", good, "--check", other, "--out", out]);
    expect(r.status).toBe(1);
    expect(r.stderr).toContain("struct t_packed is 8 bytes {a@0 b@4 c@6}, the ABI object's is 7 bytes {a@0 b@4 c@5}");
    expect(fs.existsSync(out)).toBe(false);
  });

  it("refuses an object without bh_abi, a member that is not a struct or enum, and a bitfield", () => {
    const out = path.join(dir, "refused.ts");
    const none = bpfObject("none", "int x __attribute__((used));\n");
    expect(generate(["--abi", none, "--out", out]).stderr).toContain("no variable bh_abi");
    const scalar = bpfObject("scalar", "struct bh_abi { int n; } bh_abi __attribute__((used));\n");
    expect(generate(["--abi", scalar, "--out", out]).stderr).toContain("bh_abi member n is not a named struct or enum (INT)");
    const bits = bpfObject("bits", "struct t_bits { unsigned a : 3; unsigned b : 5; };\n"
      + "struct bh_abi { struct t_bits bits; } bh_abi __attribute__((used));\n");
    expect(generate(["--abi", bits, "--out", out]).stderr).toContain("struct t_bits member a is a bitfield");
    expect(fs.existsSync(out)).toBe(false);
  });
});

describe("native/gen/abi.ts", () => {
  it("is what the generator makes of the built objects (the build regenerated it)", () => {
    const out = path.join(dir, "abi.ts");
    const objects = ["endpoint", "reference"].map((n) => path.join(bpfObjectDir, `${n}.bpf.o`));
    const r = generate(["--abi", path.join(bpfObjectDir, "abi.bpf.o"), ...objects.flatMap((o) => ["--check", o]), "--out", out]);
    expect(r).toEqual({ status: 0, stderr: "" });
    expect(fs.readFileSync(path.join(repoRoot, "native", "gen", "abi.ts"), "utf8")).toBe(fs.readFileSync(out, "utf8"));
  });

  it("agrees with a C compiler's view of endpoint.h: every size, offset and enum value", () => {
    const structs: [string, Record<string, number>][] = [];
    const enums: [string, Record<string, number>][] = [];
    for (const [name, value] of Object.entries(abi)) {
      if (typeof value !== "object") continue;
      if ("size" in value) structs.push([name, value]);
      else enums.push([name, value]);
    }
    expect(structs.map(([n]) => n)).toEqual(expect.arrayContaining(["bh_flow_key", "bh_flow_value", "bh_event", "bh_policy_key"]));
    expect(enums.map(([n]) => n)).toEqual(expect.arrayContaining(["bh_counter", "bh_unjudged", "bh_identity_reserved"]));
    const lines: string[] = [];
    for (const [name, layout] of structs) {
      for (const member of Object.keys(layout)) {
        const expr = member === "size" ? `sizeof(struct ${name})` : `offsetof(struct ${name}, ${member})`;
        lines.push(`  printf("\\"${name}.${member}\\":%ld,", (long)(${expr}));`);
      }
    }
    for (const [name, values] of enums) {
      for (const member of Object.keys(values)) lines.push(`  printf("\\"${name}.${member}\\":%ld,", (long)(${member}));`);
    }
    const src = path.join(dir, "probe.c");
    fs.writeFileSync(src, `#include <stdio.h>\n#include <stddef.h>\n#include "endpoint.h"\nint main(void) {\n  printf("{");\n${lines.join("\n")}\n  printf("\\"end\\":0}");\n  return 0;\n}\n`);
    const bin = path.join(dir, "probe");
    execFileSync("cc", ["-I", path.join(repoRoot, "native", "bpf"), "-o", bin, src]);
    const c = JSON.parse(execFileSync(bin, { encoding: "utf8" })) as Record<string, number>;
    const generated: Record<string, number> = { end: 0 };
    for (const [name, o] of [...structs, ...enums]) for (const [k, v] of Object.entries(o)) generated[`${name}.${k}`] = v;
    expect(generated).toEqual(c);
  });
});

describe("the agent's names for counters (agent/records.ts)", () => {
  it("name every bh_counter index but the unjudged block, and the unjudged block exactly", () => {
    const named = new Set<number>(Object.values(COUNTER));
    const unnamed = Object.entries(abi.bh_counter).filter(([, v]) => !named.has(v)).map(([k]) => k);
    expect(unnamed).toEqual(["BH_C_UNJUDGED", "BH_C_MAX"]);
    const unjudged = UNJUDGED_VERDICTS.flatMap((v) => UNJUDGED_CAUSES.map((c) => unjudgedCounter(v, c))).sort((a, b) => a - b);
    const block = Array.from({ length: abi.BH_C_MAX - abi.BH_C_UNJUDGED }, (_, i) => abi.BH_C_UNJUDGED + i);
    expect(unjudged).toEqual(block);
  });
});
