// Kubernetes label selectors in kubectl syntax, parsed once into a matcher.
//
//   app=web,tier!=db     equality and inequality ("==" is the same as "=")
//   env in (a,b)         the label is set to one of the values
//   env notin (c)        the label is absent or set to none of the values
//   canary / !canary     the label is set (to anything) / absent
//
// Requirements are separated by commas and must all hold. An empty selector matches
// every label set, as in Kubernetes.
import { isDnsSubdomain, isLabelName, isLabelValue } from "../../kubernetes/names.js";
import { SelectorMatcher, type Labels, type LabelRequirement as MatcherRequirement } from "../../kubernetes/labels.js";

export type { Labels };

export type LabelOperator = "=" | "!=" | "in" | "notin" | "exists" | "!exists";

export interface LabelRequirement {
  readonly key: string;
  readonly operator: LabelOperator;
  /** One value for "=" and "!=", one or more for "in" and "notin", none otherwise. */
  readonly values: readonly string[];
}

export interface LabelSelector {
  readonly requirements: readonly LabelRequirement[];
  matches(labels: Labels): boolean;
  /** The selector in canonical kubectl syntax. */
  toString(): string;
}

/** A selector that does not parse; `position` is the 0-based offset of the bad part. */
export class LabelSelectorError extends Error {
  constructor(readonly selector: string, readonly position: number, problem: string) {
    super(`label selector "${selector}": ${problem} (at position ${position})`);
    this.name = "LabelSelectorError";
  }
}

type TokenKind = "word" | "!" | "=" | "==" | "!=" | "(" | ")" | "," | "end";

interface Token {
  kind: TokenKind;
  text: string;
  position: number;
}

const SPECIAL = new Set(["(", ")", ",", "=", "!", "<", ">"]);

function tokenize(selector: string): Token[] {
  const tokens: Token[] = [];
  let i = 0;
  while (i < selector.length) {
    const c = selector[i] ?? "";
    if (/\s/.test(c)) { i++; continue; }
    const start = i;
    if (c === "(" || c === ")" || c === ",") {
      tokens.push({ kind: c, text: c, position: start });
      i++;
    } else if (c === "!" || c === "=") {
      const two = selector.slice(i, i + 2);
      if (two === "!=" || two === "==") {
        tokens.push({ kind: two, text: two, position: start });
        i += 2;
      } else {
        tokens.push({ kind: c, text: c, position: start });
        i++;
      }
    } else if (c === "<" || c === ">") {
      throw new LabelSelectorError(selector, start,
        `operator "${c}" is not supported; use =, ==, !=, in, notin, or a bare key`);
    } else {
      while (i < selector.length && !SPECIAL.has(selector[i] ?? "") && !/\s/.test(selector[i] ?? "")) i++;
      tokens.push({ kind: "word", text: selector.slice(start, i), position: start });
    }
  }
  tokens.push({ kind: "end", text: "", position: selector.length });
  return tokens;
}


function keyProblem(key: string): string | undefined {
  const slash = key.indexOf("/");
  const name = slash === -1 ? key : key.slice(slash + 1);
  if (slash !== -1) {
    const prefix = key.slice(0, slash);
    if (!isDnsSubdomain(prefix)) {
      return `key "${key}" has an invalid prefix "${prefix}" (must be a lowercase DNS subdomain of at most 253 characters)`;
    }
  }
  if (!isLabelName(name)) {
    return `key "${key}" is not a valid label name (1-63 characters: letters, digits, '-', '_', '.', starting and ending with a letter or digit)`;
  }
  return undefined;
}

function valueProblem(key: string, value: string): string | undefined {
  if (!isLabelValue(value)) {
    return `value "${value}" of key "${key}" is not a valid label value (at most 63 characters: letters, digits, '-', '_', '.', starting and ending with a letter or digit)`;
  }
  return undefined;
}

class Parser {
  private next = 0;
  constructor(private readonly selector: string, private readonly tokens: Token[]) {}

  private peek(): Token {
    // The token list always ends with "end", and parsing stops there.
    return this.tokens[this.next] ?? this.tokens[this.tokens.length - 1]!;
  }

  private take(): Token {
    const token = this.peek();
    if (token.kind !== "end") this.next++;
    return token;
  }

  private fail(token: Token, problem: string): never {
    throw new LabelSelectorError(this.selector, token.position, problem);
  }

  private describe(token: Token): string {
    return token.kind === "end" ? "the end of the selector" : `"${token.text}"`;
  }

  parse(): LabelRequirement[] {
    const requirements: LabelRequirement[] = [];
    if (this.peek().kind === "end") return requirements;
    for (;;) {
      requirements.push(this.requirement());
      const token = this.take();
      if (token.kind === "end") return requirements;
      if (token.kind !== ",") {
        this.fail(token, `expected "," between requirements, found ${this.describe(token)}`);
      }
      if (this.peek().kind === "end") this.fail(this.peek(), `empty requirement after ","`);
    }
  }

  private key(token: Token): string {
    if (token.kind !== "word") this.fail(token, `expected a label key, found ${this.describe(token)}`);
    const problem = keyProblem(token.text);
    if (problem !== undefined) this.fail(token, problem);
    return token.text;
  }

  private value(key: string, token: Token): string {
    const problem = valueProblem(key, token.text);
    if (problem !== undefined) this.fail(token, problem);
    return token.text;
  }

  private requirement(): LabelRequirement {
    const first = this.take();
    if (first.kind === ",") this.fail(first, `empty requirement before ","`);
    if (first.kind === "!") {
      return { key: this.key(this.take()), operator: "!exists", values: [] };
    }
    const key = this.key(first);
    const op = this.peek();
    switch (op.kind) {
      case "end":
      case ",":
        return { key, operator: "exists", values: [] };
      case "=":
      case "==":
      case "!=": {
        this.take();
        const valueToken = this.peek();
        // "key=" selects an empty value, as in Kubernetes.
        let value = "";
        if (valueToken.kind === "word") value = this.value(key, this.take());
        else if (valueToken.kind !== "end" && valueToken.kind !== ",") {
          this.fail(valueToken, `expected a value after "${op.text}" for key "${key}", found ${this.describe(valueToken)}`);
        }
        return { key, operator: op.kind === "!=" ? "!=" : "=", values: [value] };
      }
      case "word":
        if (op.text === "in" || op.text === "notin") {
          this.take();
          return { key, operator: op.text, values: this.valueSet(key, op.text) };
        }
        return this.fail(op, `expected an operator (=, ==, !=, in, notin) or "," after key "${key}", found "${op.text}"`);
      default:
        return this.fail(op, `expected an operator (=, ==, !=, in, notin) or "," after key "${key}", found ${this.describe(op)}`);
    }
  }

  private valueSet(key: string, operator: string): string[] {
    const open = this.take();
    if (open.kind !== "(") this.fail(open, `expected "(" after "${operator}" for key "${key}", found ${this.describe(open)}`);
    const values: string[] = [];
    for (;;) {
      const token = this.take();
      if (token.kind === ")" && values.length === 0) {
        this.fail(token, `the set of values for "${key} ${operator}" is empty`);
      }
      if (token.kind !== "word") {
        this.fail(token, token.kind === "end"
          ? `missing ")" to close the set of values for "${key} ${operator}"`
          : `expected a value in the set for "${key} ${operator}", found ${this.describe(token)}`);
      }
      values.push(this.value(key, token));
      const separator = this.take();
      if (separator.kind === ")") return values;
      if (separator.kind !== ",") {
        this.fail(separator, separator.kind === "end"
          ? `missing ")" to close the set of values for "${key} ${operator}"`
          : `expected "," or ")" in the set for "${key} ${operator}", found ${this.describe(separator)}`);
      }
    }
  }
}

/** The matcher's form of a kubectl requirement ("=" is In one value, "!=" NotIn one value). */
function matcherRequirement(r: LabelRequirement): MatcherRequirement {
  switch (r.operator) {
    case "exists": return { key: r.key, op: "Exists" };
    case "!exists": return { key: r.key, op: "DoesNotExist" };
    case "=":
    case "in": return { key: r.key, op: "In", values: new Set(r.values) };
    case "!=":
    case "notin": return { key: r.key, op: "NotIn", values: new Set(r.values) };
  }
}

function formatRequirement(r: LabelRequirement): string {
  switch (r.operator) {
    case "exists": return r.key;
    case "!exists": return `!${r.key}`;
    case "=":
    case "!=": return `${r.key}${r.operator}${r.values[0] ?? ""}`;
    case "in":
    case "notin": return `${r.key} ${r.operator} (${r.values.join(",")})`;
  }
}

/** Parses a selector such as "app=web,env in (a,b),!canary"; throws LabelSelectorError. */
export function parseLabelSelector(selector: string): LabelSelector {
  const requirements = new Parser(selector, tokenize(selector)).parse();
  const matcher = new SelectorMatcher(requirements.map(matcherRequirement));
  const text = requirements.map(formatRequirement).join(",");
  return {
    requirements,
    matches: (labels: Labels) => matcher.matches(labels),
    toString: () => text,
  };
}
