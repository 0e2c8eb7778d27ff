import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import tar from 'tar-stream';
import { EsgzError } from '../errors.js';
import { MediaType } from '../oci/media-types.js';
import type { Descriptor, ImageConfig, ImageManifest, RawManifest } from '../oci/types.js';
import type { ImageSink } from './types.js';

/**
 * The built-in sample image the README's setup command converts: a statically linked busybox
 * (Debian's busybox-static) plus generated files of several sizes, so the eStargz output has
 * chunked files, small files, symlinks and a workload (`/bin/sh -c "cat /etc/hello"`).
 * Everything is fixed (mtimes, owners, contents), so the sample's digests are the same everywhere
 * the same busybox build is installed.
 */
const BUSYBOX_PATH = '/bin/busybox';
const EPOCH = new Date('2024-01-01T00:00:00Z');
const APPLETS = ['sh', 'ls', 'cat', 'echo', 'sleep', 'true', 'env', 'head', 'wc'];

interface SampleEntry {
  name: string;
  type: 'directory' | 'file' | 'symlink';
  mode: number;
  content?: Buffer;
  linkname?: string;
}

function deterministicBytes(seed: string, length: number): Buffer {
  // Incompressible-ish but reproducible: a sha256 counter stream.
  const out = Buffer.alloc(length);
  let offset = 0;
  for (let counter = 0; offset < length; counter++) {
    const block = createHash('sha256').update(`${seed}:${counter}`).digest();
    offset += block.copy(out, offset);
  }
  return out;
}

function sampleEntries(): SampleEntry[] {
  if (!existsSync(BUSYBOX_PATH)) {
    throw new EsgzError(
      'NOT_FOUND',
      `${BUSYBOX_PATH} is missing: install Debian's busybox-static (scripts/install-deps.sh does)`,
    );
  }
  const text = (s: string): Buffer => Buffer.from(s, 'utf8');
  return [
    { name: 'bin/', type: 'directory', mode: 0o755 },
    { name: 'bin/busybox', type: 'file', mode: 0o755, content: readFileSync(BUSYBOX_PATH) },
    ...APPLETS.map((applet): SampleEntry => ({
      name: `bin/${applet}`,
      type: 'symlink',
      mode: 0o777,
      linkname: 'busybox',
    })),
    { name: 'etc/', type: 'directory', mode: 0o755 },
    { name: 'etc/hello', type: 'file', mode: 0o644, content: text('hello from the esgz sample image\n') },
    {
      name: 'etc/passwd',
      type: 'file',
      mode: 0o644,
      content: text('root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n'),
    },
    { name: 'etc/group', type: 'file', mode: 0o644, content: text('root:x:0:\nnogroup:x:65534:\n') },
    { name: 'root/', type: 'directory', mode: 0o700 },
    { name: 'tmp/', type: 'directory', mode: 0o1777 },
    { name: 'usr/', type: 'directory', mode: 0o755 },
    { name: 'usr/share/', type: 'directory', mode: 0o755 },
    { name: 'usr/share/sample/', type: 'directory', mode: 0o755 },
    { name: 'usr/share/sample/empty', type: 'file', mode: 0o644, content: Buffer.alloc(0) },
    { name: 'usr/share/sample/small.txt', type: 'file', mode: 0o644, content: text('a small file\n'.repeat(64)) },
    { name: 'usr/share/sample/random-1m.bin', type: 'file', mode: 0o644, content: deterministicBytes('1m', 1 << 20) },
    { name: 'usr/share/sample/random-9m.bin', type: 'file', mode: 0o644, content: deterministicBytes('9m', 9 << 20) },
    {
      name: 'usr/share/sample/text-6m.txt',
      type: 'file',
      mode: 0o644,
      content: text('the quick brown fox jumps over the lazy dog\n'.repeat(150_000)),
    },
  ];
}

async function packTar(entries: SampleEntry[]): Promise<Buffer> {
  const pack = tar.pack();
  const chunks: Buffer[] = [];
  pack.on('data', (chunk: unknown) => chunks.push(chunk as Buffer));
  const done = new Promise<void>((resolve, reject) => {
    pack.on('end', resolve);
    pack.on('error', reject);
  });
  for (const entry of entries) {
    const header = { name: entry.name, mode: entry.mode, mtime: EPOCH, uid: 0, gid: 0, uname: 'root', gname: 'root' };
    await new Promise<void>((resolve, reject) => {
      const cb = (err?: Error | null) => (err ? reject(err) : resolve());
      if (entry.type === 'file')
        pack.entry({ ...header, type: 'file', size: entry.content!.length }, entry.content!, cb);
      else if (entry.type === 'symlink') pack.entry({ ...header, type: 'symlink', linkname: entry.linkname }, cb);
      else pack.entry({ ...header, type: 'directory' }, cb);
    });
  }
  pack.finalize();
  await done;
  return Buffer.concat(chunks);
}

const sha256 = (data: Buffer): string => `sha256:${createHash('sha256').update(data).digest('hex')}`;

/** Builds the sample image (about 20 MB uncompressed, so held in memory) and writes it to `sink`. */
export async function writeSampleImage(sink: ImageSink): Promise<RawManifest> {
  const layerTar = await packTar(sampleEntries());
  // gzip header mtime is 0 and OS byte fixed by zlib, so the blob is reproducible.
  const layerBlob = gzipSync(layerTar, { level: 6 });
  const layer: Descriptor = { mediaType: MediaType.ociLayerGzip, digest: sha256(layerBlob), size: layerBlob.length };
  const config: ImageConfig = {
    architecture: 'amd64',
    os: 'linux',
    config: { Env: ['PATH=/bin'], Cmd: ['/bin/sh', '-c', 'cat /etc/hello'], WorkingDir: '/' },
    rootfs: { type: 'layers', diff_ids: [sha256(layerTar)] },
    history: [{ created: EPOCH.toISOString(), created_by: 'esgz sample image' }],
  };
  const configBlob = Buffer.from(JSON.stringify(config));
  const configDesc: Descriptor = {
    mediaType: MediaType.ociConfig,
    digest: sha256(configBlob),
    size: configBlob.length,
  };
  const manifest: ImageManifest = {
    schemaVersion: 2,
    mediaType: MediaType.ociManifest,
    config: configDesc,
    layers: [layer],
  };
  const manifestBytes = Buffer.from(JSON.stringify(manifest));
  const root: RawManifest = { bytes: manifestBytes, mediaType: MediaType.ociManifest, digest: sha256(manifestBytes) };
  try {
    await sink.putBlob(layer, () => Readable.from([layerBlob]));
    await sink.putBlob(configDesc, () => Readable.from([configBlob]));
    await sink.commit(root);
  } catch (err) {
    await sink.abort();
    throw err;
  }
  return root;
}
