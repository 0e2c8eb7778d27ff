// Compares esgz's eStargz output with stargz-snapshotter's reference ctr-remote 0.12 (gated on
// containerd + ctr-remote being installed and running as root).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  blockDevice, buildTar, charDevice, dir, fifo, file, generatedFile, hardlink, opaque, symlink, whiteout, type TarEntry,
} from '../fixtures/tar.js';
import { marshalTOC, sha256Digest } from '../../src/estargz/toc.js';
import { containerdAvailable, startContainerd, type RunningContainerd } from '../harness/containerd.js';
import { convertBuffer, gunzipCli, tarNames } from './helpers.js';
import { convertWithCtrRemote, ctrRemoteTOCDigest, readTOC, tocStructure } from './reference.js';

const CHUNK = 64 * 1024;
const entries: TarEntry[] = [
  dir('etc', { uname: 'root', gname: 'root' }),
  file('etc/os-release', 'ID=esgz\n', { uname: 'root', gname: 'root' }),
  file('etc/empty', ''),
  dir('usr', { uid: 1000, gid: 1000, uname: 'app', gname: 'app' }),
  dir('usr/bin'),
  generatedFile('usr/bin/tool', 3 * CHUNK + 5, { mode: 0o755 }),
  generatedFile('usr/bin/exact', 2 * CHUNK, { compressible: true }),
  generatedFile('usr/bin/small', 1000, { uid: 1000, gid: 1000, uname: 'app', gname: 'app' }),
  symlink('usr/bin/sh', 'tool'),
  hardlink('usr/bin/tool2', 'usr/bin/tool'),
  dir('dev'),
  charDevice('dev/null', 1, 3),
  blockDevice('dev/loop0', 7, 0),
  fifo('dev/fifo'),
  file('usr/bin/caps', 'cap', { xattrs: { 'user.comment': 'hello', 'security.capability': Buffer.from([1, 0, 0, 2, 0, 32, 0, 0]) } }),
  file(`usr/${'long-directory-name-'.repeat(6)}/${'f'.repeat(110)}`, 'long'),
  // Characters Go's encoding/json escapes in the TOC.
  file('etc/"quoted" <a&b>\\tab\t\u2028', 'escaped'),
  whiteout('etc/gone'),
  dir('var'),
  opaque('var'),
];

describe.skipIf(!containerdAvailable())('reference comparison with ctr-remote 0.12', () => {
  let containerd: RunningContainerd;
  let tar: Buffer;

  beforeAll(async () => {
    containerd = await startContainerd();
    tar = await buildTar(entries);
  });
  afterAll(async () => {
    await containerd?.stop();
  });

  it('same TOC structure (names, types, modes, sizes, chunk boundaries) at the same chunk size', async () => {
    const ref = await convertWithCtrRemote(containerd, tar, ['--estargz-chunk-size', String(CHUNK)]);
    const ours = await convertBuffer(tar, { chunkSize: CHUNK });
    const refTOC = await readTOC(ref.blob);
    const ourTOC = await readTOC(ours.blob);
    expect(ref.mediaType).toBe('application/vnd.oci.image.layer.v1.tar+gzip');
    // landmark + every input entry + 3 extra chunks of usr/bin/tool + 1 of usr/bin/exact
    expect(refTOC.toc.entries).toHaveLength(entries.length + 1 + 4);
    expect(tocStructure(ourTOC.toc)).toEqual(tocStructure(refTOC.toc));
    // Both blobs decompress to the same entry list.
    expect(tarNames(gunzipCli(ours.blob))).toEqual(tarNames(gunzipCli(ref.blob)));
    // ctr-remote's annotation is the digest our reader computes for its blob (reader compatibility).
    expect(ref.annotations['containerd.io/snapshot/stargz/toc.digest']).toBe(refTOC.tocDigest);
    await refTOC.reader.verifyAll();
  });

  it("marshalTOC re-encodes ctr-remote's TOC byte for byte (Go's MarshalIndent, escaping included)", async () => {
    const ref = await convertWithCtrRemote(containerd, tar, ['--estargz-chunk-size', String(CHUNK)]);
    const refTOC = await readTOC(ref.blob);
    expect(refTOC.toc.entries.some((e) => e.name.includes('"quoted"'))).toBe(true);
    // The reader's digest covers the JSON bytes exactly as ctr-remote wrote them.
    expect(sha256Digest(marshalTOC(refTOC.toc))).toBe(refTOC.tocDigest);
  });

  it('same structure at the default chunk size with a file larger than 4 MiB', async () => {
    const bigTar = await buildTar([dir('data'), generatedFile('data/blob', 9 * 1024 * 1024 + 17), file('data/note', 'n')]);
    const ref = await convertWithCtrRemote(containerd, bigTar, []);
    const ours = await convertBuffer(bigTar, {});
    expect(tocStructure((await readTOC(ours.blob)).toc)).toEqual(tocStructure((await readTOC(ref.blob)).toc));
  });

  it('the footer is byte-identical to ctr-remote (51-byte STARGZ)', async () => {
    // ctr-remote 0.12 has no --estargz-external-toc, so only the in-blob footer is compared here.
    const { estargzFooter } = await import('../../src/estargz/gzip-codec.js');
    const ref = await convertWithCtrRemote(containerd, tar, ['--estargz-chunk-size', String(CHUNK)]);
    const refTOC = await readTOC(ref.blob);
    expect(ref.blob.subarray(ref.blob.length - 51).equals(estargzFooter(refTOC.reader.footer.tocOffset))).toBe(true);
  });

  it("ctr-remote's own reader accepts esgz blobs and finds the same TOC digest", async () => {
    const ours = await convertBuffer(tar, { chunkSize: CHUNK });
    expect(await ctrRemoteTOCDigest(containerd, ours.blob)).toBe(ours.result.tocDigest);
    const packed = await convertBuffer(tar, { chunkSize: CHUNK, minChunkSize: 200_000 });
    expect(await ctrRemoteTOCDigest(containerd, packed.blob)).toBe(packed.result.tocDigest);
  });
});
