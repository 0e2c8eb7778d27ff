// The local image store through the built CLI: image pull / tag / ls / push / rm / export /
// import, the local: and oci-archive: transports, and ctr-remote's bare names; skopeo checks the
// registry and archive results independently.
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseTransportReference } from '../../src/image/transports/index.js';
import { multiLayerEntries, twoPlatformImages, writeOciImage, type WrittenImage } from '../fixtures/oci-image.js';
import { ctrRemote, esgz, expectOneLineError } from '../harness/cli.js';
import { registryAddress } from '../harness/registry.js';

const scratch = await mkdtemp(join(tmpdir(), 'esgz-store-'));
afterAll(() => rm(scratch, { recursive: true, force: true }));

let multiarch: WrittenImage;
let single: WrittenImage;
let multiRef: string;
let singleRef: string;

const sha256 = (text: string) => `sha256:${createHash('sha256').update(text).digest('hex')}`;
async function skopeoRawDigest(spec: string): Promise<string> {
  const { stdout } = await execa('skopeo', ['inspect', '--raw', '--tls-verify=false', spec], {
    stripFinalNewline: false,
  });
  return sha256(stdout);
}
const lsJson = async (root: string, ...extra: string[]) =>
  JSON.parse((await esgz('image', 'ls', '--json', '--root', root, ...extra)).stdout) as Array<{
    reference: string;
    kind: string;
    manifestDigest: string;
    platforms: string[];
    size: number;
  }>;

beforeAll(async () => {
  multiarch = await writeOciImage(join(scratch, 'src'), { tag: 'multi', platforms: twoPlatformImages() });
  single = await writeOciImage(join(scratch, 'src'), { tag: 'v1', layers: multiLayerEntries() });
  multiRef = `${registryAddress()}/esgz-store/multi:1`;
  singleRef = `${registryAddress()}/esgz-store/single:1`;
  for (const [spec, ref] of [
    [`oci:${multiarch.dir}:multi`, multiRef],
    [`oci:${single.dir}:v1`, singleRef],
  ] as const) {
    const r = await esgz('image', 'copy', '--plain-http', '--all-platforms', spec, ref);
    expect(r.exitCode, r.stderr).toBe(0);
  }
});

describe('image pull / tag / ls / push / rm', () => {
  it('pulls every platform in full, lists it, tags it, pushes it elsewhere with the same digest', async () => {
    const root = join(scratch, 'state-pull');
    const pull = await esgz('image', 'pull', '--plain-http', '--all-platforms', '--root', root, multiRef);
    expect(pull.exitCode, pull.stderr).toBe(0);
    expect(pull.stdout).toContain(`digest: ${multiarch.rootDigest}`);
    expect((await stat(root)).mode & 0o777).toBe(0o700);
    expect((await readdir(join(root, 'blobs', 'sha256'))).filter((n) => n.includes('.tmp-'))).toEqual([]);

    const listed = await lsJson(root);
    expect(listed).toMatchObject([
      {
        reference: multiRef,
        kind: 'full',
        manifestDigest: multiarch.rootDigest,
        platforms: ['linux/amd64', 'linux/arm64'],
      },
    ]);
    expect(listed[0]!.size).toBeGreaterThan(0);

    expect((await esgz('image', 'tag', '--root', root, multiRef, 'app:1', 'app:2')).exitCode).toBe(0);
    const table = await esgz('image', 'list', '--root', root);
    expect(table.stdout.split('\n')[0]).toMatch(/^REF\s+TYPE\s+DIGEST\s+SIZE\s+PLATFORMS\s+LABELS$/);
    expect(table.stdout).toMatch(/^app:1\s+application\/vnd\.oci\.image\.index\.v1\+json\s+sha256:/m);
    expect(table.stdout).toContain('linux/amd64,linux/arm64');

    const pushed = `${registryAddress()}/esgz-store/pushed:1`;
    const push = await esgz('image', 'push', '--plain-http', '--root', root, 'app:1', pushed);
    expect(push.exitCode, push.stderr).toBe(0);
    expect(await skopeoRawDigest(`docker://${pushed}`)).toBe(multiarch.rootDigest);

    // Names are per namespace.
    expect(await lsJson(root, '-n', 'other')).toEqual([]);
    expect((await esgz('image', 'del', '--root', root, 'app:2')).exitCode).toBe(0);
    expect((await lsJson(root)).map((i) => i.reference)).toEqual([multiRef, 'app:1']);
    expectOneLineError(await esgz('image', 'rm', '--root', root, 'app:2'), 'nonzero', /app:2 is not in/);
    expectOneLineError(
      await esgz('image', 'push', '--root', root, 'nothere:1', pushed),
      'nonzero',
      /no image of that name/,
    );
  });

  it('pulls this platform only by default, and only what --platform names', async () => {
    const root = join(scratch, 'state-platform');
    const pull = await esgz('image', 'pull', '--plain-http', '--platform', 'linux/arm64', '--root', root, multiRef);
    expect(pull.exitCode, pull.stderr).toBe(0);
    const [image] = await lsJson(root);
    expect(image!.platforms).toEqual(['linux/arm64']);
    // A prune keeps everything a name reaches, and drops it once the name is gone.
    const kept = JSON.parse((await esgz('image', 'prune', '--json', '--root', root)).stdout);
    expect(kept.blobs).toBe(0);
    expect((await esgz('image', 'rm', '--root', root, multiRef)).exitCode).toBe(0);
    const pruned = JSON.parse((await esgz('image', 'prune', '--json', '--root', root)).stdout);
    expect(pruned.blobs).toBeGreaterThanOrEqual(3);
  });

  it('reads and writes local:NAME from every transport command', async () => {
    const root = join(scratch, 'state-local');
    const pull = await esgz('image', 'pull', '--plain-http', '--root', root, singleRef);
    expect(pull.exitCode, pull.stderr).toBe(0);
    const out = join(scratch, 'from-local');
    // copy has no --root; local: names in another root go through export/import, push and pull.
    const push = await esgz('image', 'push', '--root', root, `local:${singleRef}`, `oci:${out}:x`);
    expect(push.exitCode, push.stderr).toBe(0);
    expect(await skopeoRawDigest(`oci:${out}:x`)).toBe(single.rootDigest);
  });
});

describe('oci-archive: and image export / import', () => {
  it('copies to and from oci-archive:FILE:TAG, streaming; skopeo reads the archive', async () => {
    const archive = join(scratch, 'copy.tar');
    const write = await esgz(
      'image',
      'copy',
      '--all-platforms',
      `oci:${multiarch.dir}:multi`,
      `oci-archive:${archive}:m`,
    );
    expect(write.exitCode, write.stderr).toBe(0);
    expect(await skopeoRawDigest(`oci-archive:${archive}:m`)).toBe(multiarch.rootDigest);
    const back = join(scratch, 'copy-back');
    const read = await esgz('image', 'copy', '--all-platforms', `oci-archive:${archive}:m`, `oci:${back}:m`);
    expect(read.exitCode, read.stderr).toBe(0);
    expect(await skopeoRawDigest(`oci:${back}:m`)).toBe(multiarch.rootDigest);
    expectOneLineError(
      await esgz('image', 'copy', `oci-archive:${archive}:nope`, `oci:${back}:n`),
      'nonzero',
      /no image tagged "nope"/,
    );
  });

  it('exports as ctr does (names in index.json, manifest.json, oci-layout) and imports it again', async () => {
    const root = join(scratch, 'state-export');
    for (const ref of [multiRef, singleRef]) {
      const r = await esgz('image', 'pull', '--plain-http', '--all-platforms', '--root', root, ref);
      expect(r.exitCode, r.stderr).toBe(0);
    }
    const archive = join(scratch, 'export.tar');
    const exp = await esgz('image', 'export', '--root', root, archive, multiRef, singleRef);
    expect(exp.exitCode, exp.stderr).toBe(0);
    const { stdout: members } = await execa('tar', ['-tf', archive]);
    expect(members.split('\n')).toEqual(expect.arrayContaining(['oci-layout', 'index.json', 'manifest.json']));
    const { stdout: indexText } = await execa('tar', ['-xOf', archive, 'index.json']);
    const index = JSON.parse(indexText) as {
      manifests: Array<{ digest: string; annotations: Record<string, string> }>;
    };
    expect(index.manifests.map((m) => [m.digest, m.annotations])).toEqual([
      [multiarch.rootDigest, { 'io.containerd.image.name': multiRef, 'org.opencontainers.image.ref.name': '1' }],
      [single.rootDigest, { 'io.containerd.image.name': singleRef, 'org.opencontainers.image.ref.name': '1' }],
    ]);
    // By its full name (io.containerd.image.name), which skopeo does not match: esgz reads it.
    const copied = join(scratch, 'by-name');
    const viaIndex = await esgz(
      'image',
      'copy',
      '--all-platforms',
      `oci-archive:${archive}:${singleRef}`,
      `oci:${copied}:y`,
    );
    expect(viaIndex.exitCode, viaIndex.stderr).toBe(0);
    expect(await skopeoRawDigest(`oci:${copied}:y`)).toBe(single.rootDigest);

    const fresh = join(scratch, 'state-import');
    const imp = await esgz('image', 'import', '--root', fresh, archive);
    expect(imp.exitCode, imp.stderr).toBe(0);
    expect((await lsJson(fresh)).map((i) => [i.reference, i.manifestDigest])).toEqual(
      [
        [multiRef, multiarch.rootDigest],
        [singleRef, single.rootDigest],
      ].sort((a, b) => a[0]!.localeCompare(b[0]!)),
    );
  });

  it('imports a docker-archive under the name it records', async () => {
    const archive = join(scratch, 'docker.tar');
    const w = await esgz('image', 'copy', `oci:${single.dir}:v1`, `docker-archive:${archive}:dock/app:3`);
    expect(w.exitCode, w.stderr).toBe(0);
    const root = join(scratch, 'state-docker');
    const imp = await esgz('image', 'import', '--root', root, archive);
    expect(imp.exitCode, imp.stderr).toBe(0);
    expect((await lsJson(root)).map((i) => i.reference)).toEqual(['dock/app:3']);
  });

  it('refuses a file that is no archive in one line, and writes nothing on a missing name', async () => {
    const junk = join(scratch, 'junk.tar');
    await execa('sh', ['-c', `head -c 2048 /dev/urandom > ${junk}`]);
    expectOneLineError(await esgz('image', 'import', '--root', join(scratch, 'x'), junk), 'nonzero', /not a tar/);
    const out = join(scratch, 'never.tar');
    expectOneLineError(
      await esgz('image', 'export', '--root', join(scratch, 'x'), out, 'missing:1'),
      'nonzero',
      /missing:1/,
    );
    await expect(stat(out)).rejects.toThrow();
  });
});

describe('bare names', () => {
  it('are local under ctr-remote (registry hosts included, as in ctr) and registry references under esgz', () => {
    const names = [
      'foo',
      'foo:1',
      'library/foo',
      'foo@sha256:' + 'a'.repeat(64),
      'localhost:5000/foo:1',
      'ghcr.io/a/b:1',
    ];
    for (const name of names)
      expect(parseTransportReference(name, { unqualified: 'local' }), name).toEqual({ transport: 'local', name });
    // A transport prefix always says what it means.
    expect(parseTransportReference('docker://ghcr.io/a/b:1', { unqualified: 'local' }).transport).toBe('registry');
    expect(parseTransportReference('oci:/x:1', { unqualified: 'local' }).transport).toBe('oci');
    expect(parseTransportReference('foo:1')).toEqual({ transport: 'registry', reference: 'foo:1' });
    expect(parseTransportReference('local:foo:1')).toEqual({ transport: 'local', name: 'foo:1' });
  });

  it('ctr-remote reads a bare name from the store (default state root)', async () => {
    const name = `esgz-test-${randomBytes(4).toString('hex')}:1`;
    const root = '/var/lib/esgz';
    try {
      const pull = await esgz('image', 'pull', '--plain-http', '--root', root, singleRef);
      expect(pull.exitCode, pull.stderr).toBe(0);
      expect((await esgz('image', 'tag', singleRef, name)).exitCode).toBe(0);
      const out = join(scratch, 'ctr-remote-out');
      const copy = await ctrRemote('image', 'copy', name, `oci:${out}:c`);
      expect(copy.exitCode, copy.stderr).toBe(0);
      expect(await skopeoRawDigest(`oci:${out}:c`)).toBe(single.rootDigest);
      // Under esgz the same bare name is a Docker Hub reference, not the store.
      const viaEsgz = await esgz('image', 'copy', `local:${name}`, `oci:${out}:d`);
      expect(viaEsgz.exitCode, viaEsgz.stderr).toBe(0);
    } finally {
      await esgz('image', 'rm', name);
      await esgz('image', 'rm', singleRef);
    }
    expect(JSON.stringify(await lsJson(root))).not.toContain(name);
  });
});
