// What this node's kernel allows, decided from its release (uname -r) at agent start:
// tcx links from 6.6 (owned by a pinnable link, ordered, outliving the agent); below that
// the clsact fallback (tc filters at priority 1); below 5.8 nothing, since the programs
// report through a BPF ring buffer and the agent holds CAP_BPF rather than CAP_SYS_ADMIN,
// both 5.8. The addon still probes tcx under --attach-mode auto, so a kernel with tcx
// backported (some distributions' 5.14) gets it anyway; this check names what to expect,
// and refuses what cannot work with a message instead of a verifier or EINVAL later.

export const TCX_KERNEL = { major: 6, minor: 6 } as const;
export const MIN_KERNEL = { major: 5, minor: 8 } as const;
const MIN_WHY = "the BPF ring buffer and CAP_BPF";

export interface KernelRelease {
  major: number;
  minor: number;
  /** As uname -r prints it, e.g. "6.1.0-27-amd64". */
  release: string;
}

export type AttachModeFlag = "auto" | "tcx" | "clsact";

export interface KernelSupport {
  kernel: KernelRelease;
  /** The attach mode the agent expects to use. */
  attach: "tcx" | "clsact";
  /** Why, in words for the log. */
  reason: string;
}

export class KernelError extends Error {}

/** "6.1.0-27-amd64", "5.14.0-427.el9.x86_64", "6.6": the leading MAJOR.MINOR counts. */
export function parseKernelRelease(release: string): KernelRelease {
  const m = /^([0-9]+)\.([0-9]+)(?:[.\-+~_][^\s]*)?$/.exec(release);
  if (!m) throw new KernelError(`kernel release "${release}": expected MAJOR.MINOR[.PATCH][-SUFFIX] as uname -r prints it`);
  return { major: Number(m[1]), minor: Number(m[2]), release };
}

const atLeast = (k: KernelRelease, v: { major: number; minor: number }): boolean =>
  k.major > v.major || (k.major === v.major && k.minor >= v.minor);

/** The attach mode for kernel `release` under --attach-mode `mode`; throws KernelError when it cannot work. */
export function kernelSupport(release: string, mode: AttachModeFlag): KernelSupport {
  const kernel = parseKernelRelease(release);
  const tcx = `${TCX_KERNEL.major}.${TCX_KERNEL.minor}`;
  if (!atLeast(kernel, MIN_KERNEL)) {
    throw new KernelError(`kernel ${release} is older than ${MIN_KERNEL.major}.${MIN_KERNEL.minor}, which the agent needs `
      + `(${MIN_WHY}); tcx attachment needs ${tcx}`);
  }
  if (mode === "clsact") {
    return { kernel, attach: "clsact", reason: "--attach-mode clsact: tc filters at priority 1 on a clsact qdisc" };
  }
  if (atLeast(kernel, TCX_KERNEL)) {
    return { kernel, attach: "tcx", reason: `kernel ${release} is ${tcx} or newer: tcx links at the head of each veth's chain, pinned, so they outlive the agent` };
  }
  if (mode === "tcx") {
    throw new KernelError(`--attach-mode tcx: kernel ${release} is older than ${tcx}, which tcx links need; `
      + "use --attach-mode auto (the clsact fallback) or clsact");
  }
  return {
    kernel, attach: "clsact",
    reason: `kernel ${release} is older than ${tcx} (no tcx links): the clsact fallback, tc filters at priority 1 `
      + "(tcx still tried first, in case the kernel has it backported)",
  };
}
