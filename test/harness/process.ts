// Child processes of the tests: their output split into lines, and a stop that escalates.
import type { ChildProcess } from "node:child_process";

/** A child process with its stdout split into lines. */
export class Spawned {
  readonly lines: string[] = [];
  stderr = "";
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private partial = "";
  private readonly waiters = new Set<() => void>();

  constructor(readonly child: ChildProcess, readonly what: string) {
    child.stdout?.on("data", (b: Buffer) => {
      const parts = (this.partial + b.toString("utf8")).split("\n");
      this.partial = parts.pop() ?? "";
      this.lines.push(...parts);
      for (const w of this.waiters) w();
    });
    child.stderr?.on("data", (b: Buffer) => { this.stderr += b.toString("utf8"); });
    this.exited = new Promise((resolve) => child.once("exit", (code, signal) => {
      if (this.partial) this.lines.push(this.partial);
      this.partial = "";
      resolve({ code, signal });
      for (const w of this.waiters) w();
    }));
  }

  get pid(): number {
    return this.child.pid ?? 0;
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  waitForLine(match: (line: string) => boolean, timeoutMs: number): Promise<string> {
    return new Promise((resolve, reject) => {
      const check = () => {
        const hit = this.lines.find(match);
        if (hit !== undefined) done(() => resolve(hit));
        else if (!this.running) done(() => reject(new Error(`${this.what} exited before the expected line: ${this.output()}`)));
      };
      const timer = setTimeout(() => done(() => reject(new Error(`${this.what}: no expected line within ${timeoutMs} ms: ${this.output()}`))), timeoutMs);
      const done = (f: () => void) => { clearTimeout(timer); this.waiters.delete(check); f(); };
      this.waiters.add(check);
      check();
    });
  }

  /** SIGTERM, then the exit code (SIGKILL after `graceMs`, reported as an error). */
  async stop(graceMs = 10_000): Promise<number | null> {
    const killed = await stopChild(this.child, graceMs);
    if (killed) throw new Error(`${this.what} ignored SIGTERM for ${graceMs} ms and was killed: ${this.output()}`);
    return (await this.exited).code;
  }

  output(): string {
    return `stdout: ${this.lines.join("\n")}${this.partial} stderr: ${this.stderr}`.slice(-4000);
  }
}

/** One SIGTERM (a second one would meet Node's default handler), SIGKILL after `graceMs`;
 * true when it had to SIGKILL. */
export async function stopChild(child: ChildProcess, graceMs: number): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null) return false;
  const exited = new Promise<void>((r) => child.once("exit", () => r()));
  child.kill("SIGTERM");
  child.kill("SIGCONT"); // a paused process acts on SIGTERM only once continued
  const timer = new Promise<"timeout">((r) => setTimeout(() => r("timeout"), graceMs));
  if ((await Promise.race([exited, timer])) !== "timeout") return false;
  child.kill("SIGKILL");
  await exited;
  return true;
}
