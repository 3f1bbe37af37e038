// The test harness's clean-up of what a killed run left: a lab test killed before its
// afterAll (a timeout, a Ctrl-C, a helper's kill) leaves its pin folder, and the links pinned
// there keep its programs loaded; the next run of that file has another pid and would never
// look at it. testPinDir removes the folders of its tag whose process is gone, and only those.
// Kernel-own: folders /sys/fs/bpf/bhpintest-* of its own.
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { BPFFS, testPinDir } from "./harness/testbed.js";

const made: string[] = [];
function folder(name: string): string {
  const dir = path.join(BPFFS, name);
  fs.mkdirSync(path.join(dir, "links"), { recursive: true });
  made.push(dir);
  return dir;
}

afterAll(() => {
  for (const dir of made) fs.rmSync(dir, { recursive: true, force: true });
});

describe("testPinDir", () => {
  it("removes the pin folders of its tag's runs that are gone, keeps live runs' and other tags'", () => {
    const gone = spawnSync("true").pid; // exited when spawnSync returns
    expect(fs.existsSync(`/proc/${gone}`)).toBe(false);
    const deadRun = folder(`bhpintest-${gone}`);
    const liveRun = folder("bhpintest-1"); // pid 1 is always alive
    const otherTag = folder(`bhpintest-other-${gone}`);

    const own = testPinDir("bhpintest");

    expect(own).toBe(path.join(BPFFS, `bhpintest-${process.pid}`));
    expect(fs.existsSync(deadRun)).toBe(false);
    expect(fs.existsSync(liveRun)).toBe(true);
    expect(fs.existsSync(otherTag)).toBe(true);
  });
});
