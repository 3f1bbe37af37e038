// Captured pino output, so tests can check the log lines a component writes.
import { Writable } from "node:stream";
import pino from "pino";

/** One parsed JSON object per log line. */
export class LogCapture {
  readonly lines: Record<string, unknown>[] = [];
  readonly stream = new Writable({
    write: (chunk: Buffer, _enc, done) => {
      for (const line of chunk.toString("utf8").split("\n")) if (line.trim()) this.lines.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  readonly log = pino({ level: "debug" }, this.stream);

  find(match: (line: Record<string, unknown>) => boolean): Record<string, unknown> | undefined {
    return this.lines.find(match);
  }
}
