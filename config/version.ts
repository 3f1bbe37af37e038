// The software version: package.json's, one for the CLI, the agent and the control plane,
// which ship as one package and one image.
import { readFileSync } from "node:fs";
import path from "node:path";
import { repoRoot } from "./install.js";

export const VERSION = (JSON.parse(readFileSync(path.join(repoRoot, "package.json"), "utf8")) as { version: string }).version;
