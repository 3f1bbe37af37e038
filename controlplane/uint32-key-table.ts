// A hash table from an unsigned 32-bit number to a value, the keys in one typed array:
// the enricher's cache of IPv4 addresses, looked up twice per ingested row. A Map keyed
// by numbers hashes into V8's own table and loads a heap number or Smi per probe; here a
// probe reads one 8-byte slot (key, then value index + 1), and the values sit in one
// array in the order they came.

const EMPTY = 0;

export class Uint32KeyTable<T> {
  private slots: Uint32Array;
  private mask: number;
  private values: T[] = [];

  constructor(initialSlots = 1024) {
    let slots = 16;
    while (slots < initialSlots) slots *= 2;
    this.slots = new Uint32Array(2 * slots);
    this.mask = slots - 1;
  }

  get size(): number { return this.values.length; }

  /** The value stored under `key` (0 ≤ key < 2^32), or undefined. */
  get(key: number): T | undefined {
    const slots = this.slots, mask = this.mask;
    for (let slot = mix(key) & mask; ; slot = (slot + 1) & mask) {
      const v = slots[2 * slot + 1]!;
      if (v === EMPTY) return undefined;
      if (slots[2 * slot] === key) return this.values[v - 1];
    }
  }

  /** Stores `value` under `key`, which get() does not find (keys are added once, never replaced). */
  add(key: number, value: T): void {
    if (2 * (this.values.length + 1) > this.mask + 1) this.grow();
    this.put(key, this.values.push(value));
  }

  /** Forgets every entry (keeps the room it grew to). */
  clear(): void {
    if (this.values.length === 0) return;
    this.slots.fill(EMPTY);
    this.values = [];
  }

  private put(key: number, valuePlusOne: number): void {
    const slots = this.slots, mask = this.mask;
    let slot = mix(key) & mask;
    while (slots[2 * slot + 1] !== EMPTY) slot = (slot + 1) & mask;
    slots[2 * slot] = key;
    slots[2 * slot + 1] = valuePlusOne;
  }

  private grow(): void {
    const old = this.slots;
    this.slots = new Uint32Array(2 * old.length);
    this.mask = old.length - 1;
    for (let k = 0; k < old.length; k += 2) if (old[k + 1] !== EMPTY) this.put(old[k]!, old[k + 1]!);
  }
}

/** murmur3's 32-bit finalizer: addresses of one subnet differ in their low bits only. */
function mix(key: number): number {
  let h = Math.imul(key ^ (key >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return h ^ (h >>> 16);
}
