/** `esgz image ls / rm / prune`: what the state root holds, and removing what nothing uses. */
import { readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { EsgzError } from '../errors.js';
import { unmount } from '../optimizer/overlay.js';
import { forceUnmount } from './fusefs.js';
import type { BlobReader } from '../estargz/reader.js';
import { normalizeReference, openStoredLayer } from './rpull.js';
import { StateRoot, type ImageRecord } from './state.js';

export interface ImageSummary {
  reference: string;
  manifestDigest: string;
  platform?: string;
  layers: number;
  lazyLayers: number;
  /** Sum of the layer blob sizes (what a full pull would download). */
  size: number;
  pulledAt: string;
}

export async function listImages(stateRoot?: string): Promise<ImageSummary[]> {
  const state = new StateRoot(stateRoot);
  return (await state.listImages()).map((r: ImageRecord) => ({
    reference: r.reference,
    manifestDigest: r.manifestDigest,
    ...(r.platform ? { platform: r.platform } : {}),
    layers: r.layers.length,
    lazyLayers: r.layers.filter((l) => l.kind === 'lazy').length,
    size: r.layers.reduce((n, l) => n + l.size, 0),
    pulledAt: r.pulledAt,
  }));
}

/** Forgets an image (its blobs, layers and chunks go at the next prune). */
export async function removeImage(reference: string, stateRoot?: string): Promise<string> {
  const { reference: normalized } = normalizeReference(reference);
  const state = new StateRoot(stateRoot);
  if (!(await state.removeImage(normalized))) throw new EsgzError('NOT_FOUND', `image ${normalized} is not in ${state.root}`);
  return normalized;
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

/** Mount points at or under `dir` (deepest first), from /proc/self/mountinfo. */
async function mountsUnder(dir: string): Promise<string[]> {
  const table = await readFile('/proc/self/mountinfo', 'utf8').catch(() => '');
  const points = table
    .split('\n')
    .map((line) => line.split(' ')[4]?.replace(/\\040/g, ' '))
    .filter((p): p is string => p !== undefined && (p === dir || p.startsWith(`${dir}/`)));
  return points.sort((a, b) => b.length - a.length);
}

/** Identifies this process for `cleanStaleContainers`: pid and start time (pids get reused). */
export async function processIdentity(pid: number = process.pid): Promise<string | undefined> {
  const text = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => undefined);
  if (!text) return undefined;
  // Field 22 (starttime), counted after the ")" that ends the command name.
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  return `${pid} ${fields[19]}`;
}

async function ownerAlive(containerDir: string): Promise<boolean> {
  const owner = (await readFile(join(containerDir, 'owner'), 'utf8').catch(() => '')).trim();
  if (!owner) return false;
  return (await processIdentity(Number(owner.split(' ')[0]))) === owner;
}

/**
 * Cleans up after `esgz run` processes that died without tearing down (kill -9, power loss): their
 * FUSE layers no longer answer. The container is killed with runc, everything under its directory
 * is unmounted, and the directory removed. Containers of a live `esgz run` and kept containers
 * (no mounts) stay.
 */
export async function cleanStaleContainers(state: StateRoot): Promise<number> {
  let cleaned = 0;
  const dir = state.containersDir();
  for (const id of await readdir(dir).catch(() => [] as string[])) {
    const containerDir = join(dir, id);
    const mounts = await mountsUnder(containerDir);
    if (mounts.length === 0) continue;
    // The FUSE layers die with the esgz run process that served them. Their mount points cannot
    // tell (runc inherits the /dev/fuse descriptor and the kernel caches attributes), so the
    // owner file that run writes decides: the pid and its start time, alive or not.
    if (await ownerAlive(containerDir)) continue;
    const layerMounts = mounts.filter((m) => m.startsWith(`${containerDir}/l/`));
    const runcRoot = join(containerDir, 's');
    await execa(process.env.ESGZ_RUNC ?? 'runc', ['--root', runcRoot, 'delete', '--force', id], { reject: false, stdin: 'ignore' });
    for (const m of mounts) {
      if (layerMounts.includes(m)) await forceUnmount(m);
      else await unmount(m).catch(() => execa('umount', ['-l', m], { reject: false }));
    }
    await rm(containerDir, { recursive: true, force: true });
    cleaned++;
  }
  return cleaned;
}

/** Removes blobs, layers and cached chunks that no pulled image uses, and containers whose esgz run died. */
export async function pruneState(stateRoot?: string): Promise<{ containers: number; blobs: number; layers: number; chunks: number; bytes: number }> {
  const state = new StateRoot(stateRoot);
  await state.init();
  const containers = await cleanStaleContainers(state);
  const inUse = new Set<string>();
  for (const image of await state.listImages()) {
    for (const [i, layer] of image.layers.entries()) {
      if (layer.kind !== 'lazy') continue;
      const where = `${image.reference} layer ${i}`;
      const reader = await openStoredLayer(state, layer, offline(layer.size, where), where);
      for (const e of reader.toc.entries) if (e.chunkDigest) inUse.add(e.chunkDigest);
    }
  }
  return { containers, ...(await state.prune(inUse)) };
}
