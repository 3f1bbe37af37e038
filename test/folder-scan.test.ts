// FolderSource applies only states the folder held: a scan lists the folder, then reads
// one file after another, and a file created or replaced meanwhile must not give a mix of
// before and after (the lab writes a policy, then a namespace's mode: a scan that read the
// new mode but listed the folder before the policy enforced the mode without the policy).
// The interleaving is made exact by a hook in readFile: when the scan reads the middle
// file, the test writes the other two.
//   npx vitest run test/folder-scan.test.ts
import type * as fsPromises from "node:fs/promises";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, describe, expect, it, vi } from "vitest";
import { FolderSource } from "../controlplane/metadata/folder.js";
import { objectKey, type KubeObject } from "../controlplane/metadata/objects.js";
import type { ObjectEvent } from "../controlplane/metadata/source.js";
import { waitFor } from "./harness/wait.js";

const hook = vi.hoisted(() => ({ beforeRead: undefined as ((file: string) => Promise<void>) | undefined }));
vi.mock("node:fs/promises", async (importOriginal) => {
  const real = await importOriginal<typeof fsPromises>();
  const readFile = (async (...args: Parameters<typeof real.readFile>) => {
    const before = hook.beforeRead;
    if (before !== undefined) await before(String(args[0]));
    return real.readFile(...args);
  }) as typeof real.readFile;
  return { ...real, readFile, default: { ...real, readFile } };
});
const fs = await vi.importActual<typeof fsPromises>("node:fs/promises");

const namespace = (name: string, mode: string) => `apiVersion: v1
kind: Namespace
metadata:
  name: ${name}
  annotations:
    bulkhead.io/mode: ${mode}
`;

/** Written as the lab writes: a temporary file renamed into place. */
async function writeAtomic(file: string, text: string): Promise<void> {
  await fs.writeFile(`${file}.tmp`, text);
  await fs.rename(`${file}.tmp`, file);
}

describe("a folder that changes while it is scanned", () => {
  let dir: string | undefined;
  let source: FolderSource | undefined;

  afterEach(async () => {
    hook.beforeRead = undefined;
    await source?.stop();
    source = undefined;
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
    dir = undefined;
  });

  // "created": alpha appears after the scan's listing; "replaced": alpha (listed and read
  // before the middle file) changes after it was read. Either way shop's new mode is read.
  it.each(["created", "replaced"] as const)("applies no state the folder never held: a file %s while the scan reads the others", async (how) => {
    dir = await mkdtemp(path.join(tmpdir(), "bulkhead-folder-scan-"));
    const file = (name: string) => path.join(dir!, name);
    if (how === "replaced") await writeAtomic(file("a-alpha.yaml"), namespace("alpha", "observe"));
    await writeAtomic(file("m-middle.yaml"), namespace("middle", "observe"));
    await writeAtomic(file("z-shop.yaml"), namespace("shop", "audit"));

    // Every state the sink was left in after each batch: shop's mode and alpha's.
    const objects = new Map<string, KubeObject>();
    const states: string[] = [];
    const mode = (name: string) => objects.get(`Namespace//${name}`)?.metadata.annotations?.["bulkhead.io/mode"] ?? "absent";
    source = new FolderSource({ dir });
    await source.start({
      apply(events: ObjectEvent[]) {
        for (const e of events) {
          if (e.type === "upsert") objects.set(objectKey(e.object), e.object);
          else objects.delete(objectKey(e.object));
        }
        states.push(`alpha ${mode("alpha")}, shop ${mode("shop")}`);
      },
    });
    expect(states).toEqual([`alpha ${how === "created" ? "absent" : "observe"}, shop audit`]);

    // The next scan that reads the middle file has listed (and read) alpha's file already:
    // then alpha is written, and shop switches to enforce, read after the middle file.
    let fired = false;
    hook.beforeRead = async (read) => {
      if (fired || read !== file("m-middle.yaml")) return;
      fired = true;
      await writeAtomic(file("a-alpha.yaml"), namespace("alpha", "enforce"));
      await writeAtomic(file("z-shop.yaml"), namespace("shop", "enforce"));
    };
    await writeAtomic(file("m-middle.yaml"), namespace("middle", "audit"));
    // The watcher or the 500 ms rescan picks the change up; then every write is in place.
    await waitFor(() => states.at(-1), (s) => s === "alpha enforce, shop enforce", 5000, "the folder's final state applied");
    expect(fired).toBe(true);
    expect(states.filter((s) => s.endsWith("shop enforce") && !s.startsWith("alpha enforce")), "a state with shop's new mode but not alpha's").toEqual([]);
  });
});
