// An agent's clock skew, from the send times its batches carry.
//
// Each batch gives one sample: its send time (the agent's clock) minus the moment we take
// it (ours). That is the skew less the time the batch spent on its way: in the network, in
// socket buffers on both sides, and waiting for our event loop while it ingested what came
// before. That time is never negative, so no sample is above the skew, and the largest
// recent one is the closest to it. Taking the latest sample instead, a batch held up for
// seconds (a stall here, a burst of batches ahead of it) read as a clock that had fallen
// behind, and past the tolerance its records' times were moved forward by the hold-up.
//
// Recent means taken within the last SKEW_WINDOW_MS. A clock stepped ahead shows at its
// next batch; one stepped back once the samples before the step have left the window.

/** How long a sample counts towards the estimate. */
export const SKEW_WINDOW_MS = 30_000;

export class SkewEstimate {
  /** The samples that may still be the largest: decreasing from `head` on, taken in that order. */
  private readonly takenMs: number[] = [];
  private readonly skewMs: number[] = [];
  private head = 0;

  constructor(private readonly windowMs = SKEW_WINDOW_MS) {}

  /** Notes a sample (ms) taken at `nowMs` (our clock, not before the previous one's) and returns the estimate. */
  note(sampleMs: number, nowMs: number): number {
    // A sample with a larger one after it is never the largest of a window again.
    while (this.skewMs.length > this.head && this.skewMs[this.skewMs.length - 1]! <= sampleMs) {
      this.skewMs.pop();
      this.takenMs.pop();
    }
    this.skewMs.push(sampleMs);
    this.takenMs.push(nowMs);
    while (this.takenMs[this.head]! < nowMs - this.windowMs) this.head++;
    if (this.head > 1024 && this.head * 2 > this.skewMs.length) {
      this.skewMs.splice(0, this.head);
      this.takenMs.splice(0, this.head);
      this.head = 0;
    }
    return this.skewMs[this.head]!;
  }
}
