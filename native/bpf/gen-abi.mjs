#!/usr/bin/env node
// Generates native/gen/abi.ts, the kernel ABI as TypeScript constants, from BTF: the
// struct sizes and member offsets and the enum values of every type that abi.bpf.c's
// `struct bh_abi` names. The C headers stay the only place a layout is written.
//
//   node gen-abi.mjs --abi build/abi.bpf.o [--check build/endpoint.bpf.o ...] --out ../gen/abi.ts
//
// Fails (exit 1, the reason on stderr, nothing written) when the ABI object lacks BTF or
// a bh_abi member is not a named struct or enum, when a struct has a bitfield, and when a
// --check object (the objects that are loaded) has a struct of the same name with another
// layout. tsc then fails on any TypeScript use of a name that a header change removed or
// renamed.
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";

const bpftool = process.env.BPFTOOL || "bpftool";

class AbiError extends Error {}

/** The BTF of an ELF object as bpftool reports it: types by id. */
function readBtf(object) {
  let json;
  try {
    json = execFileSync(bpftool, ["-j", "btf", "dump", "file", object, "format", "raw"],
      { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], maxBuffer: 64 << 20 });
  } catch (err) {
    throw new AbiError(`${object}: ${bpftool} btf dump failed (is it built with clang -g?): ${String(err.stderr || err.message).trim()}`);
  }
  const byId = new Map();
  for (const t of JSON.parse(json).types) byId.set(t.id, t);
  return byId;
}

/** Follows typedefs and qualifiers to the type itself. */
function resolve(btf, id) {
  let t = btf.get(id);
  while (t && ["TYPEDEF", "CONST", "VOLATILE", "RESTRICT", "TYPE_TAG"].includes(t.kind)) t = btf.get(t.type_id);
  return t;
}

function structLayout(object, t) {
  const members = [];
  for (const m of t.members) {
    if (m.bitfield_size || m.bits_offset % 8 !== 0) {
      throw new AbiError(`${object}: struct ${t.name} member ${m.name} is a bitfield: TypeScript reads whole bytes`);
    }
    if (!m.name) throw new AbiError(`${object}: struct ${t.name} has an anonymous member: name it`);
    if (m.name === "size") throw new AbiError(`${object}: struct ${t.name} has a member named size, which the generated layout uses for the struct's size`);
    members.push([m.name, m.bits_offset / 8]);
  }
  return { name: t.name, size: t.size, members };
}

/** The structs and enums that `struct bh_abi` (the variable bh_abi) names, in order. */
function readAbi(object) {
  const btf = readBtf(object);
  const variable = [...btf.values()].find((t) => t.kind === "VAR" && t.name === "bh_abi");
  const holder = variable && resolve(btf, variable.type_id);
  if (holder?.kind !== "STRUCT") throw new AbiError(`${object}: no variable bh_abi of a struct type in its BTF`);
  const structs = [];
  const enums = [];
  for (const m of holder.members) {
    const t = resolve(btf, m.type_id);
    if (t?.kind === "STRUCT" && t.name && t.name !== "(anon)") structs.push(structLayout(object, t));
    else if ((t?.kind === "ENUM" || t?.kind === "ENUM64") && t.name && t.name !== "(anon)") {
      enums.push({ name: t.name, values: t.values.map((v) => [v.name, Number(v.val)]) });
    } else {
      throw new AbiError(`${object}: bh_abi member ${m.name} is not a named struct or enum (${t?.kind ?? "unknown type"})`);
    }
  }
  return { structs, enums };
}

/** Checks a loaded object against the ABI: every struct both name has one layout. */
function checkObject(object, abi) {
  const btf = readBtf(object);
  const known = new Map(abi.structs.map((s) => [s.name, s]));
  for (const t of btf.values()) {
    if (t.kind !== "STRUCT" || !known.has(t.name)) continue;
    const want = known.get(t.name);
    const have = structLayout(object, t);
    const differs = have.size !== want.size || have.members.length !== want.members.length
      || have.members.some(([n, o], i) => want.members[i]?.[0] !== n || want.members[i]?.[1] !== o);
    if (differs) {
      throw new AbiError(`${object}: struct ${t.name} is ${have.size} bytes {${have.members.map(([n, o]) => `${n}@${o}`).join(" ")}}, `
        + `the ABI object's is ${want.size} bytes {${want.members.map(([n, o]) => `${n}@${o}`).join(" ")}}: both must build from the same headers and flags`);
    }
  }
}

/** The TypeScript module. */
function render(abi, sources) {
  const out = [
    "// generated from BTF — do not edit. native/bpf/gen-abi.mjs wrote it from the types that",
    "// native/bpf/abi.bpf.c names (declared in native/bpf/endpoint.h), compiled, checked against",
    `// ${sources.join(", ")}. Rebuild with \`make -C native/bpf\`.`,
    "",
  ];
  for (const s of abi.structs) {
    out.push(`/** struct ${s.name}: size and member offsets in bytes. */`);
    out.push(`export const ${s.name} = {`);
    out.push(`  size: ${s.size},`);
    for (const [name, offset] of s.members) out.push(`  ${name}: ${offset},`);
    out.push("} as const;", "");
  }
  for (const e of abi.enums) {
    out.push(`// enum ${e.name}`);
    for (const [name, value] of e.values) out.push(`export const ${name} = ${value};`);
    out.push(`/** enum ${e.name}: every enumerator by name. */`);
    out.push(`export const ${e.name} = { ${e.values.map(([name]) => name).join(", ")} } as const;`, "");
  }
  return out.join("\n");
}

function main(argv) {
  let abiObject;
  let outFile;
  const checks = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const value = argv[++i];
    if (value === undefined) throw new AbiError(`${arg} needs a value`);
    if (arg === "--abi") abiObject = value;
    else if (arg === "--check") checks.push(value);
    else if (arg === "--out") outFile = value;
    else throw new AbiError(`unknown option ${arg} (expected --abi, --check, --out)`);
  }
  if (!abiObject || !outFile) throw new AbiError("usage: gen-abi.mjs --abi ABI.bpf.o [--check X.bpf.o ...] --out abi.ts");
  const abi = readAbi(abiObject);
  for (const object of checks) checkObject(object, abi);
  const text = render(abi, [abiObject, ...checks].map((p) => path.basename(p)));
  fs.mkdirSync(path.dirname(outFile), { recursive: true });
  fs.writeFileSync(`${outFile}.tmp`, text);
  fs.renameSync(`${outFile}.tmp`, outFile);
}

try {
  main(process.argv.slice(2));
} catch (err) {
  if (!(err instanceof AbiError)) throw err;
  console.error(`gen-abi: ${err.message}`);
  process.exit(1);
}
