// A bounded FIFO between pipeline stages: when full it drops the oldest items and counts
// them, so a slow consumer costs old records, never memory, and never silently.
export class BoundedQueue<T> {
  private items: T[] = [];
  private head = 0;
  dropped = 0;

  constructor(readonly capacity: number, private readonly onDrop?: (n: number) => void) {}

  get length(): number {
    return this.items.length - this.head;
  }

  pushAll(batch: readonly T[]): void {
    for (const item of batch) this.items.push(item);
    const over = this.length - this.capacity;
    if (over > 0) {
      this.head += over;
      this.dropped += over;
      this.onDrop?.(over);
    }
    this.compact();
  }

  take(max: number): T[] {
    const out = this.items.slice(this.head, this.head + max);
    this.head += out.length;
    this.compact();
    return out;
  }

  private compact(): void {
    if (this.head > 4096 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
  }
}
