// The ctr-remote command sequences of stargz-snapshotter's README, docs/ctr-remote.md,
// docs/overview.md and docs/smaller-estargz.md, and of nerdctl's docs/stargz.md, run as a user's
// script runs them: each line as the docs print it, through bash, with `ctr-remote` on PATH being
// esgz's alias. Only names are pointed elsewhere: registries at the test registry, /tmp paths at
// the test's scratch directory. Each result is checked by tools other than esgz: skopeo for what
// reached the registry, stargz-snapshotter's own reader (the reference ctr-remote, in a private
// containerd) for every eStargz layer's TOC digest, busybox inside the container for what runs.
// The pull -> optimize -> push sequence then runs through `esgz` with `local:` names and must give
// the layer digests `esgz image optimize REGISTRY REGISTRY` gives.
import { mkdir, mkdtemp, readFile, readdir, rm, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TOC_DIGEST_ANNOTATION } from '../../src/estargz/constants.js';
import type { ImageManifest } from '../../src/oci/types.js';
import { busyboxRootfs } from '../fixtures/oci-image.js';
import { pushOciImage } from '../fixtures/oci-push.js';
import { dir, file, generatedFile, sha256Digest } from '../fixtures/tar.js';
import { ctrRemoteTOCDigest } from '../estargz/reference.js';
import { containerdAvailable, startContainerd, type RunningContainerd } from '../harness/containerd.js';
import { registryAddress, startRegistry } from '../harness/registry.js';
import { repoRoot } from '../harness/cli.js';

const registry = registryAddress();
const scratch = await mkdtemp(join(tmpdir(), 'esgz-ctr-remote-docs-'));
const binDir = join(scratch, 'bin');
const stateRoot = join(scratch, 'state');
let containerd: RunningContainerd | undefined;

/** The docs' names, pointed at this test's registry and scratch directory. */
function pointAtTestRegistry(line: string): string {
  return line
    .replaceAll('docker.io/library/', `${registry}/library/`)
    .replaceAll('ghcr.io/stargz-containers/', `${registry}/stargz-containers/`)
    .replaceAll('registry2:5000/', `${registry}/`)
    .replaceAll('example.com/', `${registry}/example/`)
    .replaceAll('/tmp/', `${scratch}/`);
}

interface LineResult {
  exitCode: number | undefined;
  stdout: string;
  stderr: string;
}

/**
 * Runs one line of a doc through bash, `ctr-remote` and `esgz` first on PATH. `terminal`: in a
 * pseudo-terminal made by util-linux `script`, for the docs' `run -t` lines, with `input` typed in.
 */
async function shell(line: string, options: { terminal?: boolean; input?: string } = {}): Promise<LineResult> {
  const command = pointAtTestRegistry(line);
  const env = {
    PATH: `${binDir}:${dirname(process.execPath)}:${process.env.PATH ?? '/usr/bin:/bin'}`,
    ESGZ_ROOT: stateRoot,
    DEBUG: '',
  };
  const result = options.terminal
    ? await execa('script', ['-qec', command, '/dev/null'], { env, reject: false, input: options.input ?? '' })
    : await execa('bash', ['-c', command], { env, reject: false, stdin: 'ignore' });
  return { exitCode: result.exitCode, stdout: result.stdout, stderr: result.stderr };
}

async function ok(line: string, options: { terminal?: boolean; input?: string } = {}): Promise<LineResult> {
  const result = await shell(line, options);
  expect(result.exitCode, `${line}\n${result.stderr}`).toBe(0);
  return result;
}

/**
 * The digest ctr-remote prints last on stdout for convert and optimize. Before it come only what
 * ctr-remote also writes there: the workload's own output (optimize runs it with stdout attached)
 * and `extra image: NAME` for an external TOC.
 */
function printedDigest(result: LineResult): string {
  const lines = result.stdout.trimEnd().split('\n');
  const digest = lines.at(-1) ?? '';
  expect(digest).toMatch(/^sha256:[0-9a-f]{64}$/);
  return digest;
}

async function skopeoRaw(reference: string): Promise<string> {
  const r = await execa('skopeo', [
    'inspect',
    '--raw',
    '--tls-verify=false',
    `docker://${pointAtTestRegistry(reference)}`,
  ]);
  return r.stdout;
}

/**
 * What reached the registry under `reference`, checked by skopeo and by the reference reader:
 * the manifest (or, for an index, each manifest) and, for every eStargz layer, that
 * stargz-snapshotter's reader finds the TOC digest the layer's annotation announces.
 */
async function expectEstargzInRegistry(reference: string, expectedDigest?: string): Promise<ImageManifest[]> {
  const raw = await skopeoRaw(reference);
  if (expectedDigest) expect(sha256Digest(raw)).toBe(expectedDigest);
  const root = JSON.parse(raw) as ImageManifest & { manifests?: { digest: string }[] };
  const manifests = root.manifests
    ? await Promise.all(
        root.manifests.map(
          async (m) =>
            JSON.parse(await skopeoRaw(`${reference.split(':').slice(0, -1).join(':')}@${m.digest}`)) as ImageManifest,
        ),
      )
    : [root];
  const layout = join(scratch, `layout-${sha256Digest(reference).slice(7, 19)}`);
  await execa('skopeo', [
    'copy',
    '--all',
    '--src-tls-verify=false',
    `docker://${pointAtTestRegistry(reference)}`,
    `oci:${layout}`,
  ]);
  for (const manifest of manifests) {
    expect(manifest.layers.length).toBeGreaterThan(0);
    for (const layer of manifest.layers) {
      const tocDigest = layer.annotations?.[TOC_DIGEST_ANNOTATION];
      expect(tocDigest, `${reference}: layer ${layer.digest} has no TOC digest`).toMatch(/^sha256:/);
      if (containerd) {
        const blob = await readFile(join(layout, 'blobs', 'sha256', layer.digest.slice(7)));
        expect(await ctrRemoteTOCDigest(containerd, blob)).toBe(tocDigest);
      }
    }
  }
  await rm(layout, { recursive: true, force: true });
  return manifests;
}

/** A workload image for the docs' commands: busybox with /bin/bash and a `go` that answers `go version`. */
function docsRootfs() {
  return [
    ...busyboxRootfs(),
    file('bin/bash', '#!/bin/sh\nexec /bin/sh "$@"\n', { mode: 0o755 }),
    dir('usr'),
    dir('usr/local'),
    dir('usr/local/bin'),
    file('usr/local/bin/go', '#!/bin/sh\necho "go version go1.15.3 linux/amd64"\n', { mode: 0o755 }),
    dir('usr/lib'),
    generatedFile('usr/lib/libbig.so', 300_000, { seed: 'ctr-remote-docs' }),
  ];
}

const PATH_ENV = ['PATH=/usr/local/bin:/usr/bin:/bin'];

beforeAll(async () => {
  await mkdir(binDir, { recursive: true });
  await symlink(join(repoRoot, 'bin/run.js'), join(binDir, 'ctr-remote'));
  await symlink(join(repoRoot, 'bin/run.js'), join(binDir, 'esgz'));
  if (containerdAvailable()) containerd = await startContainerd({ namespace: 'esgz-docs' });
  const layers = [docsRootfs(), [dir('etc'), file('etc/motd', 'from the docs image\n')]];
  const config = { Env: PATH_ENV, Cmd: ['/bin/sh', '-c', 'ls /usr/lib'] };
  for (const name of [
    'library/ubuntu:20.04',
    'library/ubuntu:24.04',
    'stargz-containers/golang:1.15.3-buster-org',
    'stargz-containers/ubuntu:22.04',
    'example/foo:latest',
  ]) {
    await pushOciImage(`${registry}/${name}`, { layers, config, mediaTypes: 'docker' });
  }
});

afterAll(async () => {
  await containerd?.stop();
  await rm(scratch, { recursive: true, force: true });
});

describe("ctr-remote sequences from the docs, run unchanged through esgz's alias", () => {
  it('stargz-snapshotter README: pull, optimize --oci, push, rm --sync, images rpull, run --snapshotter=stargz', async () => {
    await ok('ctr-remote image pull docker.io/library/ubuntu:20.04');
    const optimized = printedDigest(
      await ok(
        `ctr-remote image optimize --oci --entrypoint='[ "/bin/bash", "-c" ]' --args='[ "ls" ]' docker.io/library/ubuntu:20.04 registry2:5000/ubuntu:20.04`,
      ),
    );
    await ok('ctr-remote image push --plain-http registry2:5000/ubuntu:20.04');
    await expectEstargzInRegistry('registry2:5000/ubuntu:20.04', optimized);
    await ok('ctr-remote image rm --sync registry2:5000/ubuntu:20.04');
    expect((await ok('ctr-remote image ls')).stdout).not.toContain(`${registry}/ubuntu:20.04`);
    await ok('ctr-remote images rpull --plain-http registry2:5000/ubuntu:20.04');
    const run = await ok('ctr-remote run --rm -t --snapshotter=stargz registry2:5000/ubuntu:20.04 test /bin/bash', {
      terminal: true,
      input: 'cat /etc/motd; exit\n',
    });
    expect(run.stdout).toContain('from the docs image');
  });

  it('docs/ctr-remote.md: optimize variants, rpull, run echo hello', async () => {
    await ok('ctr-remote image pull ghcr.io/stargz-containers/golang:1.15.3-buster-org');
    const optimized = printedDigest(
      await ok(
        'ctr-remote image optimize --oci ghcr.io/stargz-containers/golang:1.15.3-buster-org registry2:5000/golang:1.15.3-esgz',
      ),
    );
    await ok('ctr-remote image push --plain-http registry2:5000/golang:1.15.3-esgz');
    await expectEstargzInRegistry('registry2:5000/golang:1.15.3-esgz', optimized);
    await ok('ctr-remote image rpull --plain-http registry2:5000/golang:1.15.3-esgz');
    const hello = await ok(
      'ctr-remote run --rm -t --snapshotter=stargz registry2:5000/golang:1.15.3-esgz test echo hello',
      {
        terminal: true,
      },
    );
    expect(hello.stdout).toMatch(/^(\^@)?hello\r?$/m);

    for (const [line, target] of [
      [
        'ctr-remote image optimize --oci --estargz-gzip-helper pigz ghcr.io/stargz-containers/golang:1.15.3-buster-org registry2:5000/golang:1.15.3-esgz-pigz',
        'registry2:5000/golang:1.15.3-esgz-pigz',
      ],
      [
        'ctr-remote image optimize --oci --estargz-compression-level 1 ghcr.io/stargz-containers/golang:1.15.3-buster-org registry2:5000/golang:1.15.3-esgz-l1',
        'registry2:5000/golang:1.15.3-esgz-l1',
      ],
      [
        `ctr-remote image optimize --oci \\
           --entrypoint='[ "/bin/bash", "-c" ]' --args='[ "go version" ]' \\
           ghcr.io/stargz-containers/golang:1.15.3-buster-org \\
           registry2:5000/golang:1.15.3-esgz-go-version`,
        'registry2:5000/golang:1.15.3-esgz-go-version',
      ],
      [
        `ctr-remote image optimize --oci \\
           --all-platforms \\
           ghcr.io/stargz-containers/golang:1.15.3-buster-org \\
           registry2:5000/golang:1.15.3-esgz-fat`,
        'registry2:5000/golang:1.15.3-esgz-fat',
      ],
    ] as const) {
      const digest = printedDigest(await ok(line));
      await ok(`ctr-remote image push --plain-http ${target}`);
      await expectEstargzInRegistry(target, digest);
    }

    // --reuse over an image that is eStargz already: the layers are kept as they are.
    await ok('ctr-remote image pull registry2:5000/golang:1.15.3-esgz');
    await ok(`ctr-remote image optimize --oci \\
           --reuse \\
           registry2:5000/golang:1.15.3-esgz \\
           registry2:5000/golang:1.15.3-esgz-reused`);
    await ok('ctr-remote image push --plain-http registry2:5000/golang:1.15.3-esgz-reused');
    const [reused] = await expectEstargzInRegistry('registry2:5000/golang:1.15.3-esgz-reused');
    const [original] = await expectEstargzInRegistry('registry2:5000/golang:1.15.3-esgz');
    expect(reused!.layers.map((l) => l.digest)).toEqual(original!.layers.map((l) => l.digest));

    // --record-out (without --oci, as that doc section writes it).
    await ok('ctr-remote image pull docker.io/library/ubuntu:24.04');
    await ok(`ctr-remote image optimize --record-out=/tmp/log.json \\
  --entrypoint='[ "/bin/bash", "-c" ]' --args='[ "ls" ]' \\
  docker.io/library/ubuntu:24.04 registry2:5000/ubuntu:24.04`);
    const records = (await readFile(join(scratch, 'log.json'), 'utf8'))
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { path: string; manifestDigest: string; layerIndex: number });
    expect(records.map((r) => r.path)).toContain('bin/busybox');
    for (const r of records) expect(r.manifestDigest).toMatch(/^sha256:/);
  });

  it('docs/smaller-estargz.md: external TOC, keep-diff-id, min chunk size', async () => {
    await ok('ctr-remote i pull ghcr.io/stargz-containers/ubuntu:22.04');
    printedDigest(
      await ok(
        'ctr-remote i convert --oci --estargz --estargz-external-toc ghcr.io/stargz-containers/ubuntu:22.04 registry2:5000/ubuntu:22.04-ex',
      ),
    );
    await ok('ctr-remote i push --plain-http registry2:5000/ubuntu:22.04-ex');
    await ok('ctr-remote i push --plain-http registry2:5000/ubuntu:22.04-ex-esgztoc');
    await skopeoRaw('registry2:5000/ubuntu:22.04-ex-esgztoc');
    await ok('ctr-remote i rpull --plain-http registry2:5000/ubuntu:22.04-ex');

    printedDigest(
      await ok(
        'ctr-remote i convert --oci --estargz --estargz-min-chunk-size=50000 ghcr.io/stargz-containers/ubuntu:22.04 registry2:5000/ubuntu:22.04-chunk50000',
      ),
    );
    await ok('ctr-remote i push --plain-http registry2:5000/ubuntu:22.04-chunk50000');
    const [chunked] = await expectEstargzInRegistry('registry2:5000/ubuntu:22.04-chunk50000');
    // ctr-remote's get-toc-digest takes a layer digest from the store the convert wrote to.
    for (const layer of chunked!.layers) {
      const toc = await ok(`ctr-remote i get-toc-digest ${layer.digest}`);
      expect(toc.stdout).toBe(layer.annotations?.[TOC_DIGEST_ANNOTATION]);
    }
    await ok('ctr-remote i rpull --plain-http registry2:5000/ubuntu:22.04-chunk50000');

    // --estargz-keep-diff-id: the layers decompress to the source's diffIDs, the TOCs live apart.
    printedDigest(
      await ok(
        'ctr-remote i convert --oci --estargz --estargz-external-toc --estargz-keep-diff-id ghcr.io/stargz-containers/ubuntu:22.04 registry2:5000/ubuntu:22.04-ex-keepdiff',
      ),
    );
    await ok('ctr-remote i push --plain-http registry2:5000/ubuntu:22.04-ex-keepdiff');
    await ok('ctr-remote i push --plain-http registry2:5000/ubuntu:22.04-ex-keepdiff-esgztoc');
    const kept = JSON.parse(
      (
        await execa('skopeo', [
          'inspect',
          '--config',
          '--tls-verify=false',
          `docker://${registry}/ubuntu:22.04-ex-keepdiff`,
        ])
      ).stdout,
    ) as { rootfs: { diff_ids: string[] } };
    const original = JSON.parse(
      (
        await execa('skopeo', [
          'inspect',
          '--config',
          '--tls-verify=false',
          `docker://${registry}/stargz-containers/ubuntu:22.04`,
        ])
      ).stdout,
    ) as { rootfs: { diff_ids: string[] } };
    expect(kept.rootfs.diff_ids).toEqual(original.rootfs.diff_ids);
    await ok('ctr-remote i rpull --plain-http registry2:5000/ubuntu:22.04-ex-keepdiff');
  });

  it('docs/overview.md and nerdctl docs/stargz.md: convert --estargz --oci, push, run --snapshotter', async () => {
    await ok('ctr-remote image pull example.com/foo');
    const converted = printedDigest(
      await ok('ctr-remote image convert --estargz --oci example.com/foo example.com/foo:estargz'),
    );
    await ok('ctr-remote image push example.com/foo:estargz');
    await expectEstargzInRegistry('example.com/foo:estargz', converted);
    await ok('ctr-remote image rpull example.com/foo:estargz');
    const bash = await ok('ctr-remote run --rm -t --snapshotter=stargz example.com/foo:estargz test /bin/bash', {
      terminal: true,
      input: 'cat /etc/motd; exit\n',
    });
    expect(bash.stdout).toContain('from the docs image');

    // overview.md: rpull from a registry that wants a user (`--user <username>:<password>`); the
    // image gets there by ctr's `push <remote> [<local>]`.
    const privateRegistry = await startRegistry({ htpasswd: { username: 'alice', password: 'secret' } });
    try {
      const remote = `${privateRegistry.address}/alice/ubuntu:18.04`;
      await ok(`ctr-remote image push --user alice:secret ${remote} example.com/foo:estargz`);
      expect((await shell(`ctr-remote image rpull ${remote}`)).exitCode).not.toBe(0);
      await ok(`ctr-remote image rpull --user alice:secret ${remote}`);
      const hello = await ok(`ctr-remote run --rm --snapshotter=stargz ${remote} test cat /etc/motd`);
      expect(hello.stdout).toBe('from the docs image');
    } finally {
      await privateRegistry.stop();
    }
  });
});

describe('the same sequence through esgz with local: names', () => {
  it('pull -> optimize -> push gives the layer digests of esgz image optimize REGISTRY REGISTRY', async () => {
    const workload = `--entrypoint='[ "/bin/bash", "-c" ]' --args='[ "ls" ]'`;
    await ok(`esgz image pull ${registry}/library/ubuntu:20.04`);
    await ok(
      `esgz image optimize --oci ${workload} local:${registry}/library/ubuntu:20.04 local:${registry}/ubuntu:esgz-local`,
    );
    await ok(`esgz image push local:${registry}/ubuntu:esgz-local`);
    await ok(`esgz image optimize --oci ${workload} ${registry}/library/ubuntu:20.04 ${registry}/ubuntu:esgz-direct`);
    const [local] = await expectEstargzInRegistry(`${registry}/ubuntu:esgz-local`);
    const [direct] = await expectEstargzInRegistry(`${registry}/ubuntu:esgz-direct`);
    expect(local!.layers.map((l) => l.digest)).toEqual(direct!.layers.map((l) => l.digest));
    // The alias's pull -> optimize -> push of the README wrote the same layers.
    const [viaAlias] = await expectEstargzInRegistry('registry2:5000/ubuntu:20.04');
    expect(viaAlias!.layers.map((l) => l.digest)).toEqual(direct!.layers.map((l) => l.digest));
    expect(await readdir(stateRoot)).not.toHaveLength(0);
  });
});
