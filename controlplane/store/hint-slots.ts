// What a per-row lookup last answered for an object, remembered by a hint: a number per
// distinct address that ingest gives each row (EnrichedColumns.sourceHints). A slot answers
// only for the very object it was filled for, so a hint shared by two addresses, or an
// object seen under another hint, costs a lookup and never another row's answer. The
// history's interner and the flow map's identities use it to skip a Map or WeakMap per row.

/** Slots per table (a power of two): more than the distinct addresses of a busy cluster's traffic. */
const SLOTS = 16_384;

export class HintSlots<K extends object, V> {
  private readonly keys: (K | undefined)[] = new Array<K | undefined>(SLOTS).fill(undefined);
  private readonly values: (V | undefined)[] = new Array<V | undefined>(SLOTS).fill(undefined);

  /** What set() stored for `key` under `hint`, if that slot still holds `key`. */
  get(hint: number, key: K): V | undefined {
    const slot = hint & (SLOTS - 1);
    return this.keys[slot] === key ? this.values[slot] : undefined;
  }

  set(hint: number, key: K, value: V): void {
    const slot = hint & (SLOTS - 1);
    this.keys[slot] = key;
    this.values[slot] = value;
  }
}
