// gRPC calls that tests expect to be refused.
import * as grpc from "@grpc/grpc-js";

/** The status code's name and the details of a call that must fail; throws if it succeeds. */
export async function refusal(p: Promise<unknown>): Promise<{ code: string; details: string }> {
  try {
    await p;
  } catch (err) {
    const e = err as grpc.ServiceError;
    return { code: grpc.status[e.code] ?? String(e.code), details: e.details };
  }
  throw new Error("expected the call to be refused");
}
