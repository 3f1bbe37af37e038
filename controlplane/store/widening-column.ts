// Columns of the history ring (history.ts) that take the narrowest typed array their values
// fit, and widen when one does not: never truncate. A ring of 1M rows pays per byte of
// width a MiB per column, and most columns (enums, ports, dictionary ids, packets) hold
// small numbers although their type allows large ones.
//
// Cells are allocated once at the ring's capacity; a value that does not fit replaces them
// by the next wider array (a copy, at most three times in a column's life: u8 → u16 → u32
// → f64), so the width follows the largest value ever stored and does not narrow again.
// Float64 is the last rung: it holds any number exactly (negative, fractional, above 2^32).

type Cells = Uint8Array | Uint16Array | Uint32Array | Float64Array;

/** Bytes per cell: 0 (no cells yet: every value is 0), 1, 2, 4 or 8 (Float64, any number). */
export type CellWidth = 0 | 1 | 2 | 4 | 8;

const LIMITS: Record<CellWidth, number> = { 0: 0, 1: 0xff, 2: 0xffff, 4: 0xffff_ffff, 8: Infinity };

function cellsOf(width: CellWidth, capacity: number): Cells | undefined {
  switch (width) {
    case 0: return undefined;
    case 1: return new Uint8Array(capacity);
    case 2: return new Uint16Array(capacity);
    case 4: return new Uint32Array(capacity);
    case 8: return new Float64Array(capacity);
  }
}

/** The narrowest width that holds `value` exactly. */
function widthFor(value: number): CellWidth {
  if ((value >>> 0) !== value) return 8;
  return value === 0 ? 0 : value <= 0xff ? 1 : value <= 0xffff ? 2 : 4;
}

export class WideningColumn {
  private cells: Cells | undefined;
  /** The largest value the cells hold (0 with no cells); Infinity once Float64. */
  private limit: number;
  private cellWidth: CellWidth;

  /** `initial`: the width to start at (0 allocates nothing until a non-zero value comes). */
  constructor(readonly capacity: number, initial: CellWidth = 1) {
    this.cellWidth = initial;
    this.cells = cellsOf(initial, capacity);
    this.limit = LIMITS[initial];
  }

  /** Bytes per cell now. */
  get width(): CellWidth { return this.cellWidth; }
  /** Bytes the cells take (capacity × width). */
  get bytes(): number { return this.capacity * this.cellWidth; }

  get(slot: number): number {
    const cells = this.cells;
    return cells === undefined ? 0 : cells[slot]!;
  }

  /**
   * Writes into `out` (from its start) the slots of [from, to) whose value is marked 1 in
   * `table` (a value past its end is not), and returns how many: one pass over the cells.
   */
  slotsIn(from: number, to: number, table: Uint8Array, out: Uint32Array): number {
    let n = 0;
    const cells = this.cells;
    if (cells === undefined) {
      if (table[0] === 1) for (let slot = from; slot < to; slot++) out[n++] = slot;
      return n;
    }
    for (let slot = from; slot < to; slot++) if (table[cells[slot]!] === 1) out[n++] = slot;
    return n;
  }

  set(slot: number, value: number): void {
    if (((value >>> 0) !== value || value > this.limit) && this.limit !== Infinity) this.widen(value);
    const cells = this.cells;
    if (cells !== undefined) cells[slot] = value;
  }

  /**
   * set() for a run of rows: slots `slot` … `slot + to - from - 1` (they must not wrap) take
   * `values[rows[k]]` for k in [from, to). Widens at most once, and copies natively when
   * the rows are consecutive.
   */
  setRows(slot: number, values: Uint8Array | Uint32Array | Float64Array, rows: Uint32Array, from: number, to: number): void {
    if (to <= from) return;
    // The values' own type may bound them already within the cells': then nothing to look at.
    const bound = values instanceof Uint8Array ? 0xff : values instanceof Uint32Array ? 0xffff_ffff : Infinity;
    if (bound > this.limit) {
      let largest = 0;
      for (let k = from; k < to; k++) {
        const value = values[rows[k]!]!;
        if ((value >>> 0) !== value) { largest = Infinity; break; }
        if (value > largest) largest = value;
      }
      if (largest > this.limit) this.widen(largest);
    }
    const cells = this.cells;
    if (cells === undefined) return; // still no cells: every value was 0
    const first = rows[from]!;
    if (rows[to - 1]! - first === to - 1 - from) cells.set(values.subarray(first, first + to - from), slot);
    else for (let k = from; k < to; k++) cells[slot + k - from] = values[rows[k]!]!;
  }

  private widen(value: number): void {
    let width = widthFor(value);
    if (width < this.cellWidth) width = this.cellWidth;
    if (width === this.cellWidth) return;
    const cells = cellsOf(width, this.capacity)!;
    if (this.cells !== undefined) cells.set(this.cells);
    this.cells = cells;
    this.cellWidth = width;
    this.limit = LIMITS[width];
  }
}

export const MAX_U64 = 0xffff_ffff_ffff_ffffn;

/**
 * Unsigned 64-bit values (packets, bytes, sequence numbers) as two widening columns of
 * 32-bit halves: the high half takes no memory until a value reaches 2^32. A value outside
 * [0, 2^64) is refused (a BigUint64Array would have kept it modulo 2^64).
 */
export class U64Column {
  private readonly lo: WideningColumn;
  private readonly hi: WideningColumn;

  constructor(readonly name: string, capacity: number) {
    this.lo = new WideningColumn(capacity, 1);
    this.hi = new WideningColumn(capacity, 0);
  }

  /** Bytes the cells take. */
  get bytes(): number { return this.lo.bytes + this.hi.bytes; }

  /** A value as its low and high 32-bit words (as a BigUint64Array's buffer holds it on little-endian). */
  setWords(slot: number, lo: number, hi: number): void {
    this.lo.set(slot, lo);
    this.hi.set(slot, hi);
  }

  setBigInt(slot: number, value: bigint): void {
    if (value < 0n || value > MAX_U64) {
      throw new RangeError(`flow history: ${this.name} ${value} is outside an unsigned 64-bit integer [0, 2^64)`);
    }
    this.lo.set(slot, Number(value & 0xffff_ffffn));
    this.hi.set(slot, Number(value >> 32n));
  }

  bigint(slot: number): bigint {
    const hi = this.hi.get(slot), lo = this.lo.get(slot);
    return hi === 0 ? BigInt(lo) : (BigInt(hi) << 32n) | BigInt(lo);
  }

  /** Number(value): exact below 2^53, rounded above as Number(bigint) rounds. */
  number(slot: number): number {
    const hi = this.hi.get(slot);
    return hi === 0 ? this.lo.get(slot) : Number(this.bigint(slot));
  }
}
