// `esgz image convert` / `esgz image verify` / `esgz get-toc-digest` through the built CLI
// (npm run build first, as scripts/test.sh does), against OCI layouts and the test registry.
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { multiLayerEntries, writeOciImage, type WrittenImage } from '../fixtures/oci-image.js';
import { layoutBlobPath, readLayoutBlob as layoutBlob, readOciLayout } from '../fixtures/oci-layout.js';
import { registryAddress } from '../harness/registry.js';
import { gunzipCli, tarNames } from '../estargz/helpers.js';
import { sha256Digest } from '../fixtures/tar.js';
import { esgz, expectOneLineError as expectErrorWithCode, repoRoot } from '../harness/cli.js';
import { readEnvironment } from '../../src/cli/environment.js';
import { conversionOptionsFromFlags, type ConversionFlagValues } from '../../src/cli/flags.js';

const scratch = await mkdtemp(join(tmpdir(), 'esgz-convert-cli-'));
afterAll(() => rm(scratch, { recursive: true, force: true }));

const expectOneLineError = (result: { exitCode?: number; stderr: string }, pattern: RegExp) =>
  expectErrorWithCode(result, 'nonzero', pattern);

let image: WrittenImage;
let dockerImage: WrittenImage;

beforeAll(async () => {
  if (!existsSync(join(repoRoot, 'dist/commands/image/convert.js')))
    throw new Error('dist/ is missing: run `npm run build` first');
  image = await writeOciImage(join(scratch, 'src'), { tag: 'v1', layers: multiLayerEntries() });
  dockerImage = await writeOciImage(join(scratch, 'docker'), {
    tag: 'v1',
    layers: multiLayerEntries(),
    mediaTypes: 'docker',
  });
});

describe('esgz image convert --estargz', () => {
  const out = () => join(scratch, 'esgz');

  it('converts every layer, annotates it, and the blobs round-trip through gunzip | tar', async () => {
    const res = await esgz(
      'image',
      'convert',
      '--estargz',
      '--oci',
      '--json',
      `oci:${image.dir}:v1`,
      `oci:${out()}:esgz`,
    );
    expect(res.exitCode, res.stderr).toBe(0);
    const report = JSON.parse(res.stdout);
    expect(report).toMatchObject({ command: 'image convert', format: 'estargz', backend: 'libdeflate' });
    const layers = report.manifests[0].layers;
    expect(layers).toHaveLength(3);
    const manifest = JSON.parse((await layoutBlob(out(), report.manifests[0].digest)).toString());
    const config = JSON.parse((await layoutBlob(out(), manifest.config.digest)).toString());
    for (const [i, layer] of manifest.layers.entries()) {
      expect(layer.mediaType).toBe('application/vnd.oci.image.layer.v1.tar+gzip');
      const blob = await layoutBlob(out(), layer.digest);
      const tar = gunzipCli(blob);
      expect(config.rootfs.diff_ids[i]).toBe(sha256Digest(tar));
      expect(layer.annotations['io.containers.estargz.uncompressed-size']).toBe(String(tar.length));
      const toc = (await execa('tar', ['-xO', '-f', '-', 'stargz.index.json'], { input: tar, encoding: 'buffer' }))
        .stdout as unknown as Buffer;
      expect(layer.annotations['containerd.io/snapshot/stargz/toc.digest']).toBe(sha256Digest(Buffer.from(toc)));
      const names = tarNames(tar);
      expect(names[0]).toBe('.no.prefetch.landmark');
      expect(names.at(-1)).toBe('stargz.index.json');
      // Same entries as the source layer.
      const srcTar = gunzipCli(await layoutBlob(image.dir, image.manifests[0]!.layers[i]!.digest));
      expect(names.slice(1, -1)).toEqual(tarNames(srcTar));
      expect(layers[i].report).toMatchObject({ format: 'estargz', backend: 'libdeflate' });
    }
  });

  it('is byte-reproducible: the same manifest digest twice, with 1 or 2 workers', async () => {
    const a = await esgz(
      'image',
      'convert',
      '--estargz',
      '--oci',
      '--json',
      '--workers',
      '1',
      `oci:${image.dir}:v1`,
      `oci:${join(scratch, 'r1')}:x`,
    );
    const b = await esgz(
      'image',
      'convert',
      '--estargz',
      '--oci',
      '--json',
      '--workers',
      '2',
      `oci:${image.dir}:v1`,
      `oci:${join(scratch, 'r2')}:x`,
    );
    expect(a.exitCode, a.stderr).toBe(0);
    expect(JSON.parse(a.stdout).digest).toBe(JSON.parse(b.stdout).digest);
  });

  it('verify passes on the result and get-toc-digest agrees with the annotation', async () => {
    const v = await esgz('image', 'verify', '--json', `oci:${out()}:esgz`);
    expect(v.exitCode, v.stderr).toBe(0);
    const doc = JSON.parse(v.stdout);
    expect(doc.ok).toBe(true);
    expect(doc.manifests[0].layers.map((l: { status: string }) => l.status)).toEqual(['ok', 'ok', 'ok']);
    const text = await esgz('image', 'verify', `oci:${out()}:esgz`);
    expect(text.stdout).toMatch(/LAYER\s+SIZE\s+FORMAT/);

    const manifest = JSON.parse(v.stdout).manifests[0];
    const layer = manifest.layers[1];
    const one = await esgz('get-toc-digest', `oci:${out()}:esgz@${layer.digest}`);
    expect(one.exitCode, one.stderr).toBe(0);
    expect(one.stdout.trim()).toBe(layer.tocDigest);
    const file = await esgz('get-toc-digest', join(out(), 'blobs', 'sha256', layer.digest.slice(7)));
    expect(file.stdout.trim()).toBe(layer.tocDigest);
    const dump = await esgz('get-toc-digest', '--dump-toc', `oci:${out()}:esgz@${layer.digest}`);
    expect(sha256Digest(Buffer.from(dump.stdout.replace(/\n$/, '')))).toBe(layer.tocDigest);
    const listing = await esgz('get-toc-digest', `oci:${out()}:esgz`);
    expect(listing.stdout.trim().split('\n')).toHaveLength(3);
  });

  it('verify fails on a plain image and on a tampered layer', async () => {
    const plain = await esgz('image', 'verify', `oci:${image.dir}:v1`);
    expectOneLineError(plain, /no eStargz layers/);
    // Corrupt one byte in the middle of the biggest converted layer (a copy of the layout).
    const copy = join(scratch, 'tampered');
    await execa('cp', ['-r', out(), copy]);
    const [converted] = readOciLayout(copy, 'esgz').manifests;
    const big = converted!.layers.reduce((a, b) => (a.size > b.size ? a : b));
    const path = layoutBlobPath(copy, big.digest);
    const data = await readFile(path);
    data[Math.floor(data.length / 3)] ^= 0xff;
    await writeFile(path, data);
    const bad = await esgz('image', 'verify', `oci:${copy}:esgz`);
    expect(bad.exitCode).not.toBe(0);
    expect(bad.stderr).toMatch(/esgz: .*(digest|failed)/);
  });

  it('--uncompress writes plain tar layers with the same diffIDs', async () => {
    const res = await esgz(
      'image',
      'convert',
      '--uncompress',
      '--json',
      `oci:${out()}:esgz`,
      `oci:${join(scratch, 'plain')}:plain`,
    );
    expect(res.exitCode, res.stderr).toBe(0);
    const report = JSON.parse(res.stdout);
    for (const l of report.manifests[0].layers) {
      expect(l.output.mediaType).toBe('application/vnd.oci.image.layer.v1.tar');
      const blob = await layoutBlob(join(scratch, 'plain'), l.output.digest);
      expect(sha256Digest(blob)).toBe(l.diffID);
    }
  });

  it('--reuse keeps layers that already are eStargz', async () => {
    const res = await esgz(
      'image',
      'convert',
      '--estargz',
      '--oci',
      '--reuse',
      '--json',
      `oci:${out()}:esgz`,
      `oci:${join(scratch, 'reused')}:x`,
    );
    expect(res.exitCode, res.stderr).toBe(0);
    const report = JSON.parse(res.stdout);
    expect(report.manifests[0].layers.map((l: { changed: boolean }) => l.changed)).toEqual([false, false, false]);
  });

  it('--prefetch-list and --estargz-record-in put the listed files first', async () => {
    const list = join(scratch, 'prefetch.txt');
    await writeFile(list, '# comment\n/etc/greeting\nusr/share/*.bin\n');
    const res = await esgz(
      'image',
      'convert',
      '--estargz',
      '--oci',
      '--json',
      '--prefetch-list',
      list,
      `oci:${image.dir}:v1`,
      `oci:${join(scratch, 'prio')}:x`,
    );
    expect(res.exitCode, res.stderr).toBe(0);
    const layer = JSON.parse(res.stdout).manifests[0].layers[1];
    const names = tarNames(gunzipCli(await layoutBlob(join(scratch, 'prio'), layer.output.digest)));
    expect(names.slice(0, 6)).toEqual([
      'etc/',
      'etc/greeting',
      'usr/',
      'usr/share/',
      'usr/share/big.bin',
      '.prefetch.landmark',
    ]);

    const record = join(scratch, 'record.json');
    await writeFile(
      record,
      `${JSON.stringify({ path: '/data/new', manifestDigest: 'x', layerIndex: 2 })}\n${JSON.stringify({ path: '/etc/greeting' })}\n`,
    );
    const rec = await esgz(
      'image',
      'convert',
      '--estargz',
      '--oci',
      '--json',
      '--estargz-record-in',
      record,
      `oci:${image.dir}:v1`,
      `oci:${join(scratch, 'rec')}:x`,
    );
    expect(rec.exitCode, rec.stderr).toBe(0);
    const l2 = JSON.parse(rec.stdout).manifests[0].layers[2];
    // /etc/greeting is not in layer 2: ignored there, like ctr-remote does.
    expect(tarNames(gunzipCli(await layoutBlob(join(scratch, 'rec'), l2.output.digest))).slice(0, 3)).toEqual([
      'data/',
      'data/new',
      '.prefetch.landmark',
    ]);
  });

  it('through the registry: convert pushes, verify and get-toc-digest read by range requests', async () => {
    const ref = `${registryAddress()}/esgz-cli/convert:esgz`;
    const res = await esgz('image', 'convert', '--estargz', '--oci', '--plain-http', `oci:${image.dir}:v1`, ref);
    expect(res.exitCode, res.stderr).toBe(0);
    const v = await esgz('image', 'verify', '--plain-http', '--json', ref);
    expect(v.exitCode, v.stderr).toBe(0);
    const layer = JSON.parse(v.stdout).manifests[0].layers[0];
    const one = await esgz('get-toc-digest', '--plain-http', `${ref}@${layer.digest}`);
    expect(one.stdout.trim()).toBe(layer.tocDigest);
  });

  it('--zstdchunked writes zstd:chunked layers that verify', async () => {
    const dst = join(scratch, 'zstd');
    const res = await esgz(
      'image',
      'convert',
      '--zstdchunked',
      '--oci',
      '--json',
      `oci:${image.dir}:v1`,
      `oci:${dst}:z`,
    );
    expect(res.exitCode, res.stderr).toBe(0);
    const report = JSON.parse(res.stdout);
    const manifest = JSON.parse((await layoutBlob(dst, report.manifests[0].digest)).toString());
    for (const layer of manifest.layers) {
      expect(layer.mediaType).toBe('application/vnd.oci.image.layer.v1.tar+zstd');
      expect(layer.annotations['containerd.io/snapshot/stargz/toc.digest']).toMatch(/^sha256:/);
    }
    const v = await esgz('image', 'verify', '--json', `oci:${dst}:z`);
    expect(v.exitCode, v.stderr).toBe(0);
    expect(JSON.parse(v.stdout).manifests[0].layers.map((l: { status: string }) => l.status)).toEqual([
      'ok',
      'ok',
      'ok',
    ]);
  });

  it('--estargz-external-toc writes footer-only layers and a DST-esgztoc image that verify uses', async () => {
    const dst = join(scratch, 'ext');
    const res = await esgz(
      'image',
      'convert',
      '--estargz',
      '--oci',
      '--estargz-external-toc',
      '--json',
      `oci:${image.dir}:v1`,
      `oci:${dst}:ext`,
    );
    expect(res.exitCode, res.stderr).toBe(0);
    const report = JSON.parse(res.stdout);
    expect(report.tocImage.reference).toBe(`oci:${dst}:ext-esgztoc`);
    const manifest = JSON.parse((await layoutBlob(dst, report.manifests[0].digest)).toString());
    const tocManifest = JSON.parse((await layoutBlob(dst, report.tocImage.digest)).toString());
    expect(tocManifest.layers).toHaveLength(3);
    for (const layer of manifest.layers) {
      const blob = await layoutBlob(dst, layer.digest);
      expect(blob.subarray(blob.length - 46 + 16, blob.length - 46 + 33).toString()).toBe('STARGZEXTERNALTOC');
      const tar = gunzipCli(blob);
      expect(tarNames(tar)).not.toContain('stargz.index.json');
      const toc = tocManifest.layers.find(
        (l: { annotations: Record<string, string> }) =>
          l.annotations['containerd.io/snapshot/stargz/layer.digest'] === layer.digest,
      );
      expect(toc, layer.digest).toBeDefined();
      const tocJSON = (
        await execa('tar', ['-xO', '-f', '-', 'stargz.index.json'], {
          input: gunzipCli(await layoutBlob(dst, toc.digest)),
          encoding: 'buffer',
        })
      ).stdout as unknown as Buffer;
      expect(sha256Digest(Buffer.from(tocJSON))).toBe(layer.annotations['containerd.io/snapshot/stargz/toc.digest']);
    }
    const v = await esgz('image', 'verify', '--json', `oci:${dst}:ext`);
    expect(v.exitCode, v.stderr + v.stdout).toBe(0);
    expect(JSON.parse(v.stdout).manifests[0].layers.map((l: { format: string }) => l.format)).toEqual([
      'estargz-external',
      'estargz-external',
      'estargz-external',
    ]);
    const d = await esgz('get-toc-digest', `oci:${dst}:ext@${manifest.layers[0].digest}`);
    expect(d.stdout.trim()).toBe(manifest.layers[0].annotations['containerd.io/snapshot/stargz/toc.digest']);
  });

  it('--estargz-keep-diff-id keeps every diffID of the source', async () => {
    const dst = join(scratch, 'keep');
    const res = await esgz(
      'image',
      'convert',
      '--estargz',
      '--oci',
      '--estargz-external-toc',
      '--estargz-keep-diff-id',
      '--json',
      `oci:${image.dir}:v1`,
      `oci:${dst}:k`,
    );
    expect(res.exitCode, res.stderr).toBe(0);
    const report = JSON.parse(res.stdout);
    expect(report.manifests[0].layers.map((l: { diffID: string }) => l.diffID)).toEqual(
      image.manifests[0]!.layers.map((l) => l.diffID),
    );
    const v = await esgz('image', 'verify', `oci:${dst}:k`);
    expect(v.exitCode, v.stderr + v.stdout).toBe(0);
    expect(v.stdout).toMatch(/no landmark/);
    expectOneLineError(
      await esgz(
        'image',
        'convert',
        '--estargz',
        '--oci',
        '--estargz-external-toc',
        '--estargz-keep-diff-id',
        '--estargz-record-in',
        '/dev/null',
        `oci:${image.dir}:v1`,
        `oci:${dst}:k2`,
      ),
      /--estargz-keep-diff-id conflicts with --estargz-record-in/,
    );
  });

  it('warns for --estargz without --oci on Docker media types', async () => {
    const res = await esgz(
      'image',
      'convert',
      '--estargz',
      `oci:${dockerImage.dir}:v1`,
      `oci:${join(scratch, 'dock')}:x`,
    );
    expect(res.exitCode, res.stderr).toBe(0);
    expect(res.stderr.match(/warning: option --estargz should be used in conjunction with --oci/g)).toHaveLength(1);
    // An OCI source needs no --oci: no warning.
    const oci = await esgz('image', 'convert', '--estargz', `oci:${image.dir}:v1`, `oci:${join(scratch, 'ociw')}:x`);
    expect(oci.exitCode, oci.stderr).toBe(0);
    expect(oci.stderr).toBe('');
  });

  it('a layer with an unsafe path: one line naming layer and entry, nothing written', async () => {
    const evil = await writeOciImage(join(scratch, 'evil-src'), {
      tag: 'v1',
      layers: [[{ type: 'file', path: 'etc/../../escape', content: 'x' }]],
    });
    const res = await esgz(
      'image',
      'convert',
      '--estargz',
      '--oci',
      `oci:${evil.dir}:v1`,
      `oci:${join(scratch, 'evil-out')}:x`,
    );
    expectOneLineError(res, /layer 0 \([0-9a-f]{12}\).*etc\/\.\.\/\.\.\/escape/);
    expect(res.stderr).not.toMatch(/layer 0 \([0-9a-f]{12}\).*layer 0 \(/); // named once
    expect(existsSync(join(scratch, 'evil-out', 'index.json'))).toBe(false);
  });

  it('bad flag combinations: one line, non-zero exit', async () => {
    const src = `oci:${image.dir}:v1`;
    const dst = `oci:${join(scratch, 'never')}:x`;
    expectOneLineError(
      await esgz('image', 'convert', '--estargz', '--uncompress', src, dst),
      /--estargz conflicts with --uncompress/,
    );
    expectOneLineError(
      await esgz('image', 'convert', '--zstdchunked', src, dst),
      /--zstdchunked must be used in conjunction with --oci/,
    );
    expectOneLineError(await esgz('image', 'convert', src, dst), /specify a layer format/);
    expectOneLineError(
      await esgz('image', 'convert', '--estargz', '--oci', '--estargz-keep-diff-id', src, dst),
      /--estargz-keep-diff-id must be used with --estargz-external-toc/,
    );
    expectOneLineError(
      await esgz('image', 'convert', '--estargz', '--oci', '--prefetch-list', '/nonexistent/list', src, dst),
      /cannot read prefetch list/,
    );
    expect(existsSync(join(scratch, 'never'))).toBe(false);
  });
});

/** The built CLI with ESGZ_* variables set, as a user would run it. */
function esgzWithEnv(env: Record<string, string>, ...args: string[]) {
  const bin = join(repoRoot, 'bin/run.js');
  return execa('node', [bin, ...args], { reject: false, env: { DEBUG: '', ...env }, stdin: 'ignore' });
}

describe('environment variables: read by the command, handed to the conversion as options', () => {
  const src = () => `oci:${image.dir}:v1`;
  const never = () => `oci:${join(scratch, 'never')}:x`;
  const convert = (env: Record<string, string>, ...args: string[]) =>
    esgzWithEnv(env, 'image', 'convert', '--oci', ...args);

  it('a bad ESGZ_GZIP_BACKEND is a one-line error naming the variable, and nothing is written', async () => {
    const dst = join(scratch, 'env-bad');
    const res = await convert({ ESGZ_GZIP_BACKEND: 'pigz' }, '--estargz', src(), `oci:${dst}:x`);
    expectErrorWithCode(res, 2, /ESGZ_GZIP_BACKEND=pigz is not one of libdeflate, zlib, auto/);
    expect(existsSync(dst)).toBe(false);
  });

  it('ESGZ_GZIP_BACKEND=zlib picks zlib, and levels above 9 are refused with it', async () => {
    const res = await convert(
      { ESGZ_GZIP_BACKEND: 'zlib' },
      '--estargz',
      '--json',
      src(),
      `oci:${join(scratch, 'env-zlib')}:x`,
    );
    expect(res.exitCode, res.stderr).toBe(0);
    const report = JSON.parse(res.stdout);
    expect(report.backend).toBe('zlib');
    const backends = report.manifests[0].layers.map((l: { report: { backend: string } }) => l.report.backend);
    expect(backends).toEqual(['zlib', 'zlib', 'zlib']);
    const twelve = await convert(
      { ESGZ_GZIP_BACKEND: 'zlib' },
      '--estargz',
      '--estargz-compression-level',
      '12',
      src(),
      never(),
    );
    expectOneLineError(twelve, /--estargz-compression-level 12 needs libdeflate/);
  });

  it('ESGZ_ZSTDCHUNKED_GITHUB_ANNOTATIONS=1 adds containers/storage annotations to zstd:chunked layers', async () => {
    const dst = join(scratch, 'env-gh');
    const res = await convert(
      { ESGZ_ZSTDCHUNKED_GITHUB_ANNOTATIONS: '1' },
      '--zstdchunked',
      '--json',
      src(),
      `oci:${dst}:z`,
    );
    expect(res.exitCode, res.stderr).toBe(0);
    const manifest = JSON.parse((await layoutBlob(dst, JSON.parse(res.stdout).manifests[0].digest)).toString());
    for (const layer of manifest.layers) {
      const checksum = layer.annotations['io.containers.zstd-chunked.manifest-checksum'];
      expect(checksum).toMatch(/^sha256:/);
      expect(layer.annotations['io.github.containers.zstd-chunked.manifest-checksum']).toBe(checksum);
    }
  });

  it('a bad ESGZ_WORKERS is a one-line error; a good one is the default that --workers overrides', async () => {
    expectOneLineError(await convert({ ESGZ_WORKERS: 'many' }, '--estargz', src(), never()), /ESGZ_WORKERS=many/);
    const res = await esgzWithEnv({ ESGZ_WORKERS: '1' }, 'version', '--json');
    expect(JSON.parse(res.stdout).gzip.workers).toBe(1);
    const flags: ConversionFlagValues = {
      oci: true,
      reuse: false,
      zstdchunked: false,
      'estargz-compression-level': 9,
      'estargz-chunk-size': 0,
      'estargz-min-chunk-size': 0,
      'estargz-external-toc': false,
      'zstdchunked-compression-level': 3,
      'zstdchunked-chunk-size': 0,
    };
    const environment = readEnvironment({ ESGZ_WORKERS: '3', ESGZ_GZIP_BACKEND: 'zlib' });
    const fromEnvironment = await conversionOptionsFromFlags(flags, 'estargz', environment);
    expect(fromEnvironment).toMatchObject({ workers: 3, gzipBackend: 'zlib' });
    expect((await conversionOptionsFromFlags({ ...flags, workers: 2 }, 'estargz', environment)).workers).toBe(2);
  });
});
