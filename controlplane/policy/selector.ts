// NetworkPolicy's LabelSelector objects ({matchLabels, matchExpressions}) as matchers.
// The kubectl selector strings of controlplane/store/selector.ts are another syntax for
// the same idea; NetworkPolicy always carries the object form.
//
// Semantics (Kubernetes metav1.LabelSelector): every pair of matchLabels and every
// expression must hold. In: the key is set to one of the values. NotIn: the key is absent
// or set to none of them. Exists / DoesNotExist: the key is set / absent. An empty
// selector matches every label set.
//
// Objects parsed by controlplane/metadata/objects.ts are already valid; selectors built in
// code (tests, conformance cases, a future API source) are checked here again, so that a
// bad operator can never silently match nothing.
import type { LabelSelector, SelectorOperator } from "../metadata/objects.js";
import { describeValue, fieldPath } from "../../fields/reader.js";
import { isLabelValue as isLabelValueText, isQualifiedName } from "../../kubernetes/names.js";
import { SelectorMatcher, type Labels, type LabelRequirement } from "../../kubernetes/labels.js";

export { SelectorMatcher };

export type { Labels } from "../../kubernetes/labels.js";

/** One thing wrong with a selector: the field path (e.g. "spec.podSelector.matchExpressions[0].operator") and what. */
export interface SelectorProblem {
  field: string;
  message: string;
}

const OPERATORS: readonly SelectorOperator[] = ["In", "NotIn", "Exists", "DoesNotExist"];
function isLabelValue(value: unknown): value is string {
  return typeof value === "string" && isLabelValueText(value);
}

function isPlainMap(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/**
 * Everything wrong with `selector` as the API server validates it; empty when valid.
 * Takes `unknown` field values seriously: the TypeScript type may have been cast.
 */
export function labelSelectorProblems(selector: LabelSelector, field: string): SelectorProblem[] {
  const problems: SelectorProblem[] = [];
  const add = (f: string, message: string) => problems.push({ field: f, message });
  if (!isPlainMap(selector)) {
    add(field, `expected a label selector map, got ${describeValue(selector)}`);
    return problems;
  }
  const labelsField = fieldPath(field, "matchLabels");
  const matchLabels: unknown = selector.matchLabels;
  if (matchLabels !== undefined && !isPlainMap(matchLabels)) {
    add(labelsField, `expected a map of labels, got ${describeValue(matchLabels)}`);
  } else if (matchLabels !== undefined) {
    for (const [key, value] of Object.entries(matchLabels)) {
      if (!isQualifiedName(key)) add(fieldPath(labelsField, key), `invalid label key ${describeValue(key)}`);
      if (!isLabelValue(value)) add(fieldPath(labelsField, key), `invalid label value ${describeValue(value)}`);
    }
  }
  const exprField = fieldPath(field, "matchExpressions");
  const expressions: unknown = selector.matchExpressions;
  if (expressions !== undefined && !Array.isArray(expressions)) {
    add(exprField, `expected a list, got ${describeValue(expressions)}`);
    return problems;
  }
  (expressions ?? []).forEach((expr: unknown, i: number) => {
    const f = fieldPath(exprField, i);
    if (!isPlainMap(expr)) {
      add(f, `expected a map, got ${describeValue(expr)}`);
      return;
    }
    if (typeof expr.key !== "string" || !isQualifiedName(expr.key)) add(fieldPath(f, "key"), `invalid label key ${describeValue(expr.key)}`);
    const operator = expr.operator;
    if (typeof operator !== "string" || !(OPERATORS as readonly string[]).includes(operator)) {
      add(fieldPath(f, "operator"), `expected one of ${OPERATORS.join(", ")}, got ${describeValue(operator)}`);
      return;
    }
    const values: unknown = expr.values ?? [];
    if (!Array.isArray(values)) {
      add(fieldPath(f, "values"), `expected a list, got ${describeValue(values)}`);
      return;
    }
    if ((operator === "In" || operator === "NotIn") && values.length === 0) {
      add(fieldPath(f, "values"), `operator ${operator} needs at least one value`);
    }
    if ((operator === "Exists" || operator === "DoesNotExist") && values.length > 0) {
      add(fieldPath(f, "values"), `operator ${operator} takes no values`);
    }
    values.forEach((v: unknown, j: number) => {
      if (!isLabelValue(v)) add(fieldPath(fieldPath(f, "values"), j), `invalid label value ${describeValue(v)}`);
    });
  });
  return problems;
}

/** Thrown by compileLabelSelector for an invalid selector; `problems` name every bad field. */
export class LabelSelectorObjectError extends Error {
  constructor(readonly problems: SelectorProblem[]) {
    super(problems.map((p) => `${p.field}: ${p.message}`).join("; "));
    this.name = "LabelSelectorObjectError";
  }
}

/** The matcher of a valid selector; throws LabelSelectorObjectError naming `field` otherwise. */
export function compileLabelSelector(selector: LabelSelector, field = "selector"): SelectorMatcher {
  const problems = labelSelectorProblems(selector, field);
  if (problems.length > 0) throw new LabelSelectorObjectError(problems);
  const requirements: LabelRequirement[] = [];
  for (const [key, value] of Object.entries(selector.matchLabels ?? {})) {
    requirements.push({ key, op: "In", values: new Set([value]) });
  }
  for (const e of selector.matchExpressions ?? []) {
    if (e.operator === "In" || e.operator === "NotIn") requirements.push({ key: e.key, op: e.operator, values: new Set(e.values) });
    else requirements.push({ key: e.key, op: e.operator });
  }
  return new SelectorMatcher(requirements);
}

/** One-off match of a selector object against labels (compiles it each time: prefer compileLabelSelector). */
export function labelSelectorMatches(selector: LabelSelector, labels: Labels): boolean {
  return compileLabelSelector(selector).matches(labels);
}
