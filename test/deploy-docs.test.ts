// deploy/README.md's install, first-look and upgrade instructions against the repository
// (issue 18 item 2): the image script with its registry and tag (run with --dry-run: no
// image engine runs here), the kustomize `images:` override exactly as written in the
// README rendered by the machine's kubectl, and every name and flag the commands use
// (Service, ports, Secret keys, rollout targets, the mode annotation, the UI's token box,
// each `bulkhead` flag in that command's --help).
import { execFile, execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { parseAllDocuments } from "yaml";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cliMain, repoRoot } from "../config/install.js";
import { VERSION } from "../config/version.js";
import { MODE_ANNOTATION } from "../controlplane/policy/model.js";

const run = promisify(execFile);
const readme = fs.readFileSync(path.join(repoRoot, "deploy", "README.md"), "utf8");
const script = path.join(repoRoot, "deploy", "images", "build-images.sh");

type Obj = { kind: string; metadata: { name: string; namespace?: string }; spec?: Record<string, unknown> } & Record<string, unknown>;

/** The README section under `## title`, up to the next `## `. */
function section(title: string): string {
  const start = readme.indexOf(`\n## ${title}\n`);
  if (start < 0) throw new Error(`deploy/README.md has no section "${title}"`);
  const end = readme.indexOf("\n## ", start + 1);
  return readme.slice(start, end < 0 ? undefined : end);
}

/** The fenced blocks of `lang` in `text`. */
function blocks(text: string, lang: string): string[] {
  return [...text.matchAll(new RegExp("```" + lang + "\\n([\\s\\S]*?)```", "g"))].map((m) => m[1]!);
}

function render(dir: string): Obj[] {
  const text = execFileSync("kubectl", ["kustomize", dir], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
  return parseAllDocuments(text).map((d) => d.toJSON() as Obj);
}

const images = (objs: Obj[]) => objs.flatMap((o) => {
  const pod = (o.spec?.template as { spec?: { containers?: { image: string }[] } } | undefined)?.spec;
  return (pod?.containers ?? []).map((c) => `${o.kind}/${o.metadata.name}: ${c.image}`);
}).sort();

let tmp: string;
let production: Obj[];
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "bulkhead-deploy-docs-"));
  production = render(path.join(repoRoot, "deploy", "kustomize", "overlays", "production"));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe("Build the images into your registry", () => {
  it("the script builds both targets as REGISTRY/bulkhead/*:TAG, pushes them, and prints the README's images: lines", async () => {
    const { stdout } = await run(script, ["--registry", "registry.example.com/platform", "--tag", "0.1.0", "--push", "--dry-run"]);
    const [commands, override] = stdout.split("# kustomization.yaml of your overlay (deploy/README.md):\n");
    expect(commands!.trim().split("\n")).toEqual([
      "docker build -f deploy/images/Dockerfile --target agent -t registry.example.com/platform/bulkhead/agent:0.1.0 .",
      "docker build -f deploy/images/Dockerfile --target controlplane -t registry.example.com/platform/bulkhead/controlplane:0.1.0 .",
      "docker push registry.example.com/platform/bulkhead/agent:0.1.0",
      "docker push registry.example.com/platform/bulkhead/controlplane:0.1.0",
    ]);
    const documented = blocks(section("Build the images into your registry"), "yaml")[0]!;
    expect(documented).toContain(override!.trim());
    // The Dockerfile has those targets.
    const dockerfile = fs.readFileSync(path.join(repoRoot, "deploy", "images", "Dockerfile"), "utf8");
    for (const t of ["agent", "controlplane"]) expect(dockerfile).toMatch(new RegExp(`^FROM \\S+ AS ${t}$`, "m"));
  });

  it("the tag defaults to package.json's version; --engine podman", async () => {
    const { stdout } = await run(script, ["--registry", "localhost:5000", "--engine", "podman", "--dry-run"]);
    expect(stdout).toContain(`podman build -f deploy/images/Dockerfile --target agent -t localhost:5000/bulkhead/agent:${VERSION} .`);
  });

  it("refuses bad input naming it (exit 2)", async () => {
    const refused = async (...args: string[]) => run(script, args).then(
      () => ({ code: 0, stderr: "" }), (e: { code: number; stderr: string }) => ({ code: e.code, stderr: e.stderr.trim() }));
    expect(await refused()).toEqual({ code: 2, stderr: expect.stringMatching(/^build-images.sh: --registry is required/) });
    expect(await refused("--registry", "https://registry.example.com")).toEqual({ code: 2,
      stderr: "build-images.sh: --registry \"https://registry.example.com\": no scheme, e.g. registry.example.com/platform" });
    expect(await refused("--registry", "registry.example.com/Platform")).toEqual({ code: 2, stderr: expect.stringContaining("expected host[:port][/path] (path in lower case)") });
    expect(await refused("--registry", "r.example.com", "--tag", "1.0:latest")).toEqual({ code: 2, stderr: expect.stringContaining("--tag \"1.0:latest\": expected up to 128 letters") });
    expect(await refused("--registry", "r.example.com", "--engine", "buildah")).toEqual({ code: 2, stderr: "build-images.sh: --engine \"buildah\": expected docker or podman" });
    expect(await refused("--registry", "r.example.com", "--tags", "x")).toEqual({ code: 2, stderr: expect.stringMatching(/^build-images.sh: unknown argument "--tags"/) });
  });

  it("the README's overlay of your own renders with both images from your registry", () => {
    const yaml = blocks(section("Build the images into your registry"), "yaml")[0]!;
    expect(yaml).toContain("../bulkhead/deploy/kustomize/overlays/production");
    // The README's layout: your overlay beside a checkout named bulkhead.
    fs.symlinkSync(repoRoot, path.join(tmp, "bulkhead"));
    fs.mkdirSync(path.join(tmp, "my-cluster"));
    fs.writeFileSync(path.join(tmp, "my-cluster", "kustomization.yaml"), yaml);
    const mine = render(path.join(tmp, "my-cluster"));
    expect(images(mine)).toEqual([
      "DaemonSet/bulkhead-agent: registry.example.com/platform/bulkhead/agent:0.1.0",
      "Deployment/bulkhead-controlplane: registry.example.com/platform/bulkhead/controlplane:0.1.0",
    ]);
    // Everything else is the production overlay's.
    expect(mine.length).toBe(production.length);
  });
});

describe("First look and Upgrade name what the manifests hold", () => {
  const find = (kind: string, name: string) => {
    const o = production.find((x) => x.kind === kind && x.metadata.name === name);
    if (!o) throw new Error(`the production overlay renders no ${kind} ${name}`);
    return o;
  };

  it("port-forward, Secret, rollout targets and strategies", () => {
    const text = section("First look") + section("Upgrade");
    expect(text).toContain("kubectl -n bulkhead port-forward svc/bulkhead-controlplane 4387:4387 4388:4388");
    const svc = find("Service", "bulkhead-controlplane");
    expect(svc.metadata.namespace).toBe("bulkhead");
    expect((svc.spec!.ports as { port: number }[]).map((p) => p.port)).toEqual([4387, 4388]);
    // The CA comes from the Secret the control plane mounts, under the key its args read.
    expect(text).toContain("kubectl -n bulkhead get secret bulkhead-controlplane-tls -o jsonpath='{.data.ca\\.crt}' | base64 -d > bulkhead-ca.crt");
    const cp = find("Deployment", "bulkhead-controlplane");
    const podSpec = (cp.spec!.template as { spec: { volumes: { name: string; secret?: { secretName: string } }[]; containers: { args: string[] }[] } }).spec;
    const tls = podSpec.volumes.find((v) => v.secret?.secretName === "bulkhead-controlplane-tls");
    expect(tls).toBeDefined();
    expect(podSpec.containers[0]!.args).toContain("--tls-client-ca=/etc/bulkhead/tls/ca.crt");
    expect(readme).toContain("--from-file=ca.crt=certs/ca.crt");
    for (const target of ["deploy/bulkhead-controlplane", "ds/bulkhead-agent"]) expect(text).toContain(`kubectl -n bulkhead rollout status ${target}`);
    expect((cp.spec!.strategy as { type: string }).type).toBe("Recreate");
    expect(find("DaemonSet", "bulkhead-agent").spec!.updateStrategy).toEqual({ type: "RollingUpdate", rollingUpdate: { maxUnavailable: 1 } });
    expect(production.find((o) => o.kind === "ConfigMap" && o.metadata.name.startsWith("bulkhead-config"))?.data).toMatchObject({ "default-mode": "observe" });
  });

  it("the mode annotation, and the UI's token box as the page names it", () => {
    const text = section("First look");
    expect(text).toContain(`kubectl annotate ns shop ${MODE_ANNOTATION}=enforce --overwrite`);
    const page = fs.readFileSync(path.join(repoRoot, "ui", "index.html"), "utf8");
    expect(text).toContain("**Bearer token** box");
    expect(page).toMatch(/<label>Bearer token/);
    expect(text).toContain("**Use token**");
    expect(page).toContain(">Use token</button>");
  });

  it("every bulkhead command in First look and Upgrade uses flags its --help lists", async () => {
    const lines = [...blocks(section("First look"), "sh"), ...blocks(section("Upgrade"), "sh")]
      .flatMap((b) => b.split("\n")).map((l) => l.replace(/\s+#.*$/, "").trim()).filter((l) => l.startsWith("bulkhead "));
    expect(lines.length).toBeGreaterThanOrEqual(5);
    for (const line of lines) {
      const words = line.split(/\s+/).slice(1);
      const command = words[0] === "policy" ? words.slice(0, 2) : words.slice(0, 1);
      const help = (await run(process.execPath, [cliMain, ...command, "--help"])).stdout;
      const flags = words.filter((w) => /^--?[a-z]/.test(w)).map((w) => w.replace(/=.*$/, ""));
      expect({ line, missing: flags.filter((f) => !new RegExp(`(^|[\\s,|\\[(])${f.replace(/-/g, "\\-")}\\b`, "m").test(help)) })
        .toEqual({ line, missing: [] });
    }
  });
});
