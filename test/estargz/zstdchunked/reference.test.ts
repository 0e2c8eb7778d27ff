// Compares esgz's zstd:chunked output with stargz-snapshotter's reference `ctr-remote` 0.12
// (`image convert --zstdchunked --oci`), in a private containerd. Gated on containerd + ctr-remote
// being installed and on running as root: the shared codec suite, plus the zstd:chunked
// annotations and footer.
import { expect, it } from 'vitest';
import { MANIFEST_CHECKSUM_ANNOTATION, MANIFEST_POSITION_ANNOTATION } from '../../../src/estargz/zstdchunked/codec.js';
import { runReferenceSuite } from '../codec-suite.js';
import { readTOC } from '../reference.js';
import { rawFooter, sha256, ZSTD_CHUNKED_SUITE_CODEC } from './helpers.js';

runReferenceSuite(ZSTD_CHUNKED_SUITE_CODEC, 'esgz-zstd', (context) => {
  it("ctr-remote's annotations are what our footer reading computes, with the same keys as ours", async () => {
    const ref = await context.reference();
    const refTOC = await readTOC(ref.blob);
    expect(refTOC.reader.codec.name).toBe('zstd');
    const f = rawFooter(ref.blob);
    expect(f.magic).toBe('GnUlInUx');
    expect(ref.annotations[MANIFEST_POSITION_ANNOTATION]).toBe(`${f.offset}:${f.compressed}:${f.uncompressed}:1`);
    const toc = ref.blob.subarray(Number(f.offset), Number(f.offset + f.compressed));
    expect(ref.annotations[MANIFEST_CHECKSUM_ANNOTATION]).toBe(sha256(toc));
    // toc.digest and uncompressed-size come from the transform, the rest from the codec.
    const ours = await ZSTD_CHUNKED_SUITE_CODEC.convert(context.tar(), { chunkSize: context.chunkSize });
    const fromTransform = ['containerd.io/snapshot/stargz/toc.digest', 'io.containers.estargz.uncompressed-size'];
    expect([...Object.keys(ours.result.codecAnnotations), ...fromTransform].sort()).toEqual(
      Object.keys(ref.annotations).sort(),
    );
  });
});
