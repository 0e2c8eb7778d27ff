// Transports and the identity pipeline: oci ↔ docker-archive ↔ registry keep every digest;
// skopeo (containers/image) is the independent reader and writer on the other side.
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EsgzError } from '../../src/errors.js';
import { transferImage } from '../../src/image/pipeline.js';
import { openSink, openSource, parseTransportReference } from '../../src/image/transports/index.js';
import { registryAddress } from '../harness/registry.js';
import { buildTar, dir, file, gzipBuffer, sha256Digest, sha256Hex } from '../fixtures/tar.js';
import {
  multiLayerEntries,
  writeOciImage,
  busyboxRootfs,
  writeStandardFixtures,
  type WrittenImage,
} from '../fixtures/oci-image.js';
import { layoutTags, readLayoutIndex } from '../fixtures/oci-layout.js';

const scratch = await mkdtemp(join(tmpdir(), 'esgz-transports-'));
afterAll(() => (process.env.KEEP ? undefined : rm(scratch, { recursive: true, force: true })));

let single: WrittenImage;
let multi: WrittenImage;
let docker: WrittenImage;
let twoPlatform: WrittenImage;

beforeAll(async () => {
  ({ single, multi, docker, multiarch: twoPlatform } = await writeStandardFixtures(join(scratch, 'src')));
  // Built twice: the fixture builder must be byte-reproducible.
  const again = await writeStandardFixtures(join(scratch, 'src-again'));
  expect([again.single, again.multi, again.docker, again.multiarch].map((i) => i.rootDigest)).toEqual(
    [single, multi, docker, twoPlatform].map((i) => i.rootDigest),
  );
});

async function copy(src: string, dst: string, extra: Partial<Parameters<typeof transferImage>[0]> = {}) {
  const source = await openSource(src, { plainHttp: true });
  const sink = await openSink(dst, { plainHttp: true });
  try {
    return await transferImage({ source, sink, ...extra });
  } finally {
    await source.close();
  }
}

async function skopeoInspect(ref: string, raw = false): Promise<Record<string, unknown>> {
  const args = ['inspect', '--tls-verify=false', ...(raw ? ['--raw'] : []), ref];
  const { stdout } = await execa('skopeo', args);
  return JSON.parse(stdout) as Record<string, unknown>;
}

async function manifestDigestOf(ref: string): Promise<string> {
  const { stdout } = await execa('skopeo', ['inspect', '--tls-verify=false', '--format', '{{.Digest}}', ref]);
  return stdout.trim();
}

describe('reference syntax', () => {
  it('splits oci:, docker-archive: and registry references', () => {
    expect(parseTransportReference('oci:/tmp/x:v1')).toEqual({ transport: 'oci', dir: '/tmp/x', tag: 'v1' });
    expect(parseTransportReference('oci:/tmp/x')).toEqual({ transport: 'oci', dir: '/tmp/x' });
    expect(parseTransportReference('oci:rel/dir.v2/x:latest')).toEqual({
      transport: 'oci',
      dir: 'rel/dir.v2/x',
      tag: 'latest',
    });
    expect(parseTransportReference('docker-archive:/a.tar:img:1.0')).toEqual({
      transport: 'docker-archive',
      file: '/a.tar',
      tag: 'img:1.0',
    });
    expect(parseTransportReference('docker://localhost:5000/a/b:c')).toEqual({
      transport: 'registry',
      reference: 'localhost:5000/a/b:c',
    });
    expect(parseTransportReference('localhost:5000/a')).toEqual({
      transport: 'registry',
      reference: 'localhost:5000/a',
    });
  });

  it('rejects other tools’ transports and bad tags with BAD_REFERENCE', () => {
    for (const bad of [
      'dir:/tmp/x',
      'containers-storage:foo',
      'oci:/tmp/x:bad tag',
      'oci:',
      'docker-archive:',
      'http://x/y',
    ]) {
      expect(() => parseTransportReference(bad), bad).toThrow(EsgzError);
      try {
        parseTransportReference(bad);
      } catch (err) {
        expect((err as EsgzError).code).toBe('BAD_REFERENCE');
        expect((err as EsgzError).message).toContain(bad);
      }
    }
  });
});

describe('oci layout', () => {
  it('identity copy keeps manifest, config and layer digests byte-identical (skopeo agrees)', async () => {
    const dst = join(scratch, 'copy1');
    const report = await copy(`oci:${multi.dir}:multi`, `oci:${dst}:copied`);
    expect(report.root.digest).toBe(multi.rootDigest);
    expect(report.manifests[0]!.layers.map((l) => l.output.digest)).toEqual(
      multi.manifests[0]!.layers.map((l) => l.digest),
    );
    expect(report.manifests[0]!.layers.every((l) => !l.changed)).toBe(true);
    expect(await manifestDigestOf(`oci:${dst}:copied`)).toBe(multi.rootDigest);
    const inspected = await skopeoInspect(`oci:${dst}:copied`);
    expect(inspected.Layers).toEqual(multi.manifests[0]!.layers.map((l) => l.digest));
    expect(layoutTags(dst)).toEqual(['copied']);
    // Copying again under the same tag replaces the entry; a second tag adds one.
    await copy(`oci:${single.dir}:single`, `oci:${dst}:copied`);
    await copy(`oci:${multi.dir}:multi`, `oci:${dst}:other`);
    expect(readLayoutIndex(dst)!.manifests.map((m) => m.digest)).toEqual([single.rootDigest, multi.rootDigest]);
    expect((await readdir(join(dst, 'blobs', 'sha256'))).filter((n) => n.startsWith('.'))).toEqual([]);
  });

  it('parallel copies into one layout keep every tag (index.json is locked while updated)', async () => {
    const dst = join(scratch, 'parallel');
    const tags = ['p1', 'p2', 'p3', 'p4', 'p5', 'p6'];
    await Promise.all(
      tags.map((tag, i) =>
        copy(`oci:${(i % 2 ? single : multi).dir}:${i % 2 ? 'single' : 'multi'}`, `oci:${dst}:${tag}`),
      ),
    );
    expect(layoutTags(dst).sort()).toEqual(tags);
    expect(existsSync(join(dst, 'index.json.lock'))).toBe(false);
  });

  it('untagged: oci:DIR writes an entry without ref name, and a one-image layout needs no tag; @digest selects', async () => {
    const dst = join(scratch, 'untagged');
    await copy(`oci:${single.dir}:single`, `oci:${dst}`);
    await copy(`oci:${single.dir}:single`, `oci:${dst}`);
    expect(readLayoutIndex(dst)!.manifests).toEqual([
      {
        mediaType: 'application/vnd.oci.image.manifest.v1+json',
        digest: single.rootDigest,
        size: single.manifests[0]!.size,
      },
    ]);
    expect((await copy(`oci:${dst}`, `oci:${join(scratch, 'untagged-2')}:x`)).root.digest).toBe(single.rootDigest);
    const byDigest = await copy(`oci:${multi.dir}@${multi.rootDigest}`, `oci:${join(scratch, 'by-digest')}:x`);
    expect(byDigest.root.digest).toBe(multi.rootDigest);
  });

  it('reads what skopeo wrote to an oci: layout', async () => {
    const skopeoDir = join(scratch, 'skopeo-oci');
    await execa('skopeo', ['copy', `oci:${multi.dir}:multi`, `oci:${skopeoDir}:sk`]);
    const dst = join(scratch, 'from-skopeo');
    const report = await copy(`oci:${skopeoDir}:sk`, `oci:${dst}:x`);
    expect(report.root.digest).toBe(await manifestDigestOf(`oci:${skopeoDir}:sk`));
    expect(report.manifests[0]!.layers.map((l) => l.output.digest)).toEqual(
      multi.manifests[0]!.layers.map((l) => l.digest),
    );
  });

  it('names a missing tag, a missing oci-layout and a multi-image layout without tag', async () => {
    await expect(openSource(`oci:${multi.dir}:nope`).then((s) => s.fetchRoot())).rejects.toMatchObject({
      code: 'NOT_FOUND',
      message: expect.stringContaining('no image tagged "nope"'),
    });
    const notLayout = join(scratch, 'not-a-layout');
    await execa('mkdir', ['-p', notLayout]);
    await expect(openSource(`oci:${notLayout}:x`)).rejects.toMatchObject({
      code: 'BAD_LAYOUT',
      message: expect.stringContaining('oci-layout'),
    });
    await expect(openSource(`oci:${multi.dir}`).then((s) => s.fetchRoot())).rejects.toMatchObject({
      code: 'BAD_REFERENCE',
    });
  });

  it('a corrupt blob fails the copy and leaves nothing behind', async () => {
    const corrupt = join(scratch, 'corrupt');
    const image = await writeOciImage(corrupt, { tag: 't', layers: multiLayerEntries() });
    const victim = join(corrupt, 'blobs', 'sha256', image.manifests[0]!.layers[1]!.digest.slice(7));
    const bytes = await readFile(victim);
    bytes[bytes.length >> 1]! ^= 0xff;
    await writeFile(victim, bytes);

    // New destination (parents included): removed entirely.
    const fresh = join(scratch, 'corrupt-parent', 'corrupt-dst-new');
    await expect(copy(`oci:${corrupt}:t`, `oci:${fresh}:t`)).rejects.toMatchObject({
      code: expect.stringMatching(/DIGEST_MISMATCH|BAD_LAYER/),
      message: expect.stringContaining('layer 2/3'),
    });
    expect(existsSync(join(scratch, 'corrupt-parent'))).toBe(false);
    // Relative paths too, and an empty directory that already existed above is kept.
    await execa('mkdir', ['-p', join(scratch, 'empty-above')]);
    const relativeDst = relative(process.cwd(), join(scratch, 'empty-above', 'new', 'dst'));
    await expect(copy(`oci:${corrupt}:t`, `oci:${relativeDst}:t`)).rejects.toThrow(/layer 2\/3/);
    expect(await readdir(join(scratch, 'empty-above'))).toEqual([]);

    // Existing destination: index.json and blobs as before, no temp files.
    const existing = join(scratch, 'corrupt-dst-existing');
    await copy(`oci:${single.dir}:single`, `oci:${existing}:keep`);
    const indexBefore = await readFile(join(existing, 'index.json'), 'utf8');
    const blobsBefore = (await readdir(join(existing, 'blobs', 'sha256'))).sort();
    await expect(copy(`oci:${corrupt}:t`, `oci:${existing}:t`)).rejects.toThrow(/digest mismatch|corrupt/);
    expect(await readFile(join(existing, 'index.json'), 'utf8')).toBe(indexBefore);
    expect((await readdir(join(existing, 'blobs', 'sha256'))).sort()).toEqual(blobsBefore);
    expect((await readdir(existing)).sort()).toEqual(['blobs', 'index.json', 'oci-layout']);

    // An existing empty directory: left empty again.
    const empty = join(scratch, 'corrupt-dst-empty');
    await execa('mkdir', ['-p', empty]);
    await expect(copy(`oci:${corrupt}:t`, `oci:${empty}:t`)).rejects.toThrow(/layer 2\/3/);
    expect(await readdir(empty)).toEqual([]);
  });
});

describe('docker-archive', () => {
  it('oci → docker-archive → oci keeps the manifest digest; skopeo and GNU tar read the archive', async () => {
    const archive = join(scratch, 'multi.tar');
    await copy(`oci:${multi.dir}:multi`, `docker-archive:${archive}:esgz/multi:v1`);
    const listing = (await execa('tar', ['-tf', archive])).stdout.split('\n');
    expect(listing).toContain('manifest.json');
    const entries = JSON.parse((await execa('tar', ['-xOf', archive, 'manifest.json'])).stdout);
    expect(entries).toEqual([
      {
        Config: `blobs/sha256/${multi.manifests[0]!.configDigest.slice(7)}`,
        RepoTags: ['esgz/multi:v1'],
        Layers: multi.manifests[0]!.layers.map((l) => `blobs/sha256/${l.digest.slice(7)}`),
      },
    ]);
    const inspected = await skopeoInspect(`docker-archive:${archive}`);
    expect(inspected.Architecture).toBe('amd64');
    expect((inspected.Layers as string[]).length).toBe(3);
    // skopeo copies out of it too (it reads every blob), into a layout esgz reads back.
    const viaSkopeo = join(scratch, 'multi-via-skopeo');
    await execa('skopeo', ['copy', `docker-archive:${archive}`, `oci:${viaSkopeo}:s`]);
    const viaReport = await copy(`oci:${viaSkopeo}:s`, `oci:${join(scratch, 'multi-via-skopeo-2')}:s`);
    // skopeo re-encodes config and layers on the way to OCI; the tars inside must be the same.
    const tarDigests = await Promise.all(
      viaReport.manifests[0]!.layers.map(async (l) =>
        sha256Digest(gunzipSync(await readFile(join(viaSkopeo, 'blobs', 'sha256', l.output.digest.slice(7))))),
      ),
    );
    expect(tarDigests).toEqual(multi.manifests[0]!.layers.map((l) => l.diffID));

    const back = join(scratch, 'multi-back');
    const report = await copy(`docker-archive:${archive}:esgz/multi:v1`, `oci:${back}:back`);
    expect(report.root.digest).toBe(multi.rootDigest);
    expect(await manifestDigestOf(`oci:${back}:back`)).toBe(multi.rootDigest);
  });

  it('reads a docker save archive written by skopeo (uncompressed <id>.tar layers): same config and diffIDs', async () => {
    const archive = join(scratch, 'skopeo.tar');
    await execa('skopeo', ['copy', `oci:${multi.dir}:multi`, `docker-archive:${archive}:sk/multi:latest`]);
    const dst = join(scratch, 'from-skopeo-archive');
    // skopeo's oci: reader only lists OCI media types in index.json, hence --oci here.
    const report = await copy(`docker-archive:${archive}:sk/multi`, `oci:${dst}:x`, { oci: true });
    const out = report.manifests[0]!;
    expect(out.config.output.digest).toBe(multi.manifests[0]!.configDigest);
    // skopeo stores layers uncompressed: their digests are the diffIDs.
    expect(out.layers.map((l) => l.output.digest)).toEqual(multi.manifests[0]!.layers.map((l) => l.diffID));
    const config = JSON.parse(await readFile(join(dst, 'blobs', 'sha256', out.config.output.digest.slice(7)), 'utf8'));
    expect(config.rootfs.diff_ids).toEqual(multi.manifests[0]!.layers.map((l) => l.diffID));
    // And skopeo reads the layout esgz wrote from it.
    expect((await skopeoInspect(`oci:${dst}:x`)).Layers).toEqual(config.rootfs.diff_ids);
  });

  it('reads the legacy layout (<id>/layer.tar, gzip or plain, ./-prefixed names) and stores layers as found', async () => {
    const plain = await buildTar(busyboxRootfs());
    const second = await buildTar([file('etc/second', 'layer two\n')]);
    const gz = gzipBuffer(second);
    const config = Buffer.from(
      JSON.stringify({
        architecture: 'amd64',
        os: 'linux',
        rootfs: { type: 'layers', diff_ids: [sha256Digest(plain), sha256Digest(second)] },
      }),
    );
    const configName = `${sha256Hex(config)}.json`;
    const manifestJson = JSON.stringify([
      { Config: configName, RepoTags: ['legacy/app:1'], Layers: ['aaaa/layer.tar', 'bbbb/layer.tar'] },
    ]);
    const archive = join(scratch, 'legacy.tar');
    await writeFile(
      archive,
      await buildTar([
        dir('./aaaa'),
        file('./aaaa/layer.tar', plain),
        file('./aaaa/VERSION', '1.0'),
        dir('./bbbb'),
        file('./bbbb/layer.tar', gz),
        file(`./${configName}`, config),
        file('./manifest.json', manifestJson),
      ]),
    );
    const dst = join(scratch, 'legacy-out');
    const report = await copy(`docker-archive:${archive}:legacy/app:1`, `oci:${dst}:l`);
    const layers = report.manifests[0]!.layers;
    expect(layers.map((l) => [l.output.mediaType, l.output.digest, l.output.size])).toEqual([
      ['application/vnd.docker.image.rootfs.diff.tar', sha256Digest(plain), plain.length],
      ['application/vnd.docker.image.rootfs.diff.tar.gzip', sha256Digest(gz), gz.length],
    ]);
    expect(report.manifests[0]!.config.output.digest).toBe(sha256Digest(config));
    expect((await readFile(join(dst, 'blobs', 'sha256', sha256Hex(gz)))).equals(gz)).toBe(true);
    // A truncated archive is refused with one clear error.
    const truncated = join(scratch, 'legacy-truncated.tar');
    await writeFile(truncated, (await readFile(archive)).subarray(0, 3000));
    await expect(openSource(`docker-archive:${truncated}`)).rejects.toMatchObject({
      code: 'BAD_ARCHIVE',
      message: expect.stringContaining('truncated'),
    });
  });

  it('rejects a file that is not a docker archive and an unknown tag', async () => {
    const junk = join(scratch, 'junk.tar');
    await writeFile(junk, Buffer.alloc(4096, 7));
    await expect(openSource(`docker-archive:${junk}`)).rejects.toMatchObject({ code: 'BAD_ARCHIVE' });
    const archive = join(scratch, 'multi.tar');
    await expect(openSource(`docker-archive:${archive}:other:tag`)).rejects.toMatchObject({
      code: 'NOT_FOUND',
      message: expect.stringContaining('esgz/multi:v1'),
    });
  });
});

describe('media types and platforms', () => {
  it('--oci converts a Docker image to OCI media types, keeping config bytes and layer blobs', async () => {
    const dst = join(scratch, 'oci-converted');
    const report = await copy(`oci:${docker.dir}:docker`, `oci:${dst}:oci`, { oci: true });
    const manifest = JSON.parse(await readFile(join(dst, 'blobs', 'sha256', report.root.digest.slice(7)), 'utf8'));
    expect(manifest.mediaType).toBe('application/vnd.oci.image.manifest.v1+json');
    expect(manifest.config).toMatchObject({
      mediaType: 'application/vnd.oci.image.config.v1+json',
      digest: docker.manifests[0]!.configDigest,
    });
    expect(manifest.layers.map((l: { mediaType: string }) => l.mediaType)).toEqual(
      Array(3).fill('application/vnd.oci.image.layer.v1.tar+gzip'),
    );
    expect(manifest.layers.map((l: { digest: string }) => l.digest)).toEqual(
      docker.manifests[0]!.layers.map((l) => l.digest),
    );
    expect((await skopeoInspect(`oci:${dst}:oci`)).Layers).toEqual(docker.manifests[0]!.layers.map((l) => l.digest));
    // Without --oci a Docker image stays byte-identical.
    const same = await copy(`oci:${docker.dir}:docker`, `oci:${join(scratch, 'docker-same')}:d`);
    expect(same.root.digest).toBe(docker.rootDigest);
  });

  it('--platform picks one manifest, --all-platforms keeps the index, default is this machine', async () => {
    const [amd64, arm64] = twoPlatform.manifests;
    const arm = await copy(`oci:${twoPlatform.dir}:multiarch`, `oci:${join(scratch, 'arm')}:a`, {
      platform: { os: 'linux', architecture: 'aarch64' },
    });
    expect(arm.root.digest).toBe(arm64!.digest);
    expect(arm.manifests.map((m) => m.platform)).toEqual(['linux/arm64']);
    const host = await copy(`oci:${twoPlatform.dir}:multiarch`, `oci:${join(scratch, 'host')}:h`);
    expect(host.root.digest).toBe(amd64!.digest);
    const all = await copy(`oci:${twoPlatform.dir}:multiarch`, `oci:${join(scratch, 'all')}:all`, {
      allPlatforms: true,
    });
    expect(all.root.digest).toBe(twoPlatform.rootDigest);
    expect(all.manifests.map((m) => m.output.digest)).toEqual([amd64!.digest, arm64!.digest]);
    const raw = await skopeoInspect(`oci:${join(scratch, 'all')}:all`, true);
    expect((raw.manifests as Array<{ digest: string }>).map((m) => m.digest)).toEqual([amd64!.digest, arm64!.digest]);
    await expect(
      copy(`oci:${twoPlatform.dir}:multiarch`, `oci:${join(scratch, 'none')}:n`, {
        platform: { os: 'linux', architecture: 's390x' },
      }),
    ).rejects.toMatchObject({
      code: 'NOT_FOUND',
      message: expect.stringContaining('available: linux/amd64, linux/arm64'),
    });
    expect(existsSync(join(scratch, 'none'))).toBe(false);
    // The docker-archive sink itself refuses an index (one platform per archive) and leaves no file.
    await expect(
      copy(`oci:${twoPlatform.dir}:multiarch`, `docker-archive:${join(scratch, 'two.tar')}`, { allPlatforms: true }),
    ).rejects.toMatchObject({ code: 'UNSUPPORTED' });
    expect((await readdir(scratch)).filter((n) => n.startsWith('two.tar'))).toEqual([]);
  });
});

describe('registry round trip', () => {
  it('registry → oci → docker-archive → registry keeps every digest; skopeo reads what esgz pushed', async () => {
    const registry = registryAddress();
    const first = `${registry}/esgz-test/roundtrip:first`;
    await copy(`oci:${multi.dir}:multi`, first);
    expect(await manifestDigestOf(`docker://${first}`)).toBe(multi.rootDigest);
    const layout = join(scratch, 'rt-oci');
    const archive = join(scratch, 'rt.tar');
    const pulled = await copy(first, `oci:${layout}:rt`);
    expect(pulled.root.digest).toBe(multi.rootDigest);
    await copy(`oci:${layout}:rt`, `docker-archive:${archive}:rt:v1`);
    const second = `${registry}/esgz-test/roundtrip-2:second`;
    const pushed = await copy(`docker-archive:${archive}`, second);
    expect(pushed.root.digest).toBe(multi.rootDigest);
    const inspected = await skopeoInspect(`docker://${second}`);
    expect(inspected.Digest).toBe(multi.rootDigest);
    expect(inspected.Layers).toEqual(multi.manifests[0]!.layers.map((l) => l.digest));
  });

  it('a Docker-media-type image survives registry → docker-archive → registry byte for byte', async () => {
    const registry = registryAddress();
    const ref = `${registry}/esgz-test/docker-types:v1`;
    await copy(`oci:${docker.dir}:docker`, ref);
    const archive = join(scratch, 'docker-types.tar');
    await copy(ref, `docker-archive:${archive}:docker-types:v1`);
    const back = `${registry}/esgz-test/docker-types-back:v1`;
    expect((await copy(`docker-archive:${archive}`, back)).root.digest).toBe(docker.rootDigest);
    const raw = await skopeoInspect(`docker://${back}`, true);
    expect(raw.mediaType).toBe('application/vnd.docker.distribution.manifest.v2+json');
    expect(await manifestDigestOf(`docker://${back}`)).toBe(docker.rootDigest);
  });

  it('registry → same registry mounts blobs instead of copying them', async () => {
    const registry = registryAddress();
    const from = `${registry}/esgz-test/mount-src:v1`;
    await copy(`oci:${single.dir}:single`, from);
    const source = await openSource(from, { plainHttp: true });
    const sink = (await openSink(`${registry}/esgz-test/mount-dst:v1`, { plainHttp: true })) as Awaited<
      ReturnType<typeof openSink>
    > & { blobResults: ReadonlyMap<string, string> };
    const report = await transferImage({ source, sink });
    await source.close();
    expect(report.root.digest).toBe(single.rootDigest);
    expect(sink.blobResults.get(single.manifests[0]!.layers[0]!.digest)).toBe('mounted');
    expect(await manifestDigestOf(`docker://${registry}/esgz-test/mount-dst:v1`)).toBe(single.rootDigest);
  });

  it('multi-platform index through the registry keeps the index digest; skopeo copy back into oci: agrees', async () => {
    const ref = `${registryAddress()}/esgz-test/multiarch:all`;
    const pushed = await copy(`oci:${twoPlatform.dir}:multiarch`, ref, { allPlatforms: true });
    expect(pushed.root.digest).toBe(twoPlatform.rootDigest);
    const skopeoLayout = join(scratch, 'skopeo-from-registry');
    await execa('skopeo', ['copy', '--all', '--src-tls-verify=false', `docker://${ref}`, `oci:${skopeoLayout}:s`]);
    expect(await manifestDigestOf(`oci:${skopeoLayout}:s`)).not.toBe('');
    const raw = await skopeoInspect(`oci:${skopeoLayout}:s`, true);
    expect((raw.manifests as Array<{ digest: string }>).map((m) => m.digest)).toEqual(
      twoPlatform.manifests.map((m) => m.digest),
    );
    const back = await copy(`oci:${skopeoLayout}:s`, `oci:${join(scratch, 'back-all')}:b`, { allPlatforms: true });
    expect(back.root.digest).toBe(twoPlatform.rootDigest);
  });
});
