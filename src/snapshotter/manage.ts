/** `esgz image ls / rm / tag / prune`: the names of the state root's store, and removing what nothing uses. */
import { chmod, mkdir, readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { EsgzError } from '../errors.js';
import { mountsUnder, unmount } from '../host/mounts.js';
import { identityAlive, processIdentity } from '../host/process.js';
import { forceUnmount } from './fusefs.js';
import { DEFAULT_RUNC, deleteStaleContainers } from '../runtime/runc.js';
import type { BlobReader } from '../estargz/reader.js';
import { normalizeReference, openStoredLayer } from './rpull.js';
import { resolveImages, type ResolvedImage } from '../image/resolve.js';
import { findName, LOCAL_PREFIX, openLocalSource, type StoreLocation } from '../image/transports/local.js';
import { isIndexMediaType } from '../oci/media-types.js';
import { formatPlatform } from '../oci/platform.js';
import type { Platform } from '../oci/types.js';
import { DEFAULT_NAMESPACE, type NameRecord } from '../store/names.js';
import {
  DEFAULT_STATE_ROOT,
  fsyncDir,
  PRIVATE_DIR_MODE,
  removeUnlessMounted,
  StateRoot,
  writeFileAtomic,
  type ImageRecord,
  type LayerRecord,
} from './state.js';

export interface ImageSummary {
  /** The name (a lazily pulled image's normalised reference). */
  reference: string;
  /** 'lazy': pulled with rpull (manifest, config and TOCs only); 'full': every blob is in the store. */
  kind: 'lazy' | 'full';
  mediaType: string;
  manifestDigest: string;
  /** The lazily pulled platform; for a full image, see `platforms`. */
  platform?: string;
  platforms: string[];
  layers: number;
  lazyLayers: number;
  /** Manifests, configs and layer blobs: what a full pull downloads (ctr's SIZE). */
  size: number;
  pulledAt: string;
}

/** Where names are: the state root and namespace (default `default`). */
export interface NamesLocation {
  stateRoot?: string;
  namespace?: string;
}

function storeLocation(where: NamesLocation): StoreLocation {
  return { root: where.stateRoot ?? DEFAULT_STATE_ROOT, namespace: where.namespace ?? DEFAULT_NAMESPACE };
}

function lazySummary(record: NameRecord, image: ImageRecord): ImageSummary {
  const layerBytes = image.layers.reduce((n, l) => n + l.size, 0);
  return {
    reference: record.name,
    kind: 'lazy',
    mediaType: record.target.mediaType,
    manifestDigest: record.target.digest,
    ...(image.platform ? { platform: image.platform } : {}),
    platforms: image.platform ? [image.platform] : [],
    layers: image.layers.length,
    lazyLayers: image.layers.filter((l) => l.kind === 'lazy').length,
    size: layerBytes,
    pulledAt: image.pulledAt,
  };
}

/** A fully stored image: its platforms and sizes, read from the store (each manifest and config verified). */
async function fullSummary(record: NameRecord, where: StoreLocation): Promise<ImageSummary> {
  const source = await openLocalSource(record.name, where);
  const images = await resolveImages(source, { allPlatforms: true });
  const platformOf = (i: ResolvedImage) => i.platform ?? formatPlatform(i.config as Platform);
  const layers = images.flatMap((i) => i.manifest.layers);
  const own = images.reduce((n, i) => n + i.raw.bytes.length + i.configBytes.length, 0);
  const index = isIndexMediaType(record.target.mediaType) ? record.target.size : 0;
  return {
    reference: record.name,
    kind: 'full',
    mediaType: record.target.mediaType,
    manifestDigest: record.target.digest,
    platforms: images.map(platformOf),
    layers: layers.length,
    lazyLayers: 0,
    size: index + own + layers.reduce((n, l) => n + l.size, 0),
    pulledAt: record.updatedAt,
  };
}

/** Every image a namespace names, fully or lazily pulled (and an older esgz's lazy records), sorted by name. */
export async function listImages(stateRoot?: string, namespace?: string): Promise<ImageSummary[]> {
  const where = storeLocation({ stateRoot, namespace });
  const state = new StateRoot(where.root);
  const out: ImageSummary[] = [];
  for (const record of await state.names(where.namespace).list<ImageRecord>()) {
    if (record.lazy) out.push(lazySummary(record, record.lazy));
    else out.push(await fullSummary(record, where));
  }
  if (where.namespace === DEFAULT_NAMESPACE) {
    const named = new Set(out.map((i) => i.reference));
    for (const legacy of await state.listImages()) {
      if (named.has(legacy.reference)) continue;
      const target = { mediaType: legacy.manifestMediaType, digest: legacy.manifestDigest, size: 0 };
      out.push(lazySummary({ name: legacy.reference, target, createdAt: '', updatedAt: '' }, legacy));
    }
  }
  return out.sort((a, b) => a.reference.localeCompare(b.reference));
}

/** The name a user's argument means: as given when the store has it, else its normalised registry form. */
async function storedName(reference: string, where: StoreLocation): Promise<string | undefined> {
  const name = reference.startsWith(LOCAL_PREFIX) ? reference.slice(LOCAL_PREFIX.length) : reference;
  return (await findName(name, where))?.name;
}

/** Forgets an image (its blobs, layers and chunks go at the next prune); returns the name removed. */
export async function removeImage(reference: string, stateRoot?: string, namespace?: string): Promise<string> {
  const where = storeLocation({ stateRoot, namespace });
  const state = new StateRoot(where.root);
  const name = (await storedName(reference, where)) ?? legacyName(reference);
  const removed =
    where.namespace === DEFAULT_NAMESPACE
      ? await state.removeImage(name)
      : await state.names(where.namespace).remove(name);
  if (!removed) throw new EsgzError('NOT_FOUND', `image ${name} is not in ${state.root}`);
  return name;
}

/** rpull's records of an older esgz are keyed by the normalised reference. */
function legacyName(reference: string): string {
  try {
    return normalizeReference(reference).reference;
  } catch {
    return reference;
  }
}

/** Gives the image `source` names also the names `targets` (a lazily pulled image's record goes along). */
export async function tagImage(
  source: string,
  targets: readonly string[],
  stateRoot?: string,
  namespace?: string,
): Promise<string[]> {
  const where = storeLocation({ stateRoot, namespace });
  const state = new StateRoot(where.root);
  const name = await storedName(source, where);
  const record = name !== undefined ? await state.names(where.namespace).get<ImageRecord>(name) : undefined;
  if (!record)
    throw new EsgzError('NOT_FOUND', `image ${source} is not in ${state.root} (namespace ${where.namespace})`);
  const tagged: string[] = [];
  for (const target of targets) {
    const to = target.startsWith(LOCAL_PREFIX) ? target.slice(LOCAL_PREFIX.length) : target;
    const lazy = record.lazy ? { ...record.lazy, reference: to } : undefined;
    await state.names(where.namespace).put(to, record.target, lazy);
    tagged.push(to);
  }
  return tagged;
}

/** A BlobReader for stored TOCs: any read beyond what rpull saved is a bug, never a request. */
function offline(size: number, where: string): BlobReader {
  return {
    size,
    read: async () => {
      throw new EsgzError('NOT_FOUND', `${where}: stored TOC metadata is incomplete`);
    },
  };
}

/**
 * Written into a container's directory when `esgz run` claims it (its pid and start time) and
 * removed when the run ends: a directory with this file and a dead owner is what a killed or
 * failed run left. (Older versions wrote `owner` and never removed it.)
 */
export const RUNNING_MARK = 'running';
const OLD_OWNER_FILE = 'owner';

async function owner(containerDir: string): Promise<{ file: string; alive: boolean } | undefined> {
  for (const file of [RUNNING_MARK, OLD_OWNER_FILE]) {
    const text = await readFile(join(containerDir, file), 'utf8').catch(() => undefined);
    if (text !== undefined) return { file, alive: text.trim() !== '' && identityAlive(text.trim()) };
  }
  return undefined;
}

/**
 * Cleans up after `esgz run` processes that died without tearing down (kill -9, power loss): their
 * FUSE layers no longer answer. The container is killed with runc, everything under its directory
 * is unmounted, and the directory removed, unless something is still mounted there. Containers
 * of a live `esgz run` and kept containers (marked by run when it finished) stay. Call with the
 * state root's lock held (a run claims its directory and writes its owner under that lock).
 */
export async function cleanStaleContainers(
  state: StateRoot,
  onWarning?: (message: string) => void,
  runc: string = DEFAULT_RUNC,
): Promise<number> {
  let cleaned = 0;
  const dir = state.containersDir();
  for (const id of await readdir(dir).catch(() => [] as string[])) {
    const containerDir = join(dir, id);
    // The FUSE layers die with the esgz run process that served them. Their mount points cannot
    // tell (runc inherits the /dev/fuse descriptor and the kernel caches attributes), so the
    // owner file that run writes decides: the pid and its start time, alive or not.
    const who = await owner(containerDir);
    if (who?.alive) continue;
    const mounts = mountsUnder(containerDir);
    // Kept containers (finished without --rm) have no owner file left and nothing mounted; an
    // empty directory is a claim whose run was killed before it wrote its owner.
    const leftover =
      mounts.length > 0 || who?.file === RUNNING_MARK || (await readdir(containerDir).catch(() => ['?'])).length === 0;
    if (!leftover) continue;
    const layerMounts = mounts.filter((m) => /\/l\/[^/]+$/.test(m));
    const runcRoot = join(containerDir, 's');
    await deleteStaleContainers(runcRoot, runc, id);
    for (const m of mounts) {
      if (layerMounts.includes(m)) await forceUnmount(m);
      else await unmount(m).catch(() => execa('umount', ['-l', m], { reject: false }));
    }
    if (await removeUnlessMounted(containerDir, onWarning)) cleaned++;
  }
  return cleaned;
}

/** Claims `containers/<id>` for this process: mkdir (not recursive) fails if another run has it. */
export async function claimContainer(state: StateRoot, id: string): Promise<string> {
  const containerDir = join(state.containersDir(), id);
  try {
    await mkdir(containerDir, { mode: PRIVATE_DIR_MODE });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') {
      throw new EsgzError(
        'BAD_FLAG',
        `container ${id} already exists in ${state.containersDir()} (pick another ID or remove it)`,
      );
    }
    throw err;
  }
  await chmod(containerDir, PRIVATE_DIR_MODE);
  await writeFileAtomic(join(containerDir, RUNNING_MARK), `${processIdentity() ?? process.pid}\n`);
  return containerDir;
}

/** Marks a finished container's directory as kept on purpose (see cleanStaleContainers). */
export async function markKept(containerDir: string): Promise<void> {
  await rm(join(containerDir, RUNNING_MARK), { force: true });
  await rm(join(containerDir, OLD_OWNER_FILE), { force: true });
  await fsyncDir(containerDir);
}

/** Removes blobs, layers and cached chunks that no pulled image uses, and containers whose esgz run died. */
export async function pruneState(
  stateRoot?: string,
  onWarning?: (message: string) => void,
  runc: string = DEFAULT_RUNC,
): Promise<{ containers: number; blobs: number; layers: number; chunks: number; bytes: number }> {
  const state = new StateRoot(stateRoot);
  await state.init();
  const unlock = await state.lock('image prune');
  try {
    const containers = await cleanStaleContainers(state, onWarning, runc);
    const pins = await state.livePins();
    const inUse = new Set<string>();
    const lazyLayers = new Map<string, { layer: LayerRecord; where: string }>();
    for (const image of await state.listImages()) {
      for (const [i, layer] of image.layers.entries())
        if (layer.kind === 'lazy') lazyLayers.set(layer.digest, { layer, where: `${image.reference} layer ${i}` });
    }
    for (const pin of pins) {
      // A live run of an image since removed still reads chunks of its layers' TOCs.
      for (const l of pin.layers)
        if (!lazyLayers.has(l.digest))
          lazyLayers.set(l.digest, {
            layer: { mediaType: '', kind: 'lazy', ...l },
            where: `layer ${l.digest} (in use)`,
          });
    }
    for (const { layer, where } of lazyLayers.values()) {
      if (!(await state.getLayerMeta(layer.digest))) continue;
      const reader = await openStoredLayer(state, layer, offline(layer.size, where), where).catch(() => undefined);
      for (const e of reader?.toc.entries ?? []) if (e.chunkDigest) inUse.add(e.chunkDigest);
    }
    return { containers, ...(await state.prune(inUse, pins, onWarning)) };
  } finally {
    await unlock();
  }
}
