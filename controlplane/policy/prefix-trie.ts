// The compiler's index of address prefixes: which ipBlocks and pod addresses lie on an
// address's path, for deciding which addresses policy can tell apart.
import { addressBit, type IpPrefix, type IpWords } from "../../addresses/prefix.js";

interface TrieNode<T> {
  zero?: TrieNode<T>;
  one?: TrieNode<T>;
  values?: T[];
}

/** A binary trie of prefixes (one per family) whose lookups visit every stored prefix on an address's path. */
export class PrefixTrie<T> {
  private readonly roots: Record<4 | 6, TrieNode<T>> = { 4: {}, 6: {} };

  add(prefix: IpPrefix, value: T): void {
    let node = this.roots[prefix.family];
    for (let bit = 0; bit < prefix.length; bit++) {
      const next: TrieNode<T> | undefined = addressBit(prefix.words, bit) === 0 ? node.zero : node.one;
      if (next) {
        node = next;
      } else {
        const created: TrieNode<T> = {};
        if (addressBit(prefix.words, bit) === 0) node.zero = created;
        else node.one = created;
        node = created;
      }
    }
    (node.values ??= []).push(value);
  }

  /** Calls `visit` for the values of every stored prefix containing the first `length` bits of `address`, shortest first. */
  walk(address: IpWords, length: number, visit: (values: readonly T[], prefixLength: number) => void): void {
    let node: TrieNode<T> | undefined = this.roots[address.family];
    for (let bit = 0; node; bit++) {
      if (node.values) visit(node.values, bit);
      if (bit >= length) break;
      node = addressBit(address.words, bit) === 0 ? node.zero : node.one;
    }
  }
}
