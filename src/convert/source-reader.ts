// Reading a layer of an image by Range requests: the bridge from an ImageSource to the format
// library's BlobReader, shared by conversion checks, verify and the lazy-pull snapshotter.
import { EsgzError } from '../errors.js';
import type { ImageSource } from '../image/types.js';
import type { Descriptor } from '../oci/types.js';
import { checkRange, type BlobReader } from '../estargz/reader.js';

/** A BlobReader over `ImageSource.readBlobRange` (registry Range requests, OCI layout files, ...). */
export function sourceBlobReader(source: ImageSource, desc: Descriptor): BlobReader {
  return {
    size: desc.size,
    async read(offset, length) {
      checkRange(offset, length, desc.size, desc.digest);
      const buf = await source.readBlobRange(desc, offset, length);
      if (buf.length !== length) {
        throw new EsgzError(
          'SIZE_MISMATCH',
          `${source.description} ${desc.digest}: range read at ${offset} returned ${buf.length} bytes, expected ${length}`,
        );
      }
      return buf;
    },
  };
}
