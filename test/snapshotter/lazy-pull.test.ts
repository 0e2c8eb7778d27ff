/**
 * Lazy pull end to end against the real test registry, through the counting / fault-injecting
 * proxy: rpull fetches only manifest, config, footer+TOC and the prioritized range per layer;
 * run of the optimized workload fetches nothing more; a TOC that does not match its annotation
 * fails rpull before anything is stored or mounted; corrupt chunks give EIO and are not cached;
 * a registry that goes away gives a bounded EIO while cached files keep working; the image tree
 * served through FUSE + overlayfs equals the tree of the unpacked layers.
 */
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import os from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openSink, openSource } from '../../src/image/transports/index.js';
import { optimizeImage } from '../../src/optimizer/optimize-image.js';
import { isMounted } from '../../src/host/mounts.js';
import { prepareRootfs } from '../../src/rootfs/overlay.js';
import { listImages, pruneState, removeImage } from '../../src/snapshotter/manage.js';
import { rpull } from '../../src/snapshotter/rpull.js';
import { mountImage, runContainer } from '../../src/snapshotter/run.js';
import { busyboxImage, debianImage, debianImageCached } from '../fixtures/debian.js';
import { startFaultProxy, type FaultProxy } from '../harness/fault-proxy.js';
import { registryAddress } from '../harness/registry.js';
import { buildTar } from '../fixtures/tar-stream.js';
import { estargzLayer, pushEstargzImage, walkTree } from './helpers.js';
import { pushOciImage } from '../fixtures/oci-push.js';

function capture(): { stream: PassThrough; text: () => string } {
  const stream = new PassThrough();
  const parts: Buffer[] = [];
  stream.on('data', (c: Buffer) => parts.push(c));
  return { stream, text: () => Buffer.concat(parts).toString() };
}

/** Blob requests in the proxy log, by digest. */
function blobRequests(proxy: FaultProxy) {
  return proxy.log
    .filter((e) => e.path.includes('/blobs/'))
    .map((e) => ({
      digest: /\/blobs\/(sha256:[0-9a-f]{64})/.exec(e.path)?.[1] ?? '',
      range: e.headers.range as string | undefined,
      bytes: e.bytes,
      method: e.method,
    }));
}

/** A one-layer eStargz image with a chosen toc.digest annotation. */
async function pushHandmadeImage(reference: string, tocAnnotation: (real: string) => string): Promise<void> {
  const tar = await buildTar([
    { name: 'bin/', type: 'directory' },
    { name: 'bin/hello', content: 'hi\n' },
  ]);
  await pushEstargzImage(reference, [tar], { config: { Cmd: ['/bin/hello'] } }, { tocAnnotation });
}

describe('lazy pull and run', () => {
  let proxy: FaultProxy;
  let work: string;
  let busyboxRef: string;
  let busyboxRuntimeFiles: string[];

  beforeAll(async () => {
    work = await mkdtemp(join(os.tmpdir(), 'esgz-lazy-'));
    proxy = await startFaultProxy(registryAddress());
    // The optimized busybox, with no --prefetch-list: the workload's files, then the files runc
    // read setting the container up (/etc/passwd, /etc/group), before the prefetch landmark.
    const fixture = await busyboxImage();
    const source = await openSource(fixture.ref);
    const sink = await openSink(`${registryAddress()}/h6/busybox:esgz`, { plainHttp: true });
    try {
      const optimized = await optimizeImage({
        source,
        sink,
        format: 'estargz',
        convert: { chunkSize: 256 * 1024 },
        oci: true,
        run: { entrypoint: ['/bin/sh', '-c'], args: ['cat /etc/hello; ls /bin | head -3'] },
        periodSeconds: 10,
        workloadStdout: new PassThrough().resume(),
        workloadStderr: new PassThrough().resume(),
      });
      busyboxRuntimeFiles = optimized.profiled!.runtimeFiles;
    } finally {
      await source.close();
    }
    busyboxRef = `${proxy.address}/h6/busybox:esgz`;
  });

  afterAll(async () => {
    await proxy?.close();
    if (work) await rm(work, { recursive: true, force: true });
  });

  it('rpull fetches only manifest, config, TOCs and the prioritized range; run of the workload fetches nothing more', async () => {
    // The optimizer prioritized runc's setup reads on its own (no --prefetch-list helped it).
    expect(busyboxRuntimeFiles).toEqual(['etc/passwd', 'etc/group']);
    const root = join(work, 'state-busybox');
    proxy.clearLog();
    const report = await rpull({ reference: busyboxRef, stateRoot: root, plainHttp: true });
    expect(report.layers).toHaveLength(1);
    expect(report.layers[0]!.kind).toBe('lazy');
    const manifests = proxy.log.filter((e) => e.path.includes('/manifests/'));
    expect(manifests.length).toBeGreaterThanOrEqual(1);
    const blobs = blobRequests(proxy);
    const layerDigest = report.layers[0]!.digest;
    const layerReqs = blobs.filter((b) => b.digest === layerDigest);
    const others = blobs.filter((b) => b.digest !== layerDigest);
    // The config, whole; nothing else but the layer.
    expect(others).toHaveLength(1);
    // Footer, TOC, and one prioritized range: every one a Range request, never the whole blob.
    expect(layerReqs).toHaveLength(3);
    for (const r of layerReqs) expect(r.range, JSON.stringify(r)).toMatch(/^bytes=\d+-\d+$/);
    const layerBytes = layerReqs.reduce((n, r) => n + r.bytes, 0);
    expect(report.layers[0]!.prefetchedBytes).toBeGreaterThan(0);
    expect(layerBytes).toBe(report.layers[0]!.fetchedBytes);
    expect(layerBytes).toBeLessThan(report.layers[0]!.size);

    proxy.clearLog();
    const out = capture();
    const result = await runContainer({
      reference: busyboxRef,
      stateRoot: root,
      rm: true,
      run: {},
      command: ['/bin/sh', '-c', 'cat /etc/hello; ls /bin | head -3'],
      stdout: out.stream,
      stderr: out.stream,
    });
    expect(out.text()).toContain('hello from the esgz busybox fixture');
    expect(result.exitCode).toBe(0);
    expect(blobRequests(proxy)).toEqual([]);
    expect(proxy.log.filter((e) => e.path.includes('/manifests/'))).toEqual([]);
    expect(result.fetches[0]!.requests).toBe(0);
    // Nothing left mounted, no container directory kept with --rm.
    expect(await readdir(join(root, 'containers'))).toEqual([]);

    // Control: the same run without the prefetch has to fetch the workload's chunks itself, and the
    // counting sees it (so the zero above means something).
    const cold = join(work, 'state-busybox-cold');
    await rpull({ reference: busyboxRef, stateRoot: cold, plainHttp: true, noPrefetch: true });
    proxy.clearLog();
    const out2 = capture();
    const r2 = await runContainer({
      reference: busyboxRef,
      stateRoot: cold,
      rm: true,
      run: {},
      command: ['/bin/sh', '-c', 'cat /etc/hello'],
      stdout: out2.stream,
      stderr: out2.stream,
    });
    expect(r2.exitCode).toBe(0);
    expect(out2.text()).toContain('hello from the esgz busybox fixture');
    expect(r2.fetches[0]!.requests).toBeGreaterThan(0);
    expect(blobRequests(proxy).filter((b) => b.digest === layerDigest).length).toBe(r2.fetches[0]!.requests);
  });

  it('image ls / rm / prune manage the state root', async () => {
    const root = join(work, 'state-manage');
    await rpull({ reference: busyboxRef, stateRoot: root, plainHttp: true });
    const listed = await listImages(root);
    expect(listed.map((i) => i.reference)).toEqual([busyboxRef]);
    expect(listed[0]!.lazyLayers).toBe(1);
    const nothing = await pruneState(root);
    expect(nothing).toMatchObject({ blobs: 0, layers: 0, chunks: 0 });
    await removeImage(busyboxRef, root);
    expect(await listImages(root)).toEqual([]);
    const pruned = await pruneState(root);
    expect(pruned.blobs).toBe(2);
    expect(pruned.layers).toBe(1);
    expect(pruned.chunks).toBeGreaterThan(0);
    expect(await pruneState(root)).toMatchObject({ blobs: 0, layers: 0, chunks: 0 });
    await expect(removeImage(busyboxRef, root)).rejects.toMatchObject({ code: 'NOT_FOUND' });
  });

  it('fails rpull before storing or mounting anything when the TOC does not match its annotation', async () => {
    const bad = `${registryAddress()}/h6/badtoc:1`;
    await pushHandmadeImage(bad, () => `sha256:${'0'.repeat(64)}`);
    const root = join(work, 'state-badtoc');
    await expect(rpull({ reference: bad, stateRoot: root, plainHttp: true })).rejects.toMatchObject({
      code: 'DIGEST_MISMATCH',
    });
    expect(await listImages(root)).toEqual([]);
    expect(await readdir(join(root, 'blobs', 'sha256'))).toEqual([]);
    expect(await readdir(join(root, 'layers', 'sha256'))).toEqual([]);
    await expect(mountImage({ reference: bad, stateRoot: root, workDir: join(work, 'never') })).rejects.toMatchObject({
      code: 'NOT_FOUND',
    });

    // The same image with the right annotation pulls and runs.
    const good = `${registryAddress()}/h6/goodtoc:1`;
    await pushHandmadeImage(good, (real) => real);
    await rpull({ reference: good, stateRoot: root, plainHttp: true });
    expect((await listImages(root)).map((i) => i.reference)).toEqual([good]);
  });

  it('serves the same tree through FUSE + overlayfs as an unpack of the same layers', async () => {
    const root = join(work, 'state-tree');
    await rpull({ reference: busyboxRef, stateRoot: root, plainHttp: true, noPrefetch: true });
    const fixture = await busyboxImage();
    const { createReadStream } = await import('node:fs');
    const unpacked = await prepareRootfs({
      workDir: join(work, 'tree-unpacked'),
      layers: fixture.layers.map((l) => ({ open: async () => createReadStream(l.tarPath) })),
      mode: 'overlay',
    });
    const image = await mountImage({
      reference: busyboxRef,
      stateRoot: root,
      workDir: join(work, 'tree-lazy'),
      plainHttp: true,
    });
    try {
      const expected = await walkTree(unpacked.rootfs);
      const actual = await walkTree(image.rootfs);
      expect([...actual.keys()]).toEqual([...expected.keys()]);
      for (const [path, exp] of expected) {
        const { ino: _a, ...want } = exp;
        const { ino: _b, ...got } = actual.get(path)!;
        if (path === '') {
          delete want.mtime;
          delete got.mtime;
        }
        expect(got, path).toEqual(want);
      }
    } finally {
      await image.release();
      await unpacked.release();
    }
    expect(isMounted(image.rootfs)).toBe(false);
  });

  it('fails reads of corrupt chunks with EIO without caching them, then serves them once the registry is healthy', async () => {
    const root = join(work, 'state-corrupt');
    const report = await rpull({ reference: busyboxRef, stateRoot: root, plainHttp: true, noPrefetch: true });
    const image = await mountImage({
      reference: busyboxRef,
      stateRoot: root,
      workDir: join(work, 'corrupt-run'),
      plainHttp: true,
    });
    try {
      proxy.corrupt({ path: report.layers[0]!.digest, times: 20 });
      const hello = join(image.rootfs, 'etc/hello');
      const bad = await execa('cat', [hello], { reject: false });
      expect(bad.exitCode).not.toBe(0);
      expect(bad.stderr).toMatch(/Input\/output error/);
      expect(image.lazies[0]!.stats.chunksFetched).toBe(0);
      proxy.clearFaults();
      const good = await execa('cat', [hello]);
      expect(good.stdout).toBe('hello from the esgz busybox fixture');
    } finally {
      proxy.clearFaults();
      await image.release();
    }
  });

  it('retries transient registry faults (5xx, dropped connections) and serves the data', async () => {
    const root = join(work, 'state-transient');
    const report = await rpull({ reference: busyboxRef, stateRoot: root, plainHttp: true, noPrefetch: true });
    const image = await mountImage({
      reference: busyboxRef,
      stateRoot: root,
      workDir: join(work, 'transient-run'),
      plainHttp: true,
    });
    try {
      proxy.clearLog();
      proxy.fail(503, { path: report.layers[0]!.digest, times: 1 });
      proxy.reset({ path: report.layers[0]!.digest, times: 1 });
      const r = await execa('cat', [join(image.rootfs, 'etc/hello')]);
      expect(r.stdout).toBe('hello from the esgz busybox fixture');
      const faults = proxy.log.filter((e) => e.fault).map((e) => e.fault);
      expect(faults.sort()).toEqual(['fail', 'reset']);
    } finally {
      proxy.clearFaults();
      await image.release();
    }
  });

  it('gives a bounded EIO for uncached data when the registry goes away, while cached files still read', async () => {
    const lonely = await startFaultProxy(registryAddress());
    const ref = `${lonely.address}/h6/busybox:esgz`;
    const root = join(work, 'state-gone');
    await rpull({ reference: ref, stateRoot: root, plainHttp: true, noPrefetch: true });
    const image = await mountImage({
      reference: ref,
      stateRoot: root,
      workDir: join(work, 'gone-run'),
      plainHttp: true,
      fetchPolicy: { deadlineMs: 3000, attempts: 2 },
    });
    try {
      const hello = join(image.rootfs, 'etc/hello');
      expect((await execa('cat', [hello])).stdout).toBe('hello from the esgz busybox fixture');
      await lonely.close();
      const started = Date.now();
      const r = await execa('md5sum', [join(image.rootfs, 'bin/busybox')], { reject: false, timeout: 60_000 });
      expect(r.exitCode).not.toBe(0);
      expect(r.stderr).toMatch(/Input\/output error/);
      expect(Date.now() - started).toBeLessThan(20_000);
      // Dropping the kernel's page cache is not needed: the file went through the chunk cache.
      expect((await execa('cat', [hello])).stdout).toBe('hello from the esgz busybox fixture');
    } finally {
      await image.release();
      await lonely.close().catch(() => undefined);
    }
  });

  it('with --background-fetch holds the whole image, so it runs after the registry is gone', async () => {
    const lonely = await startFaultProxy(registryAddress());
    const ref = `${lonely.address}/h6/busybox:esgz`;
    const root = join(work, 'state-background');
    let report;
    try {
      report = await rpull({ reference: ref, stateRoot: root, plainHttp: true, backgroundFetch: true });
    } finally {
      await lonely.close();
    }
    expect(report.layers[0]!.fetchedBytes).toBeLessThanOrEqual(report.layers[0]!.size);
    expect(report.layers[0]!.fetchedBytes).toBeGreaterThan(report.layers[0]!.size * 0.9);
    const out = capture();
    const result = await runContainer({
      reference: ref,
      stateRoot: root,
      rm: true,
      run: {},
      command: ['md5sum', '/bin/busybox'],
      stdout: out.stream,
      stderr: out.stream,
      fetchPolicy: { deadlineMs: 2000, attempts: 1 },
    });
    const hostSum = (await execa('md5sum', ['/bin/busybox'])).stdout.split(' ')[0];
    expect(out.text().split(' ')[0]).toBe(hostSum);
    expect(result.exitCode).toBe(0);
    expect(result.fetches[0]!.requests).toBe(0);
  });

  it('downloads and unpacks layers that are not lazily pullable, and runs on them with the lazy ones', async () => {
    const fixture = await busyboxImage();
    const { readFile } = await import('node:fs/promises');
    const top = await buildTar([
      { name: 'srv/', type: 'directory' },
      { name: 'srv/lazy.txt', content: 'from the lazy layer\n' },
    ]);
    const pushed = await pushEstargzImage(
      `${registryAddress()}/h6/mixed:1`,
      [await readFile(fixture.layers[0]!.tarPath), top],
      { config: { Env: ['PATH=/bin'], Cmd: ['/bin/sh'] } },
      { plainGzipLayers: [0] },
    );
    const ref = `${proxy.address}/h6/mixed:1`;
    const root = join(work, 'state-mixed');
    proxy.clearLog();
    const report = await rpull({ reference: ref, stateRoot: root, plainHttp: true });
    expect(report.layers.map((l) => l.kind)).toEqual(['unpacked', 'lazy']);
    const reqs = blobRequests(proxy);
    // The plain layer in one full (verified) download, the lazy one by Range only.
    expect(reqs.filter((r) => r.digest === pushed.layerDigests[0]).map((r) => r.range)).toEqual([undefined]);
    for (const r of reqs.filter((b) => b.digest === pushed.layerDigests[1])) expect(r.range).toMatch(/^bytes=/);
    const out = capture();
    const result = await runContainer({
      reference: ref,
      stateRoot: root,
      rm: true,
      run: {},
      command: ['/bin/sh', '-c', 'cat /srv/lazy.txt /etc/hello'],
      stdout: out.stream,
      stderr: out.stream,
    });
    expect(out.text()).toBe('from the lazy layer\nhello from the esgz busybox fixture\n');
    expect(result.exitCode).toBe(0);
    expect(result.fetches[0]).toBeUndefined();
  });

  it("picks this machine's manifest from an index (or the --platform one)", async () => {
    const mk = (text: string) => buildTar([{ name: 'which', content: text }]);
    const image = async (architecture: string) => ({
      layers: [(await estargzLayer(await mk(`${architecture}\n`), 0, {})).layer],
      platform: { os: 'linux', architecture },
      config: { Cmd: ['/x'] },
    });
    const pushed = await pushOciImage(`${registryAddress()}/h6/multi:both`, {
      platforms: [await image('arm64'), await image('amd64')],
    });
    const [arm, amd] = pushed.manifests.map((m) => ({ manifestDigest: m.digest }));
    const ref = `${registryAddress()}/h6/multi:both`;
    const root = join(work, 'state-multi');
    const host = await rpull({ reference: ref, stateRoot: root, plainHttp: true });
    expect(host.manifestDigest).toBe(process.arch === 'arm64' ? arm.manifestDigest : amd.manifestDigest);
    const other = await rpull({
      reference: ref,
      stateRoot: join(work, 'state-multi-arm'),
      plainHttp: true,
      platform: { os: 'linux', architecture: 'arm64' },
    });
    expect(other.manifestDigest).toBe(arm.manifestDigest);
    expect(other.platform).toBe('linux/arm64');
    await expect(
      rpull({
        reference: ref,
        stateRoot: join(work, 'state-multi-s390x'),
        plainHttp: true,
        platform: { os: 'linux', architecture: 's390x' },
      }),
    ).rejects.toMatchObject({ code: 'NOT_FOUND' });
  });

  for (const variant of [
    { name: 'zstd:chunked', repo: 'h6/zstd:1', options: { codec: 'zstd' as const } },
    { name: 'eStargz with an external TOC (-esgztoc image)', repo: 'h6/external:1', options: { externalTOC: true } },
  ]) {
    it(`pulls ${variant.name} layers lazily and runs from them`, async () => {
      const fixture = await busyboxImage();
      const { readFile } = await import('node:fs/promises');
      const extra = await buildTar([
        { name: 'srv/', type: 'directory' },
        { name: 'srv/data.txt', content: 'layer two\n' },
        { name: 'etc/.wh.hello' },
      ]);
      const pushed = await pushEstargzImage(
        `${registryAddress()}/${variant.repo}`,
        [await readFile(fixture.layers[0]!.tarPath), extra],
        { config: { Env: ['PATH=/bin'], Cmd: ['/bin/sh'] } },
        {
          prioritizedFiles: [['bin/busybox', 'etc/passwd', 'etc/group'], []],
          ...variant.options,
        },
      );
      const ref = `${proxy.address}/${variant.repo}`;
      const root = join(work, `state-${variant.repo.replace(/\W/g, '-')}`);
      proxy.clearLog();
      const report = await rpull({ reference: ref, stateRoot: root, plainHttp: true });
      expect(report.layers.map((l) => l.kind)).toEqual(['lazy', 'lazy']);
      if (variant.options.externalTOC) expect(report.layers.every((l) => (l.externalTOCBytes ?? 0) > 0)).toBe(true);
      // Layer blobs were only ever read by Range.
      for (const r of blobRequests(proxy).filter((b) => pushed.layerDigests.includes(b.digest)))
        expect(r.range).toMatch(/^bytes=/);

      proxy.clearLog();
      const out = capture();
      const result = await runContainer({
        reference: ref,
        stateRoot: root,
        rm: true,
        run: {},
        command: ['/bin/sh', '-c', 'cat /srv/data.txt; test -e /etc/hello && echo visible || echo whited-out'],
        stdout: out.stream,
        stderr: out.stream,
      });
      expect(out.text()).toBe('layer two\nwhited-out\n');
      expect(result.exitCode).toBe(0);
      // Nothing but chunks of the two layers was fetched at run time (no manifest, no TOC image;
      // the registry client's /v2/ ping aside).
      expect(proxy.log.filter((e) => e.path !== '/v2/' && !e.path.includes('/blobs/'))).toEqual([]);
      for (const r of blobRequests(proxy)) expect(pushed.layerDigests).toContain(r.digest);
      expect(blobRequests(proxy).length).toBeGreaterThan(0);
    });
  }

  it.skipIf(!debianImageCached())(
    'rpulls an optimized Debian+python3 image and runs python3 without fetching more',
    async () => {
      const debian = await debianImage();
      const source = await openSource(debian.python.ref);
      const sink = await openSink(`${registryAddress()}/h6/python:esgz`, { plainHttp: true });
      const command = ['python3', '-c', "print('hi')"];
      try {
        await optimizeImage({
          source,
          sink,
          format: 'estargz',
          convert: {},
          oci: true,
          run: { entrypoint: command },
          periodSeconds: 20,
          workloadStdout: new PassThrough().resume(),
          workloadStderr: new PassThrough().resume(),
        });
      } finally {
        await source.close();
      }
      const ref = `${proxy.address}/h6/python:esgz`;
      const root = join(work, 'state-python');
      proxy.clearLog();
      const report = await rpull({ reference: ref, stateRoot: root, plainHttp: true });
      expect(report.layers.every((l) => l.kind === 'lazy')).toBe(true);
      const blobs = blobRequests(proxy);
      for (const l of report.layers) {
        const reqs = blobs.filter((b) => b.digest === l.digest);
        for (const r of reqs) expect(r.range).toMatch(/^bytes=/);
        expect(reqs.length).toBeLessThanOrEqual(3);
        expect(reqs.reduce((n, r) => n + r.bytes, 0)).toBe(l.fetchedBytes);
      }
      const total = report.layers.reduce((n, l) => n + l.size, 0);
      const fetched = report.layers.reduce((n, l) => n + l.fetchedBytes, 0);
      expect(fetched).toBeLessThan(total / 2);

      proxy.clearLog();
      const out = capture();
      const result = await runContainer({
        reference: ref,
        stateRoot: root,
        rm: true,
        run: {},
        command,
        stdout: out.stream,
        stderr: out.stream,
      });
      expect(out.text().trim()).toBe('hi');
      expect(result.exitCode).toBe(0);
      expect(blobRequests(proxy)).toEqual([]);
    },
    600_000,
  );
});
