/** `esgz image ls / rm / prune`: what the state root holds, and removing what nothing uses. */
import { EsgzError } from '../errors.js';
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

/** Removes blobs, layers and cached chunks that no pulled image uses. */
export async function pruneState(stateRoot?: string): Promise<{ blobs: number; layers: number; chunks: number; bytes: number }> {
  const state = new StateRoot(stateRoot);
  await state.init();
  const inUse = new Set<string>();
  for (const image of await state.listImages()) {
    for (const [i, layer] of image.layers.entries()) {
      if (layer.kind !== 'lazy') continue;
      const where = `${image.reference} layer ${i}`;
      const reader = await openStoredLayer(state, layer, offline(layer.size, where), where);
      for (const e of reader.toc.entries) if (e.chunkDigest) inUse.add(e.chunkDigest);
    }
  }
  return state.prune(inUse);
}
