// Where the Kubernetes API source's credentials come from, chosen from flags and the
// environment. Apart from kubernetes-client.ts so that parsing the control plane's flags
// does not load @kubernetes/client-node (about a CPU-second), which a folder source never uses.
import os from "node:os";
import path from "node:path";

/** Where the API server and credentials come from. */
export type KubeConnection =
  | { kind: "in-cluster" }
  | { kind: "kubeconfig"; path: string };

/**
 * The connection a control plane without --kubeconfig uses: in-cluster when
 * KUBERNETES_SERVICE_HOST is set (as in every pod), else $KUBECONFIG (its first file), else
 * ~/.kube/config, as kubectl does.
 */
export function defaultKubeConnection(env: NodeJS.ProcessEnv = process.env): KubeConnection {
  if (env.KUBERNETES_SERVICE_HOST) return { kind: "in-cluster" };
  const fromEnv = env.KUBECONFIG?.split(path.delimiter).find((p) => p !== "");
  return { kind: "kubeconfig", path: path.resolve(fromEnv ?? path.join(os.homedir(), ".kube", "config")) };
}

export function describeKubeConnection(connection: KubeConnection): string {
  return connection.kind === "in-cluster" ? "in-cluster service account" : `kubeconfig ${connection.path}`;
}
