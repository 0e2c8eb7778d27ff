// Compares esgz's eStargz output with stargz-snapshotter's reference ctr-remote 0.12 (gated on
// containerd + ctr-remote being installed and running as root): the shared codec suite, plus
// what only eStargz has (Go's TOC encoding, the 51-byte gzip footer, packed members).
import { expect, it } from 'vitest';
import { marshalTOC, sha256Digest } from '../../src/estargz/toc.js';
import { runReferenceSuite } from './codec-suite.js';
import { ESTARGZ_SUITE_CODEC } from './helpers.js';
import { readTOC } from './reference.js';

runReferenceSuite(ESTARGZ_SUITE_CODEC, 'esgz', (context) => {
  it("marshalTOC re-encodes ctr-remote's TOC byte for byte (Go's MarshalIndent, escaping included)", async () => {
    const refTOC = await readTOC((await context.reference()).blob);
    expect(refTOC.toc.entries.some((e) => e.name.includes('"quoted"'))).toBe(true);
    // The reader's digest covers the JSON bytes exactly as ctr-remote wrote them.
    expect(sha256Digest(marshalTOC(refTOC.toc))).toBe(refTOC.tocDigest);
  });

  it('the footer is byte-identical to ctr-remote (51-byte STARGZ)', async () => {
    // ctr-remote 0.12 has no --estargz-external-toc, so only the in-blob footer is compared here.
    const { estargzFooter } = await import('../../src/estargz/gzip-codec.js');
    const ref = await context.reference();
    const refTOC = await readTOC(ref.blob);
    expect(ref.blob.subarray(ref.blob.length - 51).equals(estargzFooter(refTOC.reader.footer.tocOffset))).toBe(true);
  });
});
