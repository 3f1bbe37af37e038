// The agent's kernel check (agent/kernel.ts, issue 18 item 2): from the release string
// alone, which attach mode the agent expects and why, and which kernels it refuses with a
// message naming the kernel found and the one needed; plus this machine's real release.
import { readFileSync } from "node:fs";
import os from "node:os";
import { describe, expect, it } from "vitest";
import { kernelSupport, parseKernelRelease } from "../agent/kernel.js";

describe("kernelSupport", () => {
  it("reads MAJOR.MINOR from the release strings distributions print", () => {
    const read = (r: string) => { const k = parseKernelRelease(r); return [k.major, k.minor]; };
    expect(read("6.1.0-27-amd64")).toEqual([6, 1]);
    expect(read("5.14.0-427.13.1.el9_4.x86_64")).toEqual([5, 14]);
    expect(read("6.8.0-1015-aws")).toEqual([6, 8]);
    expect(read("6.6")).toEqual([6, 6]);
    expect(read("6.10.14-linuxkit")).toEqual([6, 10]);
    expect(read("6.18.0+")).toEqual([6, 18]);
  });

  it("refuses a release that is not one, naming it", () => {
    for (const bad of ["", "six", "6", "v6.6.0", "6.6.0 extra"]) {
      expect(() => parseKernelRelease(bad)).toThrow(`kernel release "${bad}": expected MAJOR.MINOR[.PATCH][-SUFFIX] as uname -r prints it`);
    }
  });

  it("uses tcx from 6.6, the clsact fallback below, and says why", () => {
    expect(kernelSupport("6.6.0", "auto")).toMatchObject({ attach: "tcx", reason: expect.stringContaining("6.6 or newer: tcx links") });
    expect(kernelSupport("6.12.5-1-cloud-amd64", "tcx").attach).toBe("tcx");
    const old = kernelSupport("6.5.13", "auto");
    expect(old).toMatchObject({ attach: "clsact", reason: expect.stringContaining("kernel 6.5.13 is older than 6.6 (no tcx links): the clsact fallback") });
    expect(kernelSupport("5.15.0-91-generic", "auto").attach).toBe("clsact");
    expect(kernelSupport("5.8.0", "auto").attach).toBe("clsact");
    expect(kernelSupport("6.6.0", "clsact")).toMatchObject({ attach: "clsact", reason: expect.stringContaining("--attach-mode clsact") });
  });

  it("refuses kernels below what clsact needs, and tcx asked of a kernel without it", () => {
    expect(() => kernelSupport("5.7.19", "auto")).toThrow("kernel 5.7.19 is older than 5.8, which the agent needs (the BPF ring buffer and CAP_BPF); tcx attachment needs 6.6");
    expect(() => kernelSupport("4.19.0-26-amd64", "clsact")).toThrow("kernel 4.19.0-26-amd64 is older than 5.8");
    expect(() => kernelSupport("6.1.0-27-amd64", "tcx")).toThrow(
      "--attach-mode tcx: kernel 6.1.0-27-amd64 is older than 6.6, which tcx links need; use --attach-mode auto (the clsact fallback) or clsact");
  });

  it("reads this machine's release as the kernel reports it", () => {
    const release = os.release();
    expect(release).toBe(readFileSync("/proc/sys/kernel/osrelease", "utf8").trim());
    const support = kernelSupport(release, "auto");
    const [major, minor] = release.split(".").map((p) => parseInt(p, 10));
    expect(support.kernel).toEqual({ major, minor, release });
    // The agent test (test/agent.test.ts) checks that the agent attaches in the mode this names.
    expect(support.attach).toBe(major! > 6 || (major === 6 && minor! >= 6) ? "tcx" : "clsact");
  });
});
