// `--zstdchunked-dialect containers`: containers/storage's current zstd:chunked layout. In memory:
// `zstd -d` gives the diffID, the blob ends in the 64-byte GNUlInUx footer, the TOC is v1 with the
// tar-split's digest, and the tar-split frame (JSON lines) reassembled with the file contents gives
// back the exact layer tar. End to end: podman 4.3 pulls the converted busybox through its
// partial-pull path for every layer and runs it; esgz reads it lazily and names its dialect.
import { mkdtemp } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TOC_DIGEST_ANNOTATION } from '../../../src/estargz/constants.js';
import { EstargzReader, bufferBlobReader } from '../../../src/estargz/reader.js';
import {
  CONTAINERS_MANIFEST_CHECKSUM_ANNOTATION,
  CONTAINERS_TARSPLIT_POSITION_ANNOTATION,
  MANIFEST_CHECKSUM_ANNOTATION,
  tocVerification,
} from '../../../src/estargz/zstdchunked/dialect.js';
import { crc64 } from '../../fixtures/containers-zstd.js';
import { busyboxImage } from '../../fixtures/debian.js';
import { buildTar, dir, file, generatedBuffer, hardlink, symlink } from '../../fixtures/tar.js';
import { esgz } from '../../harness/cli.js';
import { registryAddress } from '../../harness/registry.js';
import { convertZstd, sha256, zstdCli, zstdDecompressCli } from './helpers.js';
import { podmanAvailable, startPodman, type PodmanEnv } from './podman-env.js';

interface TarSplitEntry {
  type: number;
  name?: string;
  name_raw?: string;
  size?: number;
  payload: string | null;
  position: number;
}

/** The tar rebuilt from tar-split segments and the files' contents read (verified) from the blob. */
async function reassemble(entries: TarSplitEntry[], reader: EstargzReader): Promise<Buffer> {
  const parts: Buffer[] = [];
  for (const [i, e] of entries.entries()) {
    expect(e.position).toBe(i);
    if (e.type === 2) parts.push(Buffer.from(e.payload!, 'base64'));
    else if ((e.size ?? 0) > 0) {
      const content = await reader.readFile(e.name!);
      expect(crc64(content).toString('base64'), e.name).toBe(e.payload);
      parts.push(content);
    }
  }
  return Buffer.concat(parts);
}

const BIG = generatedBuffer(300 * 1024 + 7, 'containers-dialect');
const LONG = `deep/${'n'.repeat(120)}/file-with-a-name-longer-than-ustar-allows.txt`;
const entries = [
  dir('deep'),
  dir(`deep/${'n'.repeat(120)}`),
  file(LONG, 'pax path\n'),
  file('big', BIG),
  file('zeros', Buffer.alloc(200_000)),
  file('empty', ''),
  hardlink('big-link', 'big'),
  symlink('sym', 'big'),
  file('ünïcode <&>', 'names Go escapes\n'),
];

describe('zstd:chunked containers dialect, in memory', () => {
  it('decompresses to the diffID, ends in the 64-byte footer, and its tar-split gives back the tar', async () => {
    const tar = await buildTar(entries);
    const { blob, result } = await convertZstd(tar, { dialect: 'containers', chunkSize: 64 * 1024 });
    const plain = zstdDecompressCli(blob);
    expect(sha256(plain)).toBe(result.diffID);

    const footer = blob.subarray(blob.length - 72);
    expect(footer.readUInt32LE(0)).toBe(0x184d2a50);
    expect(footer.readUInt32LE(4)).toBe(64);
    expect(footer.subarray(64).toString('latin1')).toBe('GNUlInUx');
    const [tocOffset, tocLength, tocSize, type, tsOffset, tsLength, tsSize] = [0, 1, 2, 3, 4, 5, 6].map((i) =>
      Number(footer.readBigUInt64LE(8 + i * 8)),
    ) as [number, number, number, number, number, number, number];
    expect(type).toBe(1);
    const annotations = result.codecAnnotations;
    expect(annotations[CONTAINERS_TARSPLIT_POSITION_ANNOTATION]).toBe(`${tsOffset}:${tsLength}:${tsSize}`);
    expect(annotations[CONTAINERS_MANIFEST_CHECKSUM_ANNOTATION]).toBe(
      sha256(blob.subarray(tocOffset, tocOffset + tocLength)),
    );
    expect(annotations[MANIFEST_CHECKSUM_ANNOTATION]).toBe(annotations[CONTAINERS_MANIFEST_CHECKSUM_ANNOTATION]);
    expect(annotations[TOC_DIGEST_ANNOTATION]).toBeUndefined();

    const toc = JSON.parse(zstdCli(['-dc', '-q'], blob.subarray(tocOffset, tocOffset + tocLength)).toString()) as {
      version: number;
      tarSplitDigest: string;
    };
    expect(zstdCli(['-dc', '-q'], blob.subarray(tocOffset, tocOffset + tocLength)).length).toBe(tocSize);
    expect(toc.version).toBe(1);
    const tarSplitFrame = blob.subarray(tsOffset, tsOffset + tsLength);
    expect(toc.tarSplitDigest).toBe(sha256(tarSplitFrame));
    const tarSplit = zstdCli(['-dc', '-q'], tarSplitFrame);
    expect(tarSplit.length).toBe(tsSize);
    const lines = tarSplit
      .toString()
      .trimEnd()
      .split('\n')
      .map((l) => JSON.parse(l) as TarSplitEntry);
    expect(lines.filter((l) => l.type === 1).map((l) => l.name)).toContain(LONG);

    const reader = await EstargzReader.open(bufferBlobReader(blob), tocVerification(annotations));
    expect(sha256(await reassemble(lines, reader))).toBe(result.diffID);
  });

  it('is byte-reproducible', async () => {
    const tar = await buildTar(entries);
    const a = await convertZstd(tar, { dialect: 'containers', workers: 1 });
    const b = await convertZstd(tar, { dialect: 'containers', workers: 3 });
    expect(sha256(a.blob)).toBe(sha256(b.blob));
  });
});

describe.skipIf(!podmanAvailable)('podman pulls an esgz --zstdchunked-dialect containers image partially', () => {
  let env: PodmanEnv;

  beforeAll(async () => {
    env = await startPodman(await mkdtemp(path.join(os.tmpdir(), 'esgz-podman-containers-')));
  });

  afterAll(async () => {
    await env?.close();
  });

  it('converted busybox: podman takes the partial path for every layer and runs it; esgz verifies and runs it lazily', async () => {
    const fixture = await busyboxImage();
    const reference = `${registryAddress()}/esgz-test/containers-dialect:${Date.now()}`;
    const converted = await esgz(
      ...['image', 'convert', '--oci', '--zstdchunked', '--zstdchunked-dialect', 'containers', '--plain-http'],
      ...[fixture.ref, reference],
    );
    expect(converted.exitCode, converted.stderr).toBe(0);
    const raw = await execa('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${reference}`]);
    const { layers } = JSON.parse(raw.stdout) as {
      layers: Array<{ digest: string; annotations?: Record<string, string> }>;
    };
    for (const layer of layers) {
      expect(layer.annotations?.[CONTAINERS_TARSPLIT_POSITION_ANNOTATION]).toMatch(/^\d+:\d+:\d+$/);
      expect(layer.annotations?.[TOC_DIGEST_ANNOTATION]).toBeUndefined();
    }
    await env.pullPartially(
      reference,
      layers.map((l) => l.digest),
      'pull-containers.log',
    );
    expect(await env.runIn(reference, 'cat /etc/hello')).toContain('hello from the esgz busybox fixture');

    const verified = await esgz('image', 'verify', '--plain-http', '--json', reference);
    expect(verified.exitCode, verified.stdout + verified.stderr).toBe(0);
    const report = JSON.parse(verified.stdout) as { manifests: Array<{ layers: Array<{ dialect: string }> }> };
    expect(report.manifests[0]!.layers.map((l) => l.dialect)).toEqual(layers.map(() => 'containers'));

    const root = path.join(env.work, 'esgz-state');
    const pulled = await esgz('image', 'rpull', '--plain-http', '--root', root, '--json', reference);
    expect(pulled.exitCode, pulled.stderr).toBe(0);
    expect((JSON.parse(pulled.stdout) as { layers: Array<{ kind: string }> }).layers.map((l) => l.kind)).toEqual(
      layers.map(() => 'lazy'),
    );
    const ran = await esgz('run', '--rm', '--root', root, reference, 'c1', 'cat', '/etc/hello');
    expect(ran.exitCode, ran.stderr).toBe(0);
    expect(ran.stdout).toContain('hello from the esgz busybox fixture');
  }, 300_000);
});
