// The registry transport against the real docker-registry, seen through the fault proxy's access log.
import { execa } from 'execa';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { openRegistrySink, openRegistrySource } from '../../src/image/transports/registry.js';
import { MediaType } from '../../src/oci/media-types.js';
import { RegistryClient } from '../../src/registry/client.js';
import { startFaultProxy, type FaultProxy } from '../harness/fault-proxy.js';
import { registryAddress } from '../harness/registry.js';
import { randomBlob, rawManifest, readAll, rejection, streamOf, tinyImage, uniqueRepo } from './helpers.js';

let proxy: FaultProxy;
beforeAll(async () => {
  proxy = await startFaultProxy(registryAddress());
});
afterAll(async () => proxy.close());
beforeEach(() => {
  proxy.clearFaults();
  proxy.clearLog();
});

async function pushTinyImage(reference: string, layerSize = 50_000): Promise<ReturnType<typeof tinyImage>> {
  const image = tinyImage(layerSize);
  const sink = await openRegistrySink(reference, { plainHttp: true });
  await sink.putBlob(image.layer.desc, () => streamOf(image.layer.bytes));
  await sink.putBlob(image.config.desc, () => streamOf(image.config.bytes));
  await sink.commit(image.manifest);
  return image;
}

describe('registry transport', () => {
  it('pushes blobs and a manifest, tags last, and reads them back verified (skopeo agrees)', async () => {
    const repo = uniqueRepo('push');
    const reference = `${proxy.address}/${repo}:v1`;
    const image = tinyImage();
    const sink = await openRegistrySink(reference, { plainHttp: true });
    expect(sink.description).toBe(reference);
    expect(await sink.hasBlob(image.layer.desc)).toBe(false);
    await sink.putBlob(image.layer.desc, () => streamOf(image.layer.bytes));
    await sink.putBlob(image.config.desc, () => streamOf(image.config.bytes));
    expect(await sink.hasBlob(image.layer.desc)).toBe(true);
    await sink.putManifest(image.manifest);
    // Before commit nothing carries the tag.
    expect(proxy.count({ method: 'PUT', path: '/manifests/v1' })).toBe(0);
    await sink.commit(image.manifest);
    const manifestPuts = proxy.log.filter((e) => e.method === 'PUT' && e.path.includes('/manifests/'));
    expect(manifestPuts.map((e) => e.path.split('/manifests/')[1])).toEqual([image.manifest.digest, 'v1']);

    const source = await openRegistrySource(reference, { plainHttp: true });
    try {
      const root = await source.fetchRoot();
      expect(root.digest).toBe(image.manifest.digest);
      expect(root.mediaType).toBe(MediaType.ociManifest);
      expect(root.bytes.equals(image.manifest.bytes)).toBe(true);
      const byDigest = await source.fetchManifest({
        mediaType: MediaType.ociManifest,
        digest: image.manifest.digest,
        size: image.manifest.bytes.length,
      });
      expect(byDigest.bytes.equals(image.manifest.bytes)).toBe(true);
      expect((await readAll(await source.openBlob(image.layer.desc))).equals(image.layer.bytes)).toBe(true);
      expect((await readAll(await source.openBlob(image.config.desc))).equals(image.config.bytes)).toBe(true);
    } finally {
      await source.close();
    }

    // An independent client reads the same manifest bytes.
    const { stdout } = await execa('skopeo', [
      'inspect',
      '--raw',
      '--tls-verify=false',
      `docker://${registryAddress()}/${repo}:v1`,
    ]);
    expect(Buffer.from(stdout).equals(image.manifest.bytes)).toBe(true);

    // And what skopeo pushes (its own upload code) reads back verified here.
    const copied = uniqueRepo('skopeo-pushed');
    await execa('skopeo', [
      'copy',
      '--quiet',
      '--src-tls-verify=false',
      '--dest-tls-verify=false',
      `docker://${registryAddress()}/${repo}:v1`,
      `docker://${registryAddress()}/${copied}:s`,
    ]);
    const fromSkopeo = await openRegistrySource(`${registryAddress()}/${copied}:s`, { plainHttp: true });
    const copiedRoot = await fromSkopeo.fetchRoot();
    // skopeo re-serialises the manifest, so compare what it names, and the bytes skopeo itself reports.
    const raw = await execa('skopeo', [
      'inspect',
      '--raw',
      '--tls-verify=false',
      `docker://${registryAddress()}/${copied}:s`,
    ]);
    expect(copiedRoot.bytes.toString('utf8')).toBe(raw.stdout);
    const parsed = JSON.parse(copiedRoot.bytes.toString('utf8')) as {
      layers: Array<{ digest: string }>;
      config: { digest: string };
    };
    expect(parsed.layers.map((l) => l.digest)).toEqual([image.layer.desc.digest]);
    expect(parsed.config.digest).toBe(image.config.desc.digest);
    expect((await readAll(await fromSkopeo.openBlob(image.layer.desc))).equals(image.layer.bytes)).toBe(true);
    await fromSkopeo.close();
  });

  it('HEADs manifests by tag and digest', async () => {
    const repo = uniqueRepo('head');
    const image = await pushTinyImage(`${proxy.address}/${repo}:h`);
    const client = new RegistryClient(proxy.address, { plainHttp: true });
    const expected = {
      mediaType: MediaType.ociManifest,
      digest: image.manifest.digest,
      size: image.manifest.bytes.length,
    };
    expect(await client.headManifest(repo, 'h')).toEqual(expected);
    expect(await client.headManifest(repo, image.manifest.digest)).toEqual(expected);
    expect(await client.headManifest(repo, 'missing')).toBeUndefined();
    await client.close();
  });

  it('pulls by digest and rejects a destination digest that differs from the image', async () => {
    const repo = uniqueRepo('bydigest');
    const image = await pushTinyImage(`${proxy.address}/${repo}:t`);
    const source = await openRegistrySource(`${proxy.address}/${repo}@${image.manifest.digest}`, { plainHttp: true });
    expect((await source.fetchRoot()).digest).toBe(image.manifest.digest);
    await source.close();

    const other = tinyImage();
    const sink = await openRegistrySink(`${proxy.address}/${repo}@${image.manifest.digest}`, { plainHttp: true });
    await sink.putBlob(other.layer.desc, () => streamOf(other.layer.bytes));
    const err = await rejection(sink.commit(other.manifest));
    expect(err.code).toBe('BAD_REFERENCE');
  });

  it('reads byte ranges with Range requests', async () => {
    const repo = uniqueRepo('range');
    const image = await pushTinyImage(`${proxy.address}/${repo}:r`, 100_000);
    const source = await openRegistrySource(`${proxy.address}/${repo}:r`, { plainHttp: true });
    proxy.clearLog();
    const cases: Array<[number, number]> = [
      [0, 1],
      [0, 100_000],
      [12_345, 6_789],
      [99_999, 1],
      [50_000, 50_000],
    ];
    for (const [offset, length] of cases) {
      const got = await source.readBlobRange(image.layer.desc, offset, length);
      expect(got.equals(image.layer.bytes.subarray(offset, offset + length))).toBe(true);
    }
    const gets = proxy.log.filter((e) => e.method === 'GET' && e.path.includes('/blobs/'));
    expect(gets.map((e) => e.headers.range)).toEqual(cases.map(([o, l]) => `bytes=${o}-${o + l - 1}`));
    expect(gets.every((e) => e.status === 206)).toBe(true);
    // Only the asked-for bytes crossed the wire.
    expect(gets.reduce((sum, e) => sum + e.bytes, 0)).toBe(cases.reduce((sum, [, l]) => sum + l, 0));
    expect((await source.readBlobRange(image.layer.desc, 10, 0)).length).toBe(0);
    await source.close();
  });

  it('uploads a blob larger than the chunk size in PATCH chunks', async () => {
    const repo = uniqueRepo('chunked');
    const chunkSize = 64 * 1024;
    const blob = randomBlob(5 * chunkSize + 1234);
    const client = new RegistryClient(proxy.address, {
      plainHttp: true,
      monolithicUploadMax: chunkSize,
      uploadChunkSize: chunkSize,
    });
    expect(await client.uploadBlob(repo, blob.desc, () => streamOf(blob.bytes))).toBe('uploaded');
    const patches = proxy.log.filter((e) => e.method === 'PATCH');
    expect(patches.length).toBe(6);
    expect(patches.map((e) => e.headers['content-range'])).toEqual(
      [0, 1, 2, 3, 4, 5].map((i) => `${i * chunkSize}-${Math.min((i + 1) * chunkSize, blob.desc.size) - 1}`),
    );
    const finalPut = proxy.log.filter((e) => e.method === 'PUT');
    expect(finalPut.length).toBe(1);
    expect(finalPut[0]!.path).toContain(`digest=${encodeURIComponent(blob.desc.digest)}`);
    expect((await readAll(await client.openBlob(repo, blob.desc))).equals(blob.bytes)).toBe(true);
    await client.close();
  });

  it('skips blobs the destination has and mounts across repositories', async () => {
    const from = uniqueRepo('mount-src');
    const to = uniqueRepo('mount-dst');
    const image = await pushTinyImage(`${proxy.address}/${from}:x`);
    const source = await openRegistrySource(`${proxy.address}/${from}:x`, { plainHttp: true });
    const sink = await openRegistrySink(`${proxy.address}/${to}:y`, { plainHttp: true });
    proxy.clearLog();
    let opened = 0;
    const open = () => {
      opened += 1;
      return streamOf(image.layer.bytes);
    };
    await sink.putBlob(image.layer.desc, open, { mountFrom: source.location });
    expect(sink.blobResults.get(image.layer.desc.digest)).toBe('mounted');
    const posts = proxy.log.filter((e) => e.method === 'POST');
    expect(posts.length).toBe(1);
    expect(posts[0]!.path).toContain(`mount=${encodeURIComponent(image.layer.desc.digest)}`);
    expect(posts[0]!.path).toContain(`from=${encodeURIComponent(from)}`);
    expect(posts[0]!.status).toBe(201);
    expect(opened).toBe(0);

    proxy.clearLog();
    await sink.putBlob(image.layer.desc, open, { mountFrom: source.location });
    expect(sink.blobResults.get(image.layer.desc.digest)).toBe('exists');
    expect(proxy.count({ method: 'POST' })).toBe(0);
    expect(opened).toBe(0);

    // Another registry name is not mountable: a normal upload happens.
    proxy.clearLog();
    await sink.putBlob(image.config.desc, () => streamOf(image.config.bytes), {
      mountFrom: { registry: 'elsewhere.example:5000', repository: from },
    });
    expect(sink.blobResults.get(image.config.desc.digest)).toBe('uploaded');
    expect(proxy.log.filter((e) => e.method === 'POST').every((e) => !e.path.includes('mount='))).toBe(true);
    await sink.commit(image.manifest);
    await source.close();
  });

  it('refuses to upload a source whose bytes do not match the descriptor', async () => {
    const repo = uniqueRepo('badsource');
    const blob = randomBlob(10_000);
    const client = new RegistryClient(proxy.address, { plainHttp: true });
    const wrong = Buffer.from(blob.bytes);
    wrong[5] = wrong[5]! ^ 1;
    const err = await rejection(client.uploadBlob(repo, blob.desc, () => streamOf(wrong)));
    expect(err.code).toBe('DIGEST_MISMATCH');
    expect(await client.headBlob(repo, blob.desc.digest)).toBeUndefined();
    await client.close();
  });

  it('names the reference when the image is missing', async () => {
    const source = await openRegistrySource(`${proxy.address}/esgz-test/does-not-exist:nope`, { plainHttp: true });
    const err = await rejection(source.fetchRoot());
    expect(err.code).toBe('NOT_FOUND');
    expect(err.message).toContain(`${proxy.address}/esgz-test/does-not-exist:nope`);
    expect(err.message).not.toContain('\n');
    await source.close();
  });

  it('pushes and pulls Docker schema 2 manifests and manifest lists with their media types', async () => {
    const repo = uniqueRepo('docker');
    const layer = randomBlob(4_000, MediaType.dockerLayerGzip);
    const config = randomBlob(300, MediaType.dockerConfig);
    const manifest = rawManifest(
      { schemaVersion: 2, mediaType: MediaType.dockerManifest, config: config.desc, layers: [layer.desc] },
      MediaType.dockerManifest,
    );
    const list = rawManifest(
      {
        schemaVersion: 2,
        mediaType: MediaType.dockerManifestList,
        manifests: [
          {
            mediaType: MediaType.dockerManifest,
            digest: manifest.digest,
            size: manifest.bytes.length,
            platform: { os: 'linux', architecture: 'arm64' },
          },
        ],
      },
      MediaType.dockerManifestList,
    );
    const sink = await openRegistrySink(`${proxy.address}/${repo}:list`, { plainHttp: true });
    await sink.putBlob(layer.desc, () => streamOf(layer.bytes));
    await sink.putBlob(config.desc, () => streamOf(config.bytes));
    await sink.putManifest(manifest);
    await sink.commit(list);
    proxy.clearLog();
    const source = await openRegistrySource(`${proxy.address}/${repo}:list`, { plainHttp: true });
    const root = await source.fetchRoot();
    expect(root.mediaType).toBe(MediaType.dockerManifestList);
    expect(root.bytes.equals(list.bytes)).toBe(true);
    const child = await source.fetchManifest({
      mediaType: MediaType.dockerManifest,
      digest: manifest.digest,
      size: manifest.bytes.length,
    });
    expect(child.mediaType).toBe(MediaType.dockerManifest);
    // Both OCI and Docker types are accepted, so the registry never converts.
    const accept = String(proxy.log.find((e) => e.path.endsWith('/manifests/list'))!.headers.accept);
    for (const type of [
      MediaType.ociIndex,
      MediaType.ociManifest,
      MediaType.dockerManifestList,
      MediaType.dockerManifest,
    ])
      expect(accept).toContain(type);
    await source.close();
  });

  it('falls back to plain HTTP for a loopback registry that refuses TLS', async () => {
    const repo = uniqueRepo('fallback');
    const image = await pushTinyImage(`${proxy.address}/${repo}:f`);
    const source = await openRegistrySource(`${proxy.address}/${repo}:f`);
    expect((await source.fetchRoot()).digest).toBe(image.manifest.digest);
    await source.close();
  });
});

describe('registry faults', () => {
  let repo: string;
  let image: ReturnType<typeof tinyImage>;
  beforeAll(async () => {
    repo = uniqueRepo('faults');
    image = await pushTinyImage(`${registryAddress()}/${repo}:t`, 200_000);
  });

  it('retries 500s and succeeds when the third attempt works', async () => {
    const source = await openRegistrySource(`${proxy.address}/${repo}:t`, { plainHttp: true });
    proxy.fail(500, { method: 'GET', path: '/manifests/t', times: 2 });
    expect((await source.fetchRoot()).digest).toBe(image.manifest.digest);
    expect(proxy.log.filter((e) => e.path.endsWith('/manifests/t')).map((e) => e.status)).toEqual([500, 500, 200]);
    await source.close();
  });

  it('gives up after three 500s with a one-line message naming registry, path and status', async () => {
    const source = await openRegistrySource(`${proxy.address}/${repo}:t`, { plainHttp: true });
    proxy.fail(500, { method: 'GET', path: '/manifests/t', times: 3 });
    const err = await rejection(source.fetchRoot());
    expect(err.code).toBe('REGISTRY');
    expect(err.message).toContain(proxy.address);
    expect(err.message).toContain(`/v2/${repo}/manifests/t`);
    expect(err.message).toContain('HTTP 500');
    expect(err.message).toContain('after 3 attempts');
    expect(err.message).not.toContain('\n');
    expect(proxy.count({ path: '/manifests/t' })).toBe(3);
    await source.close();
  });

  it('retries a 429 and a connection reset', async () => {
    const source = await openRegistrySource(`${proxy.address}/${repo}:t`, { plainHttp: true });
    proxy.fail(429, { path: image.layer.desc.digest });
    proxy.reset({ path: image.layer.desc.digest });
    const bytes = await readAll(await source.openBlob(image.layer.desc));
    expect(bytes.equals(image.layer.bytes)).toBe(true);
    expect(proxy.count({ path: image.layer.desc.digest })).toBe(3);
    await source.close();
  });

  it('retries a failed upload from a fresh source stream', async () => {
    const target = uniqueRepo('upload-retry');
    const blob = randomBlob(30_000);
    const sink = await openRegistrySink(`${proxy.address}/${target}:u`, { plainHttp: true });
    proxy.fail(503, { method: 'PUT', path: '/blobs/uploads/' });
    let opened = 0;
    await sink.putBlob(blob.desc, () => {
      opened += 1;
      return streamOf(blob.bytes);
    });
    expect(opened).toBe(2);
    expect(await sink.hasBlob(blob.desc)).toBe(true);
    await sink.abort();
  });

  it('detects a corrupted blob download', async () => {
    const source = await openRegistrySource(`${proxy.address}/${repo}:t`, { plainHttp: true });
    proxy.corrupt({ method: 'GET', path: image.layer.desc.digest, offset: 123_456 });
    const err = await rejection(readAll(await source.openBlob(image.layer.desc)));
    expect(err.code).toBe('DIGEST_MISMATCH');
    expect(err.message).toContain(image.layer.desc.digest);
    expect(err.message).toContain(proxy.address);
    await source.close();
  });

  it('resumes a blob download that lost its connection, with a Range from the last byte', async () => {
    const source = await openRegistrySource(`${proxy.address}/${repo}:t`, { plainHttp: true });
    proxy.truncate({ method: 'GET', path: image.layer.desc.digest, afterBytes: 70_000 });
    proxy.truncate({ method: 'GET', path: image.layer.desc.digest, afterBytes: 50_000 });
    const bytes = await readAll(await source.openBlob(image.layer.desc));
    expect(bytes.equals(image.layer.bytes)).toBe(true);
    const gets = proxy.log.filter((e) => e.path.includes(image.layer.desc.digest));
    expect(gets.map((e) => e.headers.range)).toEqual([undefined, 'bytes=70000-', 'bytes=120000-']);
    await source.close();
  });

  it('detects a blob download truncated on every attempt', async () => {
    const source = await openRegistrySource(`${proxy.address}/${repo}:t`, { plainHttp: true });
    // 3 x 50 kB < the layer's 200 kB: every attempt is cut short (the third of 3 x 70 kB would
    // get all of the last 60 kB, which Node 24 rightly reads as complete).
    proxy.truncate({ method: 'GET', path: image.layer.desc.digest, afterBytes: 50_000, times: 3 });
    const err = await rejection(readAll(await source.openBlob(image.layer.desc)));
    expect(err.code).toBe('SIZE_MISMATCH');
    expect(err.message).toMatch(/truncated/);
    expect(err.message).toContain(image.layer.desc.digest);
    expect(err.message).not.toContain('\n');
    await source.close();
  });

  it('detects corruption in a resumed part of a download', async () => {
    const source = await openRegistrySource(`${proxy.address}/${repo}:t`, { plainHttp: true });
    proxy.truncate({ method: 'GET', path: image.layer.desc.digest, afterBytes: 70_000 });
    proxy.corrupt({ method: 'GET', path: image.layer.desc.digest, offset: 10 });
    const err = await rejection(readAll(await source.openBlob(image.layer.desc)));
    expect(err.code).toBe('DIGEST_MISMATCH');
    await source.close();
  });

  it('detects a corrupted manifest fetched by digest and a short ranged read', async () => {
    const source = await openRegistrySource(`${proxy.address}/${repo}@${image.manifest.digest}`, { plainHttp: true });
    proxy.corrupt({ method: 'GET', path: '/manifests/' });
    const err = await rejection(source.fetchRoot());
    expect(err.code).toBe('DIGEST_MISMATCH');
    proxy.clearLog();
    proxy.truncate({ method: 'GET', path: image.layer.desc.digest, afterBytes: 10, times: 3 });
    const short = await rejection(source.readBlobRange(image.layer.desc, 1000, 5000));
    expect(short.code).toBe('SIZE_MISMATCH');
    expect(short.message).toMatch(/truncated/);
    expect(proxy.count({ path: image.layer.desc.digest })).toBe(3);
    await source.close();
  });

  it('retries a ranged read and a manifest read that lost their connection midway', async () => {
    const source = await openRegistrySource(`${proxy.address}/${repo}:t`, { plainHttp: true });
    proxy.truncate({ method: 'GET', path: '/manifests/t', afterBytes: 20 });
    expect((await source.fetchRoot()).digest).toBe(image.manifest.digest);
    proxy.truncate({ method: 'GET', path: image.layer.desc.digest, afterBytes: 10, times: 2 });
    const range = await source.readBlobRange(image.layer.desc, 1000, 5000);
    expect(range.equals(image.layer.bytes.subarray(1000, 6000))).toBe(true);
    expect(proxy.log.filter((e) => e.fault === 'truncate')).toHaveLength(3);
    await source.close();
  });

  it('rejects a manifest whose tag answer does not match the registry digest header', async () => {
    const source = await openRegistrySource(`${proxy.address}/${repo}:t`, { plainHttp: true });
    proxy.corrupt({ method: 'GET', path: '/manifests/t' });
    const err = await rejection(source.fetchRoot());
    expect(err.code).toBe('DIGEST_MISMATCH');
    await source.close();
  });

  it('throttles bandwidth for every response', async () => {
    const source = await openRegistrySource(`${proxy.address}/${repo}:t`, { plainHttp: true });
    proxy.setBandwidth(400_000);
    const started = Date.now();
    await readAll(await source.openBlob(image.layer.desc));
    const elapsed = Date.now() - started;
    proxy.setBandwidth(undefined);
    // 200 kB at 400 kB/s takes about half a second.
    expect(elapsed).toBeGreaterThanOrEqual(400);
    await source.close();
  });
});

describe('unreachable and mis-specified registries', () => {
  it('fails with NETWORK naming the registry when nothing listens', async () => {
    const source = await openRegistrySource('127.0.0.1:1/x/y:z', { plainHttp: true });
    const err = await rejection(source.fetchRoot());
    expect(err.code).toBe('NETWORK');
    expect(err.message).toContain('127.0.0.1:1');
    expect(err.message).not.toContain('\n');
    await source.close();
  });

  it('rejects a bad reference before any network access', async () => {
    const err = await rejection(openRegistrySource('127.0.0.1:5000/Upper/case', {}));
    expect(err.code).toBe('BAD_REFERENCE');
  });

  it('pushes an index, reads its child by digest, and checks the child size', async () => {
    const repo = uniqueRepo('index');
    const image = await pushTinyImage(`${registryAddress()}/${repo}:child`);
    const index = rawManifest(
      {
        schemaVersion: 2,
        mediaType: MediaType.ociIndex,
        manifests: [
          {
            mediaType: MediaType.ociManifest,
            digest: image.manifest.digest,
            size: image.manifest.bytes.length,
            platform: { os: 'linux', architecture: 'amd64' },
          },
        ],
      },
      MediaType.ociIndex,
    );
    const sink = await openRegistrySink(`${registryAddress()}/${repo}:idx`, { plainHttp: true });
    await sink.commit(index);
    const source = await openRegistrySource(`${registryAddress()}/${repo}:idx`, { plainHttp: true });
    const root = await source.fetchRoot();
    expect(root.mediaType).toBe(MediaType.ociIndex);
    expect(root.digest).toBe(index.digest);
    const child = await source.fetchManifest({
      mediaType: MediaType.ociManifest,
      digest: image.manifest.digest,
      size: image.manifest.bytes.length,
    });
    expect(child.bytes.equals(image.manifest.bytes)).toBe(true);
    const wrongSize = await rejection(
      source.fetchManifest({ mediaType: MediaType.ociManifest, digest: image.manifest.digest, size: 3 }),
    );
    expect(wrongSize.code).toBe('SIZE_MISMATCH');
    await source.close();
  });
});
