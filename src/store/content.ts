/**
 * The content store under the state root (default /var/lib/esgz, `--root`), shared by every
 * command that keeps images locally (`image pull`, the `local:` transport, `image rpull`):
 *
 *   blobs/sha256/<hex>          content by digest: written to a temp name while its digest is
 *                               checked, then renamed, so a blob name never holds a partial or wrong blob
 *   names/<namespace>/<h>.json  names to manifest/index descriptors (names.ts)
 *   pins/<tag>.json             what a live command is writing or using, so prune keeps it
 *   lock/owner                  held while pins change and by prune for all its work
 *
 * Nothing here is reachable by other local users (0700 directories, 0600 files: files.ts).
 */
import { createHash, randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, readdir, readFile, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { EsgzError } from '../errors.js';
import { identityAlive, processIdentity } from '../host/process.js';
import { DigestVerifier } from '../oci/digest.js';
import { MAX_MANIFEST_BYTES } from '../oci/limits.js';
import type { Descriptor } from '../oci/types.js';
import {
  DEFAULT_STATE_ROOT,
  isDeadTemp,
  mkdirPrivate,
  PRIVATE_DIR_MODE,
  PRIVATE_FILE_MODE,
  TEMP_NAME,
  replaceAtomically,
  tempTag,
  writeFileAtomic,
} from './files.js';
import { DEFAULT_NAMESPACE, listNamespaces, NameTable } from './names.js';

/** How long a command waits for another one's state-root lock before giving up. */
const LOCK_WAIT_MS = 120_000;

/** What a live command uses or is writing: prune keeps these whether or not a name refers to them. */
export interface Pin {
  owner: string;
  /** Lazy layers, with size and TOC digest, so prune can re-open a stored TOC to keep its chunks. */
  layers: Array<{ digest: string; size: number; tocDigest?: string }>;
  blobs: string[];
}

/** The hex of a sha256 digest (the only algorithm the store keeps); anything else is refused. */
export function sha256Hex(digest: string): string {
  const m = /^sha256:([0-9a-f]{64})$/.exec(digest);
  if (!m) throw new EsgzError('BAD_FORMAT', `unsupported digest ${JSON.stringify(digest)} (only sha256)`);
  return m[1]!;
}

export class ContentStore {
  constructor(readonly root: string = DEFAULT_STATE_ROOT) {}

  blobPath(digest: string): string {
    return join(this.root, 'blobs', 'sha256', sha256Hex(digest));
  }

  protected pinsDir(): string {
    return join(this.root, 'pins');
  }

  /** The names of one namespace (ctr's `-n`). */
  names(namespace: string = DEFAULT_NAMESPACE): NameTable {
    return new NameTable(this.root, namespace);
  }

  /** Creates the store's skeleton 0700 (or closes an existing one to 0700 again). */
  protected async makeDirs(dirs: readonly string[]): Promise<void> {
    for (const d of dirs) {
      await mkdirPrivate(join(this.root, d)).catch((err: NodeJS.ErrnoException) => {
        throw new EsgzError('RUNTIME', `cannot create the state root ${this.root}: ${err.message}`, { cause: err });
      });
    }
  }

  async init(): Promise<void> {
    await this.makeDirs(['', 'blobs', 'blobs/sha256', 'names', 'pins']);
  }

  /**
   * Takes the state root's lock (a directory created atomically, holding its owner's pid and start
   * time), waiting while a live process holds it and breaking it when its owner is gone. Held
   * while the set of images, pins and containers changes, and by prune for all its work, so
   * prune never sees a layer between "in use" and "recorded as in use".
   */
  async lock(what: string): Promise<() => Promise<void>> {
    const dir = join(this.root, 'lock');
    const deadline = Date.now() + LOCK_WAIT_MS;
    for (let delay = 20; ; delay = Math.min(delay * 2, 500)) {
      // The owner record goes in before the directory takes the name (rename fails onto a
      // non-empty directory): a lock is never seen without its owner.
      const claim = `${dir}.tmp-${await tempTag()}`;
      await mkdir(claim, { mode: PRIVATE_DIR_MODE });
      const identity = processIdentity() ?? String(process.pid);
      await writeFileAtomic(join(claim, 'owner'), `${identity}\n${what}\n`);
      try {
        await rename(claim, dir);
        // Released by moving it aside first: the name never holds a half-deleted, ownerless lock.
        return async () => {
          const aside = `${dir}.released-${randomBytes(4).toString('hex')}`;
          await rename(dir, aside).catch(() => undefined);
          await rm(aside, { recursive: true, force: true });
        };
      } catch (err) {
        await rm(claim, { recursive: true, force: true });
        const code = (err as NodeJS.ErrnoException).code;
        if (code !== 'ENOTEMPTY' && code !== 'EEXIST') throw err;
      }
      const holder = await this.lockHolder(dir);
      if (holder === 'stale') {
        await this.breakLock(dir);
        continue;
      }
      if (Date.now() > deadline) {
        throw new EsgzError(
          'RUNTIME',
          `state root ${this.root} is busy: ${holder ?? 'another esgz'} holds its lock (waited ${LOCK_WAIT_MS / 1000} s)`,
        );
      }
      await new Promise((r) => setTimeout(r, delay));
    }
  }

  /** Who holds the lock ("esgz prune (pid N)"), undefined when it just went, 'stale' when its owner is gone. */
  private async lockHolder(dir: string): Promise<string | undefined | 'stale'> {
    const text = await readFile(join(dir, 'owner'), 'utf8').catch(() => undefined);
    if (text === undefined)
      return (await stat(dir).then(
        () => true,
        () => false,
      ))
        ? 'stale'
        : undefined;
    const [identity = '', what = ''] = text.split('\n');
    if (!identityAlive(identity)) return 'stale';
    return `esgz ${what} (pid ${identity.split(' ')[0]})`;
  }

  /** Moves a dead owner's lock aside (rename: one breaker wins) and deletes it. */
  private async breakLock(dir: string): Promise<void> {
    const aside = `${dir}.stale-${randomBytes(4).toString('hex')}`;
    try {
      await rename(dir, aside);
    } catch {
      return;
    }
    // Another breaker may have won and a live process taken the lock since: give that one back.
    const text = await readFile(join(aside, 'owner'), 'utf8').catch(() => '');
    if (identityAlive(text.split('\n')[0] ?? '')) {
      await rename(aside, dir).catch(() => undefined);
      return;
    }
    await rm(aside, { recursive: true, force: true });
  }

  /** Records what a live process uses (call with the lock held); returns the pin's remover. */
  async pin(pin: Omit<Pin, 'owner'>): Promise<() => Promise<void>> {
    const path = join(this.pinsDir(), `${await tempTag()}.json`);
    const owner = processIdentity() ?? String(process.pid);
    await writeFileAtomic(path, JSON.stringify({ owner, ...pin } satisfies Pin));
    return async () => {
      await rm(path, { force: true });
    };
  }

  /** The pins of live processes; those of dead ones are removed (call with the lock held). */
  async livePins(): Promise<Pin[]> {
    const out: Pin[] = [];
    for (const name of await readdir(this.pinsDir()).catch(() => [] as string[])) {
      const path = join(this.pinsDir(), name);
      if (TEMP_NAME.test(name)) {
        if (await isDeadTemp(name)) await rm(path, { force: true });
        continue;
      }
      let pin: Pin | undefined;
      try {
        pin = JSON.parse(await readFile(path, 'utf8')) as Pin;
      } catch {
        pin = undefined;
      }
      if (pin && identityAlive(pin.owner)) out.push(pin);
      else await rm(path, { force: true });
    }
    return out;
  }

  /** Stores bytes whose digest the caller verified (checked again here: nothing unverified lands). */
  async putBlob(digest: string, data: Buffer): Promise<void> {
    const actual = `sha256:${createHash('sha256').update(data).digest('hex')}`;
    if (actual !== digest)
      throw new EsgzError('DIGEST_MISMATCH', `state root: bytes for ${digest} have digest ${actual}`);
    await writeFileAtomic(this.blobPath(digest), data);
  }

  async getBlob(digest: string): Promise<Buffer> {
    const data = await readFile(this.blobPath(digest)).catch(() => {
      throw new EsgzError('NOT_FOUND', `state root ${this.root}: blob ${digest} is missing (pull the image again)`);
    });
    const actual = `sha256:${createHash('sha256').update(data).digest('hex')}`;
    if (actual !== digest)
      throw new EsgzError(
        'DIGEST_MISMATCH',
        `state root ${this.root}: blob ${digest} is damaged (digest ${actual}); pull the image again`,
      );
    return data;
  }

  /**
   * A pin that grows with a write: each digest is recorded (under the lock) before its blob is
   * looked up or written, so a prune either ran before (and the blob is written after it) or sees
   * the pin. Released once the name that keeps the blobs is written, or on failure.
   */
  async lease(what: string): Promise<Lease> {
    return new Lease(this, join(this.pinsDir(), `${await tempTag()}.json`), what);
  }

  /** True when the store holds a blob of this digest and the descriptor's size. */
  async hasBlob(desc: Descriptor): Promise<boolean> {
    const info = await stat(this.blobPath(desc.digest)).catch(() => undefined);
    return info !== undefined && info.isFile() && info.size === desc.size;
  }

  /**
   * Streams a blob into the store: a 0600 temp file, its size and digest checked as it is
   * written, fsynced, then renamed to its digest. A wrong or short stream leaves nothing.
   */
  async writeBlob(desc: Descriptor, stream: Readable, what: string): Promise<void> {
    await replaceAtomically(this.blobPath(desc.digest), (tmp) =>
      pipeline(
        stream,
        new DigestVerifier(desc, what),
        createWriteStream(tmp, { flags: 'wx', mode: PRIVATE_FILE_MODE }),
      ),
    );
  }

  /**
   * Every digest a name of any namespace reaches: its manifest or index, an index's manifests,
   * each manifest's config and layers. Prune keeps these. A blob that is missing or does not
   * parse ends that branch (a lazily pulled image has no layer blobs here).
   */
  async namedContent(): Promise<Set<string>> {
    const reached = new Set<string>();
    const visit = async (digest: string): Promise<void> => {
      if (reached.has(digest)) return;
      reached.add(digest);
      for (const child of await this.childDigests(digest)) await visit(child);
    };
    for (const namespace of await listNamespaces(this.root)) {
      for (const record of await this.names(namespace).list()) await visit(record.target.digest);
    }
    return reached;
  }

  /** The digests a stored manifest (config, layers) or index (manifests) refers to. */
  private async childDigests(digest: string): Promise<string[]> {
    const path = this.blobPath(digest);
    const info = await stat(path).catch(() => undefined);
    if (!info || info.size > MAX_MANIFEST_BYTES) return [];
    try {
      const doc = JSON.parse(await readFile(path, 'utf8')) as {
        manifests?: Descriptor[];
        config?: Descriptor;
        layers?: Descriptor[];
      };
      const children = [...(doc.manifests ?? []), ...(doc.config ? [doc.config] : []), ...(doc.layers ?? [])];
      return children.map((d) => d?.digest).filter((d): d is string => typeof d === 'string');
    } catch {
      return [];
    }
  }
}

/** See ContentStore.lease. */
export class Lease {
  private readonly blobs = new Set<string>();

  constructor(
    private readonly store: ContentStore,
    private readonly path: string,
    private readonly what: string,
  ) {}

  async add(digest: string): Promise<void> {
    if (this.blobs.has(digest)) return;
    this.blobs.add(digest);
    const unlock = await this.store.lock(this.what);
    try {
      const owner = processIdentity() ?? String(process.pid);
      await writeFileAtomic(this.path, JSON.stringify({ owner, layers: [], blobs: [...this.blobs] } satisfies Pin));
    } finally {
      await unlock();
    }
  }

  async release(): Promise<void> {
    await rm(this.path, { force: true });
  }
}
