// Query parameters of the UI's JSON API, parsed at the edge: every endpoint names the
// parameters it takes, and anything else (an unknown name, a repeat, a bad value) is a 400
// whose message names the parameter and the value.
import { isNamespaceName } from "../../kubernetes/names.js";

/** An API answer other than 200: status and a message for {"error": …}. */
export class ApiError extends Error {
  constructor(readonly status: number, message: string) {
    super(message);
    this.name = "ApiError";
  }
}

export const badParameter = (name: string, value: string, problem: string): ApiError =>
  new ApiError(400, `parameter ${name}: ${JSON.stringify(value)} ${problem}`);


/** The time windows the map, the flows and the details offer. */
export const WINDOWS: Readonly<Record<string, number>> = { "1m": 60_000, "5m": 5 * 60_000, "1h": 60 * 60_000 };
export type WindowName = "1m" | "5m" | "1h";

export interface Window {
  name: WindowName;
  ms: number;
}

/** The query of one request: only `known` names, each at most once unless `repeatable` says so. */
export class Query {
  private constructor(private readonly params: URLSearchParams) {}

  static parse(params: URLSearchParams, known: readonly string[], repeatable: (name: string) => boolean = () => false): Query {
    const seen = new Set<string>();
    for (const [name, value] of params) {
      if (!known.includes(name)) {
        throw new ApiError(400, `unknown parameter ${JSON.stringify(name)} (this endpoint takes: ${known.join(", ") || "none"})`);
      }
      if (seen.has(name) && !repeatable(name)) throw badParameter(name, value, "is given more than once");
      seen.add(name);
    }
    return new Query(params);
  }

  get(name: string): string | undefined {
    return this.params.get(name) ?? undefined;
  }

  entries(): [string, string][] {
    return [...this.params];
  }

  /** "" means every namespace: absent. An empty value is refused rather than read as "all". */
  namespace(): string {
    const value = this.get("namespace");
    if (value === undefined) return "";
    if (!isNamespaceName(value)) {
      throw badParameter("namespace", value, "is not a namespace name (leave the parameter out for all namespaces)");
    }
    return value;
  }

  window(): Window {
    const value = this.get("window") ?? "5m";
    const ms = WINDOWS[value];
    if (ms === undefined) throw badParameter("window", value, `is not one of ${Object.keys(WINDOWS).join(", ")}`);
    return { name: value as WindowName, ms };
  }

  limit(fallback: number, max: number): number {
    const value = this.get("limit");
    if (value === undefined) return fallback;
    if (!/^[0-9]+$/.test(value) || Number(value) < 1 || Number(value) > max) {
      throw badParameter("limit", value, `is not a whole number from 1 to ${max}`);
    }
    return Number(value);
  }
}
