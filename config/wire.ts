// Message size limits of the agent stream, shared by both ends so that they agree.

/** Agent → control plane: any single message above this is refused (the agent batches far below it). */
export const MAX_MESSAGE_BYTES = 16 * 1024 * 1024;

/**
 * Control plane → agent: a policy snapshot is one message. 10,000 pods under 2,000
 * policies (bench/policy-compile.ts's cluster, doubled) encode to 3.5 MB, close to grpc's
 * default 4 MiB receive limit, which is why both ends set this one explicitly.
 */
export const MAX_POLICY_MESSAGE_BYTES = 64 * 1024 * 1024;
