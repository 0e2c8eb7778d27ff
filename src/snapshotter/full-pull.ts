/**
 * The uncompressed tar of a layer pulled whole (one not lazily pullable): an eStargz blob is
 * inflated member range by member range on every core (estargz/parallel-inflate.ts), anything
 * else through one decompressor. Either way the blob is read once, in order, and its digest is
 * checked as it is read (the source does), so the unpacker never sees unverified bytes as final.
 */
import { Readable } from 'node:stream';
import { EstargzReader } from '../estargz/reader.js';
import { inflateMembers, memberStarts } from '../estargz/parallel-inflate.js';
import { sourceBlobReader } from '../convert/source-reader.js';
import { openDecompressed } from '../image/compression.js';
import { layerCompressionOf } from '../oci/media-types.js';
import type { Descriptor } from '../oci/types.js';
import type { ImageSource } from '../image/types.js';

/**
 * Below this a layer inflates in well under a second on one core: not worth the two ranged
 * reads that tell an eStargz blob from a plain gzip one.
 */
const PARALLEL_MIN_SIZE = 8 << 20;

/**
 * Opens `desc`'s tar stream. A gzip layer whose footer and TOC read as eStargz's (two ranged
 * reads at its end) inflates in parallel; the TOC only says where to cut, and a cut that is not
 * a member start makes the inflate fail rather than change a byte.
 */
export async function openLayerTar(source: ImageSource, desc: Descriptor, where: string): Promise<Readable> {
  const worthProbing = layerCompressionOf(desc.mediaType) === 'gzip' && desc.size >= PARALLEL_MIN_SIZE;
  const starts = worthProbing ? await eStargzMemberStarts(source, desc, where) : undefined;
  const blob = await source.openBlob(desc);
  if (!starts) return (await openDecompressed(blob, where)).stream;
  return Readable.from(inflateMembers(blob, starts, { where }), { objectMode: false });
}

/** The member starts of an eStargz blob, or undefined when it is not one (plain gzip, external TOC). */
async function eStargzMemberStarts(
  source: ImageSource,
  desc: Descriptor,
  where: string,
): Promise<number[] | undefined> {
  try {
    const reader = await EstargzReader.open(sourceBlobReader(source, desc), { where });
    if (reader.codec.name !== 'gzip' || reader.footer.externalTOC) return undefined;
    return memberStarts(reader.toc, reader.footer.tocOffset);
  } catch {
    return undefined;
  }
}
