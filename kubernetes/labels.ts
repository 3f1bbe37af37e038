// Label sets and the one label-selector matcher. Both selector syntaxes reduce to it: the
// object form of NetworkPolicy and the API (matchLabels/matchExpressions, validated in
// controlplane/policy/selector.ts) and kubectl's string form (controlplane/store/selector.ts).
// Semantics (metav1.LabelSelector): every requirement must hold. In: the key is set to one
// of the values. NotIn: the key is absent or set to none of them. Exists / DoesNotExist:
// the key is set / absent. No requirements: every label set matches.

export type Labels = Readonly<Record<string, string>>;

/** One requirement of a selector, in the object form both syntaxes reduce to. */
export type LabelRequirement =
  | { readonly key: string; readonly op: "In" | "NotIn"; readonly values: ReadonlySet<string> }
  | { readonly key: string; readonly op: "Exists" | "DoesNotExist" };

const hasOwn = (labels: Labels, key: string) => Object.prototype.hasOwnProperty.call(labels, key);

/** A validated selector, ready to match label sets. */
export class SelectorMatcher {
  /** Canonical text: equal for selectors that are written differently but match the same. */
  readonly key: string;
  /** The empty selector: every label set matches. */
  readonly matchesEverything: boolean;
  private readonly requirements: readonly LabelRequirement[];

  constructor(requirements: readonly LabelRequirement[]) {
    const sorted = [...requirements].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : a.op < b.op ? -1 : a.op > b.op ? 1 : 0));
    this.requirements = sorted;
    this.matchesEverything = sorted.length === 0;
    this.key = sorted.map((r) => ("values" in r ? `${r.key} ${r.op} (${[...r.values].sort().join(",")})` : `${r.key} ${r.op}`)).join("; ");
  }

  matches(labels: Labels): boolean {
    for (const r of this.requirements) {
      const present = hasOwn(labels, r.key);
      switch (r.op) {
        case "In":
          if (!present || !r.values.has(labels[r.key] as string)) return false;
          break;
        case "NotIn":
          if (present && r.values.has(labels[r.key] as string)) return false;
          break;
        case "Exists":
          if (!present) return false;
          break;
        case "DoesNotExist":
          if (present) return false;
          break;
      }
    }
    return true;
  }

  toString(): string {
    return this.key === "" ? "{}" : this.key;
  }
}
