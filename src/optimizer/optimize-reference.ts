// `image optimize` by image reference: the transports opened and closed around optimizeImage, so
// the command only maps flags to these options and prints the report.
import { openSink, openSource, parseTransportReference, type TransportOptions } from '../image/transports/index.js';
import type { ImageSink } from '../image/types.js';
import { optimizeImage, type OptimizeImageOptions, type OptimizeReport } from './optimize-image.js';

/** What optimizeImageReference opens itself. */
type OpenedHere = 'source' | 'sink' | 'cacheBlobs' | 'reopenTarget' | 'openTocSink';

export interface OptimizeReferenceOptions extends Omit<OptimizeImageOptions, OpenedHere> {
  /** The image to optimize: REGISTRY/REPO[:TAG|@DIGEST], oci:DIR[:TAG] or docker-archive:FILE[:TAG]. */
  source: string;
  /** Where the result goes (same forms). */
  target: string;
  /** With `convert.externalTOC`: where the TOC image goes. */
  tocTarget?: string;
  transport?: TransportOptions;
}

/**
 * Opens `source` and `target`, profiles and converts (optimizeImage), and closes the source
 * whatever happened. A registry source keeps the profiled layers' blobs locally meanwhile, and
 * the written image is read back to report where each layer's landmark landed.
 */
export async function optimizeImageReference(options: OptimizeReferenceOptions): Promise<OptimizeReport> {
  const { source: sourceReference, target, tocTarget, transport = {}, ...rest } = options;
  const source = await openSource(sourceReference, transport);
  try {
    const sink = await openSink(target, transport);
    return await optimizeImage({
      ...rest,
      source,
      sink,
      cacheBlobs: parseTransportReference(sourceReference).transport === 'registry',
      reopenTarget: () => openSource(target, transport),
      ...(tocTarget !== undefined ? { openTocSink: () => openTocSink(tocTarget, transport) } : {}),
    });
  } finally {
    await source.close();
  }
}

async function openTocSink(
  reference: string,
  transport: TransportOptions,
): Promise<{ sink: ImageSink; reference: string }> {
  return { sink: await openSink(reference, transport), reference };
}
