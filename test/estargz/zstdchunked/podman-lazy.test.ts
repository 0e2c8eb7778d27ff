// zstd:chunked layers written by Debian's podman 4.3 (containers/storage 1.43: io.containers keys,
// no toc.digest, 40-byte footer, no tar-split) are pulled lazily by `esgz image rpull` and run by
// `esgz run`: through the counting proxy only the footer, the TOC and the chunks a read needs are
// fetched, every one a Range request, and the tree the container sees equals a plain unpack.
import { createReadStream } from 'node:fs';
import { lstat, mkdtemp, readdir, readlink } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TOC_DIGEST_ANNOTATION } from '../../../src/estargz/constants.js';
import { MANIFEST_CHECKSUM_ANNOTATION } from '../../../src/estargz/zstdchunked/dialect.js';
import { prepareRootfs } from '../../../src/rootfs/overlay.js';
import { mountImage } from '../../../src/snapshotter/run.js';
import { busyboxImage, debianImage, debianImageCached } from '../../fixtures/debian.js';
import { esgz } from '../../harness/cli.js';
import { startFaultProxy, type FaultProxy } from '../../harness/fault-proxy.js';
import { registryAddress } from '../../harness/registry.js';
import { walkTree } from '../../snapshotter/helpers.js';
import { podmanAvailable, startPodman, type PodmanEnv } from './podman-env.js';
import { longTests } from '../../harness/long-tests.js';

interface PulledLayer {
  digest: string;
  kind: string;
  size: number;
  fetchedBytes: number;
}

/** Requests for one blob in the proxy log. */
function layerRequests(proxy: FaultProxy, digest: string) {
  return proxy.log
    .filter((e) => e.path.includes(`/blobs/${digest}`))
    .map((e) => ({ range: e.headers.range as string | undefined, bytes: e.bytes }));
}

/** Every entry's metadata (lstat, readlink; no content, no xattrs): cheap enough for the Debian tree. */
async function walkMetadata(root: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const visit = async (rel: string): Promise<void> => {
    const full = rel === '' ? root : path.join(root, rel);
    const st = await lstat(full);
    const target = st.isSymbolicLink() ? await readlink(full) : '';
    const mtime = rel === '' ? '' : Math.floor(st.mtimeMs / 1000);
    out.set(rel, `${st.mode.toString(8)} ${st.uid}:${st.gid} ${st.isFile() ? st.size : ''} ${mtime} ${target}`);
    if (st.isDirectory())
      for (const name of (await readdir(full)).sort()) await visit(rel === '' ? name : `${rel}/${name}`);
  };
  await visit('');
  return out;
}

/**
 * The image tree served lazily (FUSE + overlayfs) against a plain unpack of the same layer tar:
 * every entry with contents and xattrs (`full`), or every entry's metadata.
 */
async function expectSameTree(
  work: string,
  root: string,
  reference: string,
  tarPath: string,
  full: boolean,
): Promise<void> {
  const unpacked = await prepareRootfs({
    workDir: path.join(work, `plain-${path.basename(root)}`),
    layers: [{ open: async () => createReadStream(tarPath) }],
    mode: 'overlay',
  });
  const image = await mountImage({
    reference,
    stateRoot: root,
    workDir: path.join(work, `lazy-${path.basename(root)}`),
    plainHttp: true,
  });
  try {
    if (!full) {
      expect(Object.fromEntries(await walkMetadata(image.rootfs))).toEqual(
        Object.fromEntries(await walkMetadata(unpacked.rootfs)),
      );
      return;
    }
    const expected = await walkTree(unpacked.rootfs);
    const actual = await walkTree(image.rootfs);
    expect([...actual.keys()]).toEqual([...expected.keys()]);
    for (const [name, want] of expected) {
      const { ino: _a, ...w } = want;
      const { ino: _b, ...g } = actual.get(name)!;
      if (name === '') {
        delete w.mtime;
        delete g.mtime;
      }
      expect(g, name).toEqual(w);
    }
  } finally {
    await image.release();
    await unpacked.release();
  }
}

describe.skipIf(!podmanAvailable)('esgz pulls and runs zstd:chunked layers podman 4.3 wrote, lazily', () => {
  let work: string;
  let env: PodmanEnv;
  let proxy: FaultProxy;

  beforeAll(async () => {
    work = await mkdtemp(path.join(os.tmpdir(), 'esgz-podman-lazy-'));
    env = await startPodman(work);
    proxy = await startFaultProxy(registryAddress());
  });

  afterAll(async () => {
    await proxy?.close();
    await env?.close();
  });

  /** Pushes `tarPath` with podman (io.containers keys, no toc.digest), rpulls it through the proxy; returns the reference and the layer report. */
  async function pushAndPull(
    name: string,
    tarPath: string,
  ): Promise<{ reference: string; root: string; layer: PulledLayer }> {
    const tag = `${name}:${Date.now()}`;
    await env.pushZstdChunked(tarPath, `${registryAddress()}/esgz-test/podman-${tag}`);
    const reference = `${proxy.address}/esgz-test/podman-${tag}`;
    const raw = await execa('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${reference}`]);
    const { layers } = JSON.parse(raw.stdout) as { layers: Array<{ annotations?: Record<string, string> }> };
    expect(layers[0]!.annotations?.[MANIFEST_CHECKSUM_ANNOTATION]).toMatch(/^sha256:/);
    expect(layers[0]!.annotations?.[TOC_DIGEST_ANNOTATION]).toBeUndefined();
    // Full verification names the dialect and checks the TOC and every chunk. containers/storage
    // 1.43 drops the padding an imported tar carries after its end-of-archive blocks, so the blob
    // does not decompress to the config's diffID: the one problem verify reports, rightly.
    const inspected = await esgz('image', 'verify', '--plain-http', '--json', reference);
    const verified = JSON.parse(inspected.stdout) as {
      manifests: Array<{ layers: Array<{ dialect: string; chunks?: number; problems: string[] }> }>;
    };
    const [checked] = verified.manifests[0]!.layers;

    expect(checked!.dialect).toBe('containers-legacy');
    expect(checked!.chunks).toBeGreaterThan(0);
    for (const problem of checked!.problems) expect(problem).toMatch(/^diffID sha256:\w+ does not match the config/);

    const root = path.join(work, `state-${name}`);
    proxy.clearLog();
    const pulled = await esgz('image', 'rpull', '--plain-http', '--root', root, '--json', reference);
    expect(pulled.exitCode, pulled.stderr).toBe(0);
    const report = JSON.parse(pulled.stdout) as { layers: PulledLayer[] };
    expect(report.layers).toHaveLength(1);
    const layer = report.layers[0]!;
    expect(layer.kind).toBe('lazy');
    // Footer and TOC only: Range requests, a small part of the layer.
    const requests = layerRequests(proxy, layer.digest);
    expect(requests.length).toBeGreaterThan(0);
    expect(requests.length).toBeLessThanOrEqual(2);
    for (const r of requests) expect(r.range, JSON.stringify(r)).toMatch(/^bytes=\d+-\d+$/);
    expect(requests.reduce((n, r) => n + r.bytes, 0)).toBe(layer.fetchedBytes);
    expect(layer.fetchedBytes).toBeLessThan(layer.size / 4);
    return { reference, root, layer };
  }

  /** `esgz run` of `command`: its stdout, and the layer bytes it fetched (Range requests only). */
  async function runCounting(reference: string, root: string, digest: string, command: string) {
    proxy.clearLog();
    const ran = await esgz('run', '--rm', '--root', root, reference, `c${Date.now()}`, 'sh', '-c', command);
    expect(ran.exitCode, ran.stderr).toBe(0);
    const requests = layerRequests(proxy, digest);
    for (const r of requests) expect(r.range, JSON.stringify(r)).toMatch(/^bytes=\d+-\d+$/);
    return { stdout: ran.stdout, requests: requests.length, bytes: requests.reduce((n, r) => n + r.bytes, 0) };
  }

  it('busybox: rpull fetches footer + TOC, run fetches only the chunks it reads, the tree equals a plain unpack', async () => {
    const fixture = await busyboxImage();
    const tarPath = fixture.layers[0]!.tarPath;
    const { reference, root, layer } = await pushAndPull('busybox', tarPath);
    // Pushed once per registry: containers/image 5.23 drops the zstd:chunked annotations when it
    // reuses a blob it already pushed, which would leave nothing to verify a TOC against.
    const ran = await runCounting(reference, root, layer.digest, 'cat /etc/hello');
    expect(ran.stdout).toContain('hello from the esgz busybox fixture');
    // busybox itself (the shell) and /etc/hello: chunks, not the layer.
    expect(ran.requests).toBeGreaterThan(0);
    expect(ran.bytes).toBeLessThan(layer.size);
    await expectSameTree(work, root, reference, tarPath, true);
  });

  it.skipIf(!longTests || !debianImageCached())(
    'Debian base: the same (metadata of every entry), and a second run of the same command fetches nothing',
    async () => {
      const fixture = await debianImage();
      const tarPath = fixture.base.layers[0]!.tarPath;
      const { reference, root, layer } = await pushAndPull('debian', tarPath);
      const ran = await runCounting(reference, root, layer.digest, 'cat /etc/debian_version; ls /usr/bin | wc -l');
      expect(ran.stdout).toMatch(/^12\.\d+/);
      expect(ran.bytes).toBeGreaterThan(0);
      expect(ran.bytes).toBeLessThan(layer.size / 2);
      const again = await runCounting(reference, root, layer.digest, 'cat /etc/debian_version');
      expect(again.requests).toBe(0);
      await expectSameTree(work, root, reference, tarPath, false);
    },
    600_000,
  );
});
