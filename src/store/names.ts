/**
 * The name table of the local store: names (`localhost:5000/app:1`, `app:1`) to the manifest or
 * index descriptor they stand for, kept per namespace (ctr's `-n`, default `default`). One file
 * per name, `names/<namespace>/<sha256 of the name>.json`, written by atomic rename: two commands
 * naming different images never touch the same file, and two naming the same one leave the last
 * complete record (as a tag in a registry).
 */
import { createHash } from 'node:crypto';
import { readdir, readFile, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { EsgzError } from '../errors.js';
import type { Descriptor } from '../oci/types.js';
import { mkdirPrivate, writeFileAtomic } from './files.js';

export const DEFAULT_NAMESPACE = 'default';

/** containerd's namespace rule (namespaces.Validate): labels of [A-Za-z0-9] joined by '.', '_' or '-'. */
const NAMESPACE_PATTERN = /^[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*$/;
/** containerd caps a namespace at 76 characters. */
const MAX_NAMESPACE_LENGTH = 76;
/** A reference is at most 255 characters of name, a tag and a digest; names are kept to that. */
const MAX_NAME_LENGTH = 512;

export interface NameRecord<Extra = unknown> {
  name: string;
  /** The manifest or index the name stands for; its bytes are in the store's blobs. */
  target: Descriptor;
  createdAt: string;
  updatedAt: string;
  /** What a lazy pull (`image rpull`) records beside the name; absent for a fully stored image. */
  lazy?: Extra;
}

export function checkNamespace(namespace: string): string {
  if (namespace.length > MAX_NAMESPACE_LENGTH || !NAMESPACE_PATTERN.test(namespace))
    throw new EsgzError(
      'BAD_FLAG',
      `namespace "${namespace}": letters and digits joined by '.', '_' or '-', at most ${MAX_NAMESPACE_LENGTH}`,
    );
  return namespace;
}

export function checkName(name: string): string {
  if (name.length === 0 || name.length > MAX_NAME_LENGTH || /[\s\x00-\x1f\x7f]/.test(name))
    throw new EsgzError(
      'BAD_REFERENCE',
      `image name ${JSON.stringify(name)}: expected 1 to ${MAX_NAME_LENGTH} characters without spaces`,
    );
  return name;
}

export class NameTable {
  readonly dir: string;

  constructor(
    root: string,
    readonly namespace: string = DEFAULT_NAMESPACE,
  ) {
    this.dir = join(root, 'names', checkNamespace(namespace));
  }

  private path(name: string): string {
    return join(this.dir, `${createHash('sha256').update(checkName(name)).digest('hex')}.json`);
  }

  async get<Extra = unknown>(name: string): Promise<NameRecord<Extra> | undefined> {
    const text = await readFile(this.path(name), 'utf8').catch(() => undefined);
    if (text === undefined) return undefined;
    const record = parseRecord<Extra>(text);
    // A hash collision or a foreign file is not this name.
    return record?.name === name ? record : undefined;
  }

  /** Points `name` at `target` (keeping its creation time when it existed); `lazy` as rpull records it. */
  async put<Extra = unknown>(name: string, target: Descriptor, lazy?: Extra): Promise<NameRecord<Extra>> {
    const now = new Date().toISOString();
    const before = await this.get(name);
    const record: NameRecord<Extra> = {
      name,
      target: { mediaType: target.mediaType, digest: target.digest, size: target.size },
      createdAt: before?.createdAt ?? now,
      updatedAt: now,
      ...(lazy !== undefined ? { lazy } : {}),
    };
    await mkdirPrivate(this.dir);
    await writeFileAtomic(this.path(name), `${JSON.stringify(record, null, 2)}\n`);
    return record;
  }

  /** Removes a name; false when there was none. */
  async remove(name: string): Promise<boolean> {
    const path = this.path(name);
    const existed = await stat(path).then(
      () => true,
      () => false,
    );
    await rm(path, { force: true });
    return existed;
  }

  /** Every name of the namespace, sorted. */
  async list<Extra = unknown>(): Promise<Array<NameRecord<Extra>>> {
    const files = await readdir(this.dir).catch(() => [] as string[]);
    const out: Array<NameRecord<Extra>> = [];
    for (const file of files.filter((f) => /^[0-9a-f]{64}\.json$/.test(f))) {
      const record = parseRecord<Extra>(await readFile(join(this.dir, file), 'utf8').catch(() => ''));
      if (record) out.push(record);
    }
    return out.sort((a, b) => a.name.localeCompare(b.name));
  }
}

/** A record that does not parse is no name (and keeps nothing from prune). */
function parseRecord<Extra>(text: string): NameRecord<Extra> | undefined {
  try {
    const record = JSON.parse(text) as NameRecord<Extra>;
    return typeof record?.name === 'string' && typeof record.target?.digest === 'string' ? record : undefined;
  } catch {
    return undefined;
  }
}

/** The namespaces that hold names under `root`. */
export async function listNamespaces(root: string): Promise<string[]> {
  const entries = await readdir(join(root, 'names'), { withFileTypes: true }).catch(() => []);
  return entries
    .filter((e) => e.isDirectory() && NAMESPACE_PATTERN.test(e.name))
    .map((e) => e.name)
    .sort();
}
