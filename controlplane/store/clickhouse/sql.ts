// SQL text for ClickHouse built only from literals this file writes. ClickHouse 18.16 has
// no query parameters, so every value from a request goes through `sqlString` or
// `sqlUInt`; identifiers are the project's own (tables, columns) or a database name that
// location.ts restricted to [A-Za-z0-9_].

/**
 * A ClickHouse string literal: quoted, with backslash, quote and every control byte
 * escaped (NUL as \0, others as \xHH), so nothing in `value` can end the literal. Text is
 * sent as UTF-8 and compared byte for byte, as the stored strings are.
 */
export function sqlString(value: string): string {
  let out = "'";
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i);
    if (c === 0x5c) out += "\\\\";
    else if (c === 0x27) out += "\\'";
    else if (c === 0) out += "\\0";
    else if (c < 0x20 || c === 0x7f) out += `\\x${c.toString(16).padStart(2, "0")}`;
    else out += value[i];
  }
  return out + "'";
}

/** An unsigned integer literal; refuses anything else rather than quoting it. */
export function sqlUInt(value: number | bigint): string {
  if (typeof value === "bigint" ? value < 0n || value >= 2n ** 64n : !Number.isSafeInteger(value) || value < 0) {
    throw new RangeError(`not an unsigned integer for SQL: ${String(value)}`);
  }
  return String(value);
}

/** A signed 32-bit integer literal (proto enums). */
export function sqlInt32(value: number): string {
  if (!Number.isInteger(value) || value < -(2 ** 31) || value >= 2 ** 31) throw new RangeError(`not a 32-bit integer for SQL: ${String(value)}`);
  return String(value);
}

/** `column IN (a, b)` of literals; never empty (an empty filter field is not a condition). */
export function sqlIn(column: string, literals: readonly string[]): string {
  return literals.length === 1 ? `${column} = ${literals[0]}` : `${column} IN (${literals.join(", ")})`;
}
