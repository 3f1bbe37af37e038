// A metadata source over a folder of Kubernetes manifests (*.yaml, *.yml, *.json;
// multi-document YAML; `kind: List`), as the lab writes its cluster state and as a
// ConfigMap-mounted folder would look in a cluster.
//
// fs.watch can miss events (and says nothing about renames into place on some systems),
// so the folder is also rescanned on a timer; a file is re-read only when its inode, size,
// mtime or ctime changed. Each file keeps its last good set of objects: a write that does
// not parse, or has one invalid document, is reported through errors() and changes
// nothing, so a bad edit never deletes pods from the cluster model.
import { watch, type BigIntStats, type FSWatcher } from "node:fs";
import { readdir, readFile, stat } from "node:fs/promises";
import path from "node:path";
import { parseAllDocuments } from "yaml";
import { KIND_APPLY_ORDER, objectFingerprint, objectKey, objectName, parseDocument, type KubeObject } from "./objects.js";
import type { MetadataError, MetadataSink, MetadataSource, ObjectEvent } from "./source.js";

export interface FolderSourceOptions {
  dir: string;
  /** Defaults to "folder:<dir>". */
  name?: string;
  /** Full rescan period; default 500 ms, so a change fs.watch missed shows within a second. */
  rescanIntervalMs?: number;
  /** Wall-clock ns for observedAtNs; injectable for tests. */
  now?: () => bigint;
  /** Called whenever the set of errors() changes, so the caller can log it. */
  onErrorsChanged?: (errors: MetadataError[]) => void;
}

interface ParsedObject {
  object: KubeObject;
  /** Equal fingerprints mean no change to emit. */
  fingerprint: string;
  document: number;
}

interface FileState {
  /** inode, size, mtime, ctime of the version last read. */
  signature: string;
  /** Last good objects by objectKey. */
  objects: Map<string, ParsedObject>;
  errors: MetadataError[];
}

interface Emitted {
  object: KubeObject;
  fingerprint: string;
  file: string;
}

const MANIFEST_EXTENSIONS = [".yaml", ".yml", ".json"];
/** fs.watch fires several events per write; one scan covers them all. */
const WATCH_DEBOUNCE_MS = 20;
/** Scans in a row that may find the folder changed under them before one applies what it read anyway. */
const MAX_UNSETTLED_SCANS = 5;


/** A file's version as far as a rescan can tell: inode, size, mtime, ctime. */
function signatureOf(s: BigIntStats): string {
  return `${s.ino}:${s.size}:${s.mtimeNs}:${s.ctimeNs}`;
}

/** Hidden files (editor swap files, a ConfigMap volume's ..data) and temp files are not manifests. */
export function isManifestFile(name: string): boolean {
  return !name.startsWith(".") && MANIFEST_EXTENSIONS.some((ext) => name.endsWith(ext));
}

export class FolderSource implements MetadataSource {
  readonly name: string;
  private readonly dir: string;
  private readonly rescanIntervalMs: number;
  private readonly now: () => bigint;
  private readonly onErrorsChanged: ((errors: MetadataError[]) => void) | undefined;

  private sink: MetadataSink | undefined;
  private readonly files = new Map<string, FileState>();
  private emitted = new Map<string, Emitted>();
  private folderError: string | undefined;
  private internalError: string | undefined;
  private duplicateErrors: MetadataError[] = [];
  private currentErrors: MetadataError[] = [];

  private watcher: FSWatcher | undefined;
  private watchedDirIno: bigint | undefined;
  private timer: NodeJS.Timeout | undefined;
  private debounce: NodeJS.Timeout | undefined;
  private scanning: Promise<void> | undefined;
  private scanAgain = false;
  private stopped = false;
  /** Files were read whose objects are not applied yet: the scan that read them saw the folder change. */
  private unapplied = false;
  /** Scans in a row that saw the folder change while they read it. */
  private unsettledScans = 0;

  constructor(options: FolderSourceOptions) {
    this.dir = path.resolve(options.dir);
    this.name = options.name ?? `folder:${this.dir}`;
    this.rescanIntervalMs = options.rescanIntervalMs ?? 500;
    this.now = options.now ?? (() => BigInt(Date.now()) * 1_000_000n);
    this.onErrorsChanged = options.onErrorsChanged;
  }

  async start(sink: MetadataSink): Promise<void> {
    if (this.sink) throw new Error(`${this.name}: already started`);
    this.sink = sink;
    // The first scan's sink errors reach the caller; later ones become errors().
    await this.scan(true);
    if (this.stopped) return;
    this.timer = setInterval(() => this.requestScan(), this.rescanIntervalMs);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    if (this.debounce) clearTimeout(this.debounce);
    this.timer = undefined;
    this.debounce = undefined;
    this.closeWatcher();
    await this.scanning;
  }

  errors(): MetadataError[] {
    return this.currentErrors.map((e) => ({ ...e }));
  }

  /** Scans now (after any scan in progress); resolves when the folder's state is applied. */
  async rescan(): Promise<void> {
    this.requestScan();
    while (this.scanning) await this.scanning;
  }

  private requestScan(): void {
    if (this.stopped) return;
    if (this.scanning) {
      this.scanAgain = true;
      return;
    }
    this.scan(false).catch((err: unknown) => {
      // Every expected failure is caught below; this is a bug, kept visible rather than fatal.
      this.internalError = `folder scan failed: ${err instanceof Error ? err.message : String(err)}`;
      this.publishErrors();
    });
  }

  private scan(initial: boolean): Promise<void> {
    const run = async (): Promise<void> => {
      try {
        do {
          this.scanAgain = false;
          await this.scanOnce(initial);
        } while (this.scanAgain && !this.stopped);
      } finally {
        this.scanning = undefined;
      }
    };
    this.scanning = run();
    return this.scanning;
  }

  private async scanOnce(initial: boolean): Promise<void> {
    let changed = false;
    let names: string[] = [];
    let folderError: string | undefined;
    try {
      names = (await readdir(this.dir)).filter(isManifestFile).sort();
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== "ENOENT") {
        // Unreadable for now (permissions, I/O): keep every object rather than delete the cluster.
        this.setFolderError(`cannot read folder ${this.dir}: ${(err as Error).message}`);
        return;
      }
      // A removed folder is an empty cluster (the lab removes it on `lab down`).
      folderError = `folder ${this.dir} does not exist`;
      this.closeWatcher();
    }
    if (folderError === undefined) await this.ensureWatcher();
    const present = new Set(names);
    for (const name of [...this.files.keys()]) {
      if (!present.has(name)) {
        this.files.delete(name);
        changed = true;
      }
    }
    for (const name of names) {
      if (this.stopped) return;
      if (await this.readManifest(name)) changed = true;
    }
    if (this.stopped) return;
    if (changed) this.unapplied = true;
    // The files were read one after another after the listing: one created, replaced or
    // removed meanwhile would make a state the folder never held (a namespace's new mode
    // read without the policy written before it). Such a scan applies nothing and scans
    // again, unless the folder has not been still for MAX_UNSETTLED_SCANS scans in a row.
    if (this.unapplied) {
      if (folderError !== undefined || ++this.unsettledScans >= MAX_UNSETTLED_SCANS || await this.unchangedSince(names)) {
        this.emitDifferences(initial);
        this.unapplied = false;
        this.unsettledScans = 0;
      } else {
        this.scanAgain = true;
      }
    }
    this.folderError = folderError;
    this.publishErrors();
  }

  /** Whether the folder still lists exactly `names`, each file as it was last read. */
  private async unchangedSince(names: string[]): Promise<boolean> {
    let now: string[];
    try {
      now = (await readdir(this.dir)).filter(isManifestFile).sort();
    } catch {
      return false;
    }
    if (now.length !== names.length || now.some((name, i) => name !== names[i])) return false;
    for (const name of names) {
      const read = this.files.get(name)?.signature;
      if (read === undefined) return false; // listed, but not read yet (it was being written)
      if (read === "") continue; // not readable: only its error is reported
      try {
        const s = await stat(path.join(this.dir, name), { bigint: true });
        if (signatureOf(s) !== read) return false;
      } catch {
        return false;
      }
    }
    return true;
  }

  /** Re-reads one file if it changed; true when its objects or errors changed. */
  private async readManifest(name: string): Promise<boolean> {
    const file = path.join(this.dir, name);
    const previous = this.files.get(name);
    let signature: string;
    let text: string;
    try {
      const before = await stat(file, { bigint: true });
      if (!before.isFile()) return this.forget(name);
      signature = signatureOf(before);
      if (previous?.signature === signature) return false;
      text = await readFile(file, "utf8");
      const after = await stat(file, { bigint: true });
      if (signatureOf(after) !== signature) {
        // Written while we read it: read the settled version a moment later.
        this.onWatchEvent();
        return false;
      }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return this.forget(name);
      const state = previous ?? { signature: "", objects: new Map(), errors: [] };
      state.signature = "";
      state.errors = [{ source: this.name, file: name, message: `cannot read: ${(err as Error).message}` }];
      this.files.set(name, state);
      return true;
    }
    const parsed = parseManifestText(this.name, name, text);
    const state = previous ?? { signature, objects: new Map(), errors: [] };
    state.signature = signature;
    if (parsed.errors.length > 0) {
      state.errors = parsed.errors;
    } else {
      state.objects = parsed.objects;
      state.errors = [];
    }
    this.files.set(name, state);
    return true;
  }

  private forget(name: string): boolean {
    return this.files.delete(name);
  }

  /**
   * Merges every file's last good objects and sends the sink what differs from what it was
   * sent before. An object defined in two files is taken from the file that had it first
   * (else the first file by name); the other copy is reported.
   */
  private emitDifferences(initial: boolean): void {
    const desired = new Map<string, Emitted & { document: number }>();
    const duplicates: MetadataError[] = [];
    for (const file of [...this.files.keys()].sort()) {
      const state = this.files.get(file);
      if (!state) continue;
      for (const [key, parsed] of state.objects) {
        const candidate = { object: parsed.object, fingerprint: parsed.fingerprint, file, document: parsed.document };
        const holder = desired.get(key);
        if (!holder) {
          desired.set(key, candidate);
          continue;
        }
        const keepHolder = this.emitted.get(key)?.file !== file;
        const [kept, ignored] = keepHolder ? [holder, candidate] : [candidate, holder];
        desired.set(key, kept);
        duplicates.push({
          source: this.name,
          file: ignored.file,
          document: ignored.document,
          message: `${objectName(ignored.object)} is also defined in ${kept.file} (document ${kept.document}); this copy is ignored`,
        });
      }
    }
    this.duplicateErrors = duplicates;

    const deletes: ObjectEvent[] = [];
    const upserts: ObjectEvent[] = [];
    for (const [key, old] of this.emitted) {
      if (!desired.has(key)) deletes.push({ type: "delete", object: old.object });
    }
    for (const [key, next] of desired) {
      if (this.emitted.get(key)?.fingerprint !== next.fingerprint) upserts.push({ type: "upsert", object: next.object });
    }
    this.emitted = new Map([...desired].map(([key, d]) => [key, { object: d.object, fingerprint: d.fingerprint, file: d.file }]));
    if (deletes.length === 0 && upserts.length === 0) return;
    deletes.sort((a, b) => KIND_APPLY_ORDER[b.object.kind] - KIND_APPLY_ORDER[a.object.kind]);
    upserts.sort((a, b) => KIND_APPLY_ORDER[a.object.kind] - KIND_APPLY_ORDER[b.object.kind]);
    const events = [...deletes, ...upserts];
    const sink = this.sink;
    if (!sink) return;
    if (initial) {
      sink.apply(events, this.now());
      return;
    }
    try {
      sink.apply(events, this.now());
      this.internalError = undefined;
    } catch (err) {
      // A sink that throws has a bug; keep watching and make it visible.
      this.internalError = `the metadata sink rejected ${events.length} change(s): ${(err as Error).message}`;
    }
  }

  private setFolderError(message: string): void {
    this.folderError = message;
    this.publishErrors();
  }

  private publishErrors(): void {
    const errors: MetadataError[] = [];
    if (this.folderError !== undefined) errors.push({ source: this.name, message: this.folderError });
    if (this.internalError !== undefined) errors.push({ source: this.name, message: this.internalError });
    const perFile = [...this.files.entries()].sort(([a], [b]) => a.localeCompare(b)).flatMap(([, s]) => s.errors);
    errors.push(...perFile, ...this.duplicateErrors);
    errors.sort((a, b) => (a.file ?? "").localeCompare(b.file ?? "") || (a.document ?? -1) - (b.document ?? -1));
    if (JSON.stringify(errors) === JSON.stringify(this.currentErrors)) return;
    this.currentErrors = errors;
    this.onErrorsChanged?.(this.errors());
  }

  private async ensureWatcher(): Promise<void> {
    try {
      const dirIno = (await stat(this.dir, { bigint: true })).ino;
      // A folder removed and created again is a new inode; the old watcher sees nothing.
      if (this.watcher && this.watchedDirIno === dirIno) return;
      this.closeWatcher();
      if (this.stopped) return;
      const watcher = watch(this.dir, { persistent: true }, () => this.onWatchEvent());
      watcher.on("error", () => this.closeWatcher());
      this.watcher = watcher;
      this.watchedDirIno = dirIno;
    } catch {
      // The rescan timer still finds every change, only later; the next scan tries again.
    }
  }

  private onWatchEvent(): void {
    if (this.stopped || this.debounce) return;
    this.debounce = setTimeout(() => {
      this.debounce = undefined;
      this.requestScan();
    }, WATCH_DEBOUNCE_MS);
  }

  private closeWatcher(): void {
    this.watcher?.close();
    this.watcher = undefined;
    this.watchedDirIno = undefined;
  }
}

/**
 * The objects of one manifest file by objectKey, or the reasons it cannot be used. Any
 * error makes the whole file unusable, so that its last good version stays in force.
 */
export function parseManifestText(
  source: string,
  file: string,
  text: string,
): { objects: Map<string, ParsedObject>; errors: MetadataError[] } {
  const errors: MetadataError[] = [];
  const objects = new Map<string, ParsedObject>();
  const documents: { index: number; value: unknown }[] = [];
  if (file.endsWith(".json")) {
    try {
      documents.push({ index: 0, value: JSON.parse(text) as unknown });
    } catch (err) {
      errors.push({ source, file, document: 0, message: `not valid JSON: ${(err as Error).message}` });
    }
  } else {
    parseAllDocuments(text).forEach((doc, index) => {
      if (doc.errors.length > 0) {
        const message = doc.errors.map((e) => e.message.split("\n")[0]).join("; ");
        errors.push({ source, file, document: index, message: `not valid YAML: ${message}` });
        return;
      }
      try {
        documents.push({ index, value: doc.toJS() as unknown });
      } catch (err) {
        errors.push({ source, file, document: index, message: `not valid YAML: ${(err as Error).message}` });
      }
    });
  }
  for (const { index, value } of documents) {
    // An empty document (a trailing `---`, only comments) holds nothing.
    if (value === null || value === undefined) continue;
    let parsed: KubeObject[];
    try {
      parsed = parseDocument(value);
    } catch (err) {
      errors.push({ source, file, document: index, message: (err as Error).message });
      continue;
    }
    for (const object of parsed) {
      const key = objectKey(object);
      const other = objects.get(key);
      if (other) {
        errors.push({ source, file, document: index, message: `${objectName(object)} is defined twice in this file (also document ${other.document})` });
        continue;
      }
      objects.set(key, { object, fingerprint: objectFingerprint(object), document: index });
    }
  }
  return { objects, errors };
}
