// SIGTERM and SIGINT for the long-running commands (agent, control plane). The handlers go
// in before the process starts its work: a signal that arrives while it starts (a pod
// deleted at once, a test that stops it as soon as its socket exists) is held and acted on
// once it has started, instead of the default action killing it halfway through.

export class StopSignals {
  private received: NodeJS.Signals | undefined;
  private handler: ((signal: NodeJS.Signals) => void) | undefined;

  constructor() {
    for (const signal of ["SIGTERM", "SIGINT"] as const) process.once(signal, () => this.deliver(signal));
  }

  /** Calls `handler` once, at the first signal, or now if one came already. */
  onStop(handler: (signal: NodeJS.Signals) => void): void {
    this.handler = handler;
    if (this.received !== undefined) handler(this.received);
  }

  private deliver(signal: NodeJS.Signals): void {
    if (this.received !== undefined) return;
    this.received = signal;
    this.handler?.(signal);
  }
}
