// The what-if panel: a draft (pasted, or read from a file) POSTed to the control plane's
// policy/what-if, which replays the view's recorded flows against it; the edges whose verdict
// would change get a halo on the map (graph.ts setWhatIf) and a row each in the list, with
// their records and packets. A bad draft shows the server's message, which names the
// document and field. Suggestions: the least-privilege policies learned for the selected
// namespace over the view's time, each rule with the flows that justify it, and buttons that
// load one or all of them into the draft.
import { apiJson, apiPost } from "./api.js";
import type { MapView, WhatIfMark } from "./graph.js";
import type { SuggestionsJson, WhatIfEdgeJson, WhatIfJson } from "./types.js";

export interface WhatIfElements {
  form: HTMLFormElement;
  draft: HTMLTextAreaElement;
  file: HTMLInputElement;
  clear: HTMLButtonElement;
  error: HTMLElement;
  summary: HTMLElement;
  rows: HTMLElement;
  suggest: HTMLButtonElement;
  suggestError: HTMLElement;
  suggestions: HTMLElement;
}

export interface WhatIfContext {
  view: MapView;
  /** The view's namespace and time parameters: the replay covers what the map shows. */
  query(): URLSearchParams;
  /** "shop/web (Deployment)" for a map node id. */
  describe(id: string): string;
  announce(text: string): void;
}

const CHANGE_TEXT: Readonly<Record<WhatIfMark, string>> = { denied: "would be denied", allowed: "newly allowed", verdict: "verdict changes" };

const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? "" : "s"}`;

export class WhatIfPanel {
  private fileName = "draft.yaml";
  private abort: AbortController | undefined;
  private result: WhatIfJson | undefined;

  private suggestAbort: AbortController | undefined;

  constructor(private readonly el: WhatIfElements, private readonly context: WhatIfContext) {
    el.suggest.addEventListener("click", () => void this.suggest());
    el.form.addEventListener("submit", (e) => { e.preventDefault(); void this.run(); });
    el.clear.addEventListener("click", () => this.clear());
    el.draft.addEventListener("input", () => { this.fileName = "draft.yaml"; });
    el.file.addEventListener("change", () => void this.readFile());
  }

  /** The last answer (for the page's hooks). */
  get last(): WhatIfJson | undefined {
    return this.result;
  }

  private async readFile(): Promise<void> {
    const file = this.el.file.files?.[0];
    if (!file) return;
    this.el.draft.value = await file.text();
    // The server reads .json as JSON, anything else as YAML; other characters are not a file name to it.
    this.fileName = file.name.replace(/[^A-Za-z0-9._-]/g, "_").slice(0, 100) || "draft.yaml";
    this.el.error.textContent = "";
  }

  async run(): Promise<void> {
    this.abort?.abort();
    const abort = new AbortController();
    this.abort = abort;
    const q = this.context.query();
    q.set("name", this.fileName);
    this.el.error.textContent = "";
    this.el.summary.textContent = "Replaying the recorded flows against the draft…";
    this.el.summary.dataset.state = "running";
    try {
      const result = await apiPost<WhatIfJson>("policy/what-if", q, this.el.draft.value, abort.signal);
      if (abort.signal.aborted) return;
      this.show(result);
    } catch (err) {
      if (abort.signal.aborted) return;
      this.reset();
      this.el.error.textContent = (err as Error).message;
      this.el.summary.dataset.state = "error";
      this.context.announce(`What-if failed: ${(err as Error).message.split("\n")[0]}`);
    }
  }

  clear(): void {
    this.abort?.abort();
    this.reset();
    this.el.error.textContent = "";
  }

  /** Suggestions for the view's namespace and time: each policy with its justifying flows and a button that loads it. */
  async suggest(): Promise<void> {
    this.suggestAbort?.abort();
    const abort = new AbortController();
    this.suggestAbort = abort;
    const q = this.context.query();
    this.el.suggestError.textContent = "";
    this.el.suggestions.replaceChildren();
    if (!q.has("namespace")) {
      this.el.suggestError.textContent = "Pick a namespace: policies are suggested for one namespace.";
      return;
    }
    this.el.suggestions.dataset.state = "running";
    try {
      const s = await apiJson<SuggestionsJson>("policy/suggest", q, abort.signal);
      if (abort.signal.aborted) return;
      this.showSuggestions(s);
    } catch (err) {
      if (abort.signal.aborted) return;
      this.el.suggestions.dataset.state = "error";
      this.el.suggestError.textContent = (err as Error).message;
    }
  }

  private load(yaml: string, what: string): void {
    this.el.draft.value = yaml;
    this.fileName = "draft.yaml";
    this.el.error.textContent = "";
    this.el.draft.focus();
    this.context.announce(`Loaded ${what} as the draft: "Replay on the map" shows what it would change.`);
  }

  private showSuggestions(s: SuggestionsJson): void {
    const out = this.el.suggestions;
    out.dataset.state = "done";
    out.dataset.policies = String(s.policies.length);
    const summary = document.createElement("p");
    summary.dataset.testid = "suggest-summary";
    const policies = s.policies.length === 1 ? "1 policy" : `${s.policies.length} policies`;
    summary.textContent = `${policies} for ${s.namespace}, learned from ${plural(s.records, "recorded flow")} over ${s.window}.`
      + (s.notes.length > 0 ? ` Notes: ${s.notes.join("; ")}` : "");
    const all = document.createElement("button");
    all.type = "button";
    all.dataset.testid = "suggest-load-all";
    all.textContent = "Load all as draft";
    all.addEventListener("click", () => this.load(s.policies.map((p) => p.yaml).join("---\n"), `${s.policies.length} suggested policies`));
    out.append(summary, all);
    for (const p of s.policies) {
      const article = document.createElement("article");
      article.dataset.testid = "suggestion";
      article.dataset.name = p.name;
      const h = document.createElement("h3");
      h.textContent = `${p.namespace}/${p.name}`;
      const load = document.createElement("button");
      load.type = "button";
      load.dataset.testid = "suggestion-load";
      load.textContent = "Load as draft";
      load.addEventListener("click", () => this.load(p.yaml, `${p.namespace}/${p.name}`));
      article.append(h, load);
      if (p.justification.length > 0) {
        const table = document.createElement("table");
        table.setAttribute("aria-label", `Flows justifying ${p.name}`);
        const head = document.createElement("thead");
        head.innerHTML = '<tr><th scope="col">Rule</th><th scope="col">Peer</th><th scope="col">Ports</th><th scope="col" class="number">Records</th><th scope="col" class="number">Packets</th></tr>';
        const body = document.createElement("tbody");
        for (const j of p.justification) {
          const tr = document.createElement("tr");
          tr.dataset.testid = "justification-row";
          tr.dataset.rule = j.rule;
          tr.dataset.peer = j.peer;
          const cells = [j.rule, j.peer === "dns" ? "DNS (kube-dns)" : this.context.describe(j.peer), j.ports.join(", "), String(j.records), String(j.packets)];
          tr.append(...cells.map((text, i) => {
            const td = document.createElement(i === 0 ? "th" : "td");
            td.textContent = text;
            if (i >= 3) td.className = "number";
            if (i === 1 || i === 4) td.title = `first seen ${j.firstSeen}, last seen ${j.lastSeen}`;
            return td;
          }));
          body.append(tr);
        }
        table.append(head, body);
        article.append(table);
      }
      out.append(article);
    }
  }

  private reset(): void {
    this.result = undefined;
    this.context.view.setWhatIf(new Map());
    this.el.rows.replaceChildren();
    this.el.summary.textContent = "";
    delete this.el.summary.dataset.state;
    for (const k of ["denied", "allowed", "verdict", "records", "replayed", "onMap"]) delete this.el.summary.dataset[k];
  }

  private show(result: WhatIfJson): void {
    this.result = result;
    const marks = new Map<string, WhatIfMark>();
    for (const e of result.edges) marks.set(e.id, e.change);
    this.context.view.setWhatIf(marks);
    const count = (c: WhatIfMark) => result.edges.filter((e) => e.change === c);
    const denied = count("denied"), allowed = count("allowed"), verdict = count("verdict");
    const records = (edges: WhatIfEdgeJson[]) => edges.reduce((n, e) => n + e.records, 0);
    const onMap = result.edges.filter((e) => this.context.view.edges.has(e.id)).length;
    const s = this.el.summary;
    s.dataset.state = "done";
    s.dataset.denied = String(denied.length);
    s.dataset.allowed = String(allowed.length);
    s.dataset.verdict = String(verdict.length);
    s.dataset.records = String(result.records);
    s.dataset.replayed = String(result.replayed);
    s.dataset.onMap = String(onMap);
    const parts = [`${plural(denied.length, "edge")} would be denied (${plural(records(denied), "record")})`,
      `${plural(allowed.length, "edge")} newly allowed (${plural(records(allowed), "record")})`];
    if (verdict.length > 0) parts.push(`${plural(verdict.length, "edge")} change verdict only (${plural(records(verdict), "record")})`);
    const off = result.edges.length - onMap;
    // A connection is replayed from the end that judged it: its other end's records are not replayed.
    s.textContent = `${parts.join(", ")}; ${result.replayed} of ${plural(result.records, "recorded flow")} over ${result.window} replayed (the ends that judged them).`
      + (off > 0 ? ` ${off} of them ${off === 1 ? "is" : "are"} not on this map (another namespace or window).` : "")
      + (result.notes.length > 0 ? ` Notes: ${result.notes.join("; ")}` : "");
    this.el.rows.replaceChildren(...result.edges.map((e) => this.row(e)));
    this.context.announce(`What-if: ${parts.join(", ")}.`);
  }

  private row(e: WhatIfEdgeJson): HTMLTableRowElement {
    const tr = document.createElement("tr");
    tr.dataset.testid = "whatif-row";
    tr.dataset.edgeId = e.id;
    tr.dataset.change = e.change;
    const th = document.createElement("th");
    th.scope = "row";
    const text = `${this.context.describe(e.source)} → ${this.context.describe(e.destination)}, ${e.protocol}/${e.port}`;
    if (this.context.view.edges.has(e.id)) {
      const b = document.createElement("button");
      b.type = "button";
      b.className = "link";
      b.textContent = text;
      b.addEventListener("click", () => this.context.view.select(e.id));
      th.append(b);
    } else {
      th.textContent = `${text} (not on this map)`;
    }
    const td = (t: string, className = "", title = "") => {
      const c = document.createElement("td");
      c.textContent = t;
      if (className) c.className = className;
      if (title) c.title = title;
      return c;
    };
    const decides = (side: string, s: WhatIfEdgeJson["egress"]) =>
      `${side}: ${s.allowed ? `allowed by ${s.allowedBy.join(", ") || s.exemption || "no isolation"}` : `denied (isolated by ${s.isolatedBy.join(", ")})`}`;
    tr.append(th, td(CHANGE_TEXT[e.change], `change ${e.change}`, `${decides("egress", e.egress)}; ${decides("ingress", e.ingress)}`),
      td(`${e.before} → ${e.after}`, "verdict"), td(String(e.records), "number"), td(String(e.packets), "number"));
    return tr;
  }
}
