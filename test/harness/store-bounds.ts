// The nanosecond time bounds both durable stores must answer alike (store-duckdb and
// store-clickhouse tests): five records whose start and end are 1 ns apart around `base`,
// at base - 2 ns … base + 2 ns, with sequences 0 … 4.
import { expect } from "vitest";
import type { StoreQuery } from "../../controlplane/store/durable.js";
import type { Timestamp } from "../../proto/gen/google/protobuf/timestamp.js";

/** A record at since, until or endNotAfter is kept; one a nanosecond beyond is not. */
export async function expectNanosecondBounds(seqs: (q: Partial<StoreQuery>) => Promise<number[]>, base: Timestamp,
  at: (dn: number) => Timestamp): Promise<void> {
  expect(await seqs({ since: base })).toEqual([2, 3, 4]);
  expect(await seqs({ since: at(1) })).toEqual([3, 4]);
  expect(await seqs({ until: base })).toEqual([0, 1, 2]);
  expect(await seqs({ until: at(-1) })).toEqual([0, 1]);
  expect(await seqs({ endNotAfter: base })).toEqual([0, 1, 2]);
  expect(await seqs({ since: base, until: base })).toEqual([2]);
  expect(await seqs({ endNotAfter: at(1), last: 2 })).toEqual([2, 3]);
}
