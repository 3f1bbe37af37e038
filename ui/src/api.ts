// Every request to the control plane goes through apiFetch, the one place that can add
// credentials (an Authorization header) to API calls, the event stream included: the
// stream is read with fetch() and a body reader rather than EventSource, which cannot
// send headers.

/** Set by whoever knows the user's credentials; undefined sends none. */
let authorization: string | undefined;

export function setAuthorization(value: string | undefined): void {
  authorization = value;
}

let unauthorized: (message: string) => void = () => undefined;

/** Called on every 401 (no token, or one the server does not know), so the page can ask for one. */
export function onUnauthorized(listener: (message: string) => void): void {
  unauthorized = listener;
}

export class ApiRequestError extends Error {
  constructor(readonly status: number, message: string) {
    super(message);
  }
}

/** The one client function: GET /api/v1/<path> with the query (or POST `body`, a draft), credentials added. */
export async function apiFetch(path: string, query: URLSearchParams | undefined, signal?: AbortSignal, accept = "application/json", body?: string): Promise<Response> {
  const headers: Record<string, string> = { accept };
  if (authorization !== undefined) headers.authorization = authorization;
  const qs = query && [...query].length > 0 ? `?${query.toString()}` : "";
  const init: RequestInit = { headers, cache: "no-store" };
  if (body !== undefined) {
    init.method = "POST";
    init.body = body;
    headers["content-type"] = "application/yaml; charset=utf-8";
  }
  if (signal) init.signal = signal;
  return checked(await fetch(`api/v1/${path}${qs}`, init));
}

/** The response, or its error (a 401 also to onUnauthorized). */
async function checked(response: Response): Promise<Response> {
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try {
      const body = (await response.json()) as { error?: unknown };
      if (typeof body.error === "string") message = body.error;
    } catch { /* not JSON */ }
    if (response.status === 401) unauthorized(message);
    throw new ApiRequestError(response.status, message);
  }
  return response;
}

export async function apiJson<T>(path: string, query?: URLSearchParams, signal?: AbortSignal): Promise<T> {
  return (await (await apiFetch(path, query, signal)).json()) as T;
}

/** POSTs `body` to /api/v1/<path>; the JSON answer. */
export async function apiPost<T>(path: string, query: URLSearchParams, body: string, signal?: AbortSignal): Promise<T> {
  return (await (await apiFetch(path, query, signal, "application/json", body)).json()) as T;
}

export interface ServerEvent {
  event: string;
  data: unknown;
}

/**
 * Reads server-sent events from /api/v1/<path> until the stream ends or `signal` aborts;
 * resolves when it ends, rejects on a network or HTTP error.
 */
export async function readEvents(path: string, query: URLSearchParams, signal: AbortSignal, onEvent: (e: ServerEvent) => void): Promise<void> {
  const response = await (takeEarlyStream(path, query, signal) ?? apiFetch(path, query, signal, "text/event-stream"));
  if (!response.body) throw new Error("the event stream has no body");
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    for (let end = buffer.indexOf("\n\n"); end !== -1; end = buffer.indexOf("\n\n")) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = "message";
      const data: string[] = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event: ")) event = line.slice(7);
        else if (line.startsWith("data: ")) data.push(line.slice(6));
      }
      if (data.length > 0) onEvent({ event, data: JSON.parse(data.join("\n")) as unknown });
    }
  }
}

/** A stream the page's inline script (index.html) started before this bundle ran. */
interface EarlyStream {
  path: string;
  authorization: string | undefined;
  abort: AbortController;
  response: Promise<Response>;
}

declare global {
  interface Window {
    bulkheadEarlyStream?: EarlyStream;
  }
}

/**
 * The early stream's response, once, if it is the one asked for (same path, query and
 * credentials); otherwise it is aborted and the caller fetches its own.
 */
function takeEarlyStream(path: string, query: URLSearchParams, signal: AbortSignal): Promise<Response> | undefined {
  const early = window.bulkheadEarlyStream;
  if (!early) return undefined;
  window.bulkheadEarlyStream = undefined;
  if (early.path !== `${path}?${query.toString()}` || early.authorization !== authorization || signal.aborted) {
    early.abort.abort();
    return undefined;
  }
  signal.addEventListener("abort", () => early.abort.abort(), { once: true });
  return early.response.then(checked);
}
