// Limits both ends of the wire share, so that they agree: message sizes of the agent stream, windows of the Observer API.

/** The agent stream's protocol version this build's agent speaks (`bulkhead version` prints it). */
export const PROTOCOL_VERSION = 2;

/** Agent → control plane: any single message above this is refused (the agent batches far below it). */
export const MAX_MESSAGE_BYTES = 16 * 1024 * 1024;

/**
 * Control plane → agent: a policy snapshot is one message. 10,000 pods under 2,000
 * policies (bench/policy-compile.ts's cluster, doubled) encode to 3.5 MB, close to grpc's
 * default 4 MiB receive limit, which is why both ends set this one explicitly.
 */
export const MAX_POLICY_MESSAGE_BYTES = 64 * 1024 * 1024;

/** GetFlowMap's window: the live maps reach back an hour; with a durable store, up to 366 days. */
export const MAX_LIVE_MAP_WINDOW_MS = 60 * 60 * 1000;
export const MAX_STORED_MAP_WINDOW_MS = 366 * 24 * MAX_LIVE_MAP_WINDOW_MS;
