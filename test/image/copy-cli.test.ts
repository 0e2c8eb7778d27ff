// `esgz image copy` through the built CLI (npm run build first, as scripts/test.sh does):
// exit codes, exactly one stderr line on bad input, nothing left at the destination.
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { registryAddress } from '../harness/registry.js';
import {
  busyboxRootfs,
  multiLayerEntries,
  twoPlatformImages,
  writeOciImage,
  type WrittenImage,
} from '../fixtures/oci-image.js';
import { esgz, expectOneLineError, repoRoot } from '../harness/cli.js';

const scratch = await mkdtemp(join(tmpdir(), 'esgz-copy-cli-'));
afterAll(() => rm(scratch, { recursive: true, force: true }));

let image: WrittenImage;
let multiarch: WrittenImage;

beforeAll(async () => {
  if (!existsSync(join(repoRoot, 'dist/commands/image/copy.js')))
    throw new Error('dist/ is missing: run `npm run build` first');
  image = await writeOciImage(join(scratch, 'src'), { tag: 'v1', layers: multiLayerEntries() });
  multiarch = await writeOciImage(join(scratch, 'src'), { tag: 'multi', platforms: twoPlatformImages() });
});

describe('esgz image copy', () => {
  it('copies oci → registry → oci and prints a --json summary with the digests', async () => {
    const ref = `${registryAddress()}/esgz-cli/copy:v1`;
    const push = await esgz('image', 'copy', '--plain-http', '--json', `oci:${image.dir}:v1`, ref);
    expect(push.exitCode, push.stderr).toBe(0);
    expect(push.stderr).toBe('');
    const summary = JSON.parse(push.stdout);
    expect(summary).toMatchObject({
      command: 'image copy',
      digest: image.rootDigest,
      sourceDigest: image.rootDigest,
      transform: 'identity',
    });
    expect(summary.manifests[0].layers.map((l: { output: { digest: string } }) => l.output.digest)).toEqual(
      image.manifests[0]!.layers.map((l) => l.digest),
    );
    expect(summary.durationMs).toBeGreaterThanOrEqual(0);

    const dst = join(scratch, 'pulled');
    const pull = await esgz('image', 'copy', '--plain-http', ref, `oci:${dst}:pulled`);
    expect(pull.exitCode, pull.stderr).toBe(0);
    expect(pull.stdout).toContain(`digest: ${image.rootDigest}`);
    const { stdout } = await execa('skopeo', ['inspect', '--format', '{{.Digest}}', `oci:${dst}:pulled`]);
    expect(stdout.trim()).toBe(image.rootDigest);
  });

  it('--platform and --all-platforms', async () => {
    const arm = await esgz(
      'image',
      'copy',
      '--json',
      '--platform',
      'linux/arm64',
      `oci:${multiarch.dir}:multi`,
      `docker-archive:${join(scratch, 'arm.tar')}:arm:1`,
    );
    expect(arm.exitCode, arm.stderr).toBe(0);
    expect(JSON.parse(arm.stdout).digest).toBe(multiarch.manifests[1]!.digest);
    const all = await esgz(
      'image',
      'copy',
      '--json',
      '--all-platforms',
      `oci:${multiarch.dir}:multi`,
      `oci:${join(scratch, 'all')}:all`,
    );
    expect(JSON.parse(all.stdout).digest).toBe(multiarch.rootDigest);
    // A docker archive holds one platform: asking for all of them is refused, and no file is left.
    const refused = await esgz(
      'image',
      'copy',
      '--all-platforms',
      `oci:${multiarch.dir}:multi`,
      `docker-archive:${join(scratch, 'all.tar')}`,
    );
    expectOneLineError(refused, 2, /a docker archive holds one platform; use --platform/);
    expect((await readdir(scratch)).filter((n) => n.startsWith('all.tar'))).toEqual([]);
  });

  it('bad input: one line, non-zero exit, no stack trace', async () => {
    expectOneLineError(
      await esgz('image', 'copy', 'dir:/tmp/x', `oci:${join(scratch, 'x')}`),
      2,
      /transport "dir:" is not supported/,
    );
    expectOneLineError(await esgz('image', 'copy', 'not a ref', `oci:${join(scratch, 'x')}`), 2, /invalid image/);
    const notLayout = join(scratch, 'plain-dir');
    await execa('mkdir', ['-p', notLayout]);
    expectOneLineError(
      await esgz('image', 'copy', `oci:${notLayout}:v1`, `oci:${join(scratch, 'x')}`),
      1,
      /not an OCI image layout \(no oci-layout file/,
    );
    expectOneLineError(
      await esgz('image', 'copy', `oci:${join(scratch, 'nowhere')}:v1`, `oci:${join(scratch, 'x')}`),
      1,
      /no such directory .*nowhere/,
    );
    expectOneLineError(
      await esgz('image', 'copy', `docker-archive:${join(scratch, 'nowhere.tar')}`, `oci:${join(scratch, 'x')}`),
      1,
      /no such file .*nowhere\.tar/,
    );
    expectOneLineError(
      await esgz('image', 'copy', `oci:${image.dir}:v1`, `docker-archive:${join(scratch, 'no-dir', 'a.tar')}`),
      1,
      /cannot create .*a\.tar: its directory does not exist/,
    );
    // Destinations that cannot be written: a file where the layout dir should be, a dir where the archive should be.
    await writeFile(join(scratch, 'a-file'), 'x');
    expectOneLineError(
      await esgz('image', 'copy', `oci:${image.dir}:v1`, `oci:${join(scratch, 'a-file')}:v1`),
      1,
      /a-file exists and is not a directory/,
    );
    expectOneLineError(
      await esgz('image', 'copy', `oci:${image.dir}:v1`, `oci:${join(scratch, 'a-file', 'sub')}:v1`),
      1,
      /cannot write to .*a-file\/sub: ENOTDIR/,
    );
    expectOneLineError(
      await esgz('image', 'copy', `oci:${image.dir}:v1`, `docker-archive:${scratch}`),
      1,
      /cannot write .*: EISDIR/,
    );
    expect((await readdir(scratch)).filter((n) => n.includes('.tmp-'))).toEqual([]);
    expectOneLineError(
      await esgz('image', 'copy', `oci:${image.dir}:missing`, `oci:${join(scratch, 'x')}`),
      1,
      /no image tagged "missing".*tags: v1, multi/,
    );
    expectOneLineError(
      await esgz('image', 'copy', '--platform', 'lnux', `oci:${image.dir}:v1`, `oci:${join(scratch, 'x')}`),
      2,
      /--platform "lnux"/,
    );
    expectOneLineError(await esgz('image', 'copy', `oci:${image.dir}:v1`), 2, /Missing 1 required arg/);
    expect(existsSync(join(scratch, 'x'))).toBe(false);
  });

  it('a corrupt layer blob: exit 1, one line naming the layer, destination untouched', async () => {
    const corrupt = await writeOciImage(join(scratch, 'corrupt'), {
      tag: 'c',
      layers: [busyboxRootfs(), ...multiLayerEntries().slice(1)],
    });
    const victim = join(corrupt.dir, 'blobs', 'sha256', corrupt.manifests[0]!.layers[2]!.digest.slice(7));
    const bytes = await readFile(victim);
    // Keep the gzip stream valid-looking but change its content: flip a byte near the end.
    bytes[bytes.length - 12]! ^= 0x01;
    await writeFile(victim, bytes);
    const dst = join(scratch, 'corrupt-dst');
    const result = await esgz('image', 'copy', `oci:${corrupt.dir}:c`, `oci:${dst}:c`);
    expectOneLineError(result, 1, /layer 3\/3 [0-9a-f]{12}: .*digest mismatch: expected sha256:/);
    expect(existsSync(dst)).toBe(false);

    const archive = join(scratch, 'corrupt.tar');
    expectOneLineError(
      await esgz('image', 'copy', `oci:${corrupt.dir}:c`, `docker-archive:${archive}`),
      1,
      /digest mismatch/,
    );
    expect((await readdir(scratch)).filter((n) => n.startsWith('corrupt.tar'))).toEqual([]);

    const ref = `${registryAddress()}/esgz-cli/corrupt:c`;
    expectOneLineError(await esgz('image', 'copy', '--plain-http', `oci:${corrupt.dir}:c`, ref), 1, /digest mismatch/);
    const inspect = await execa('skopeo', ['inspect', '--tls-verify=false', `docker://${ref}`], { reject: false });
    expect(inspect.exitCode).not.toBe(0);
    expect(inspect.stderr).toMatch(/manifest unknown|not found/i);
  });

  it('Ctrl-C during a blob copy: exit 130, one line, nothing committed or left half-written', async () => {
    const big = await writeOciImage(join(scratch, 'big'), {
      tag: 'b',
      gzipLevel: 1,
      layers: [[{ type: 'file', path: 'big.bin', size: 32 << 20, seed: 'sigint' }]],
    });
    const dst = join(scratch, 'interrupted');
    await execa('mkdir', ['-p', dst]);
    const child = execa('node', [join(repoRoot, 'bin/run.js'), 'image', 'copy', `oci:${big.dir}:b`, `oci:${dst}:b`], {
      reject: false,
      env: { DEBUG: '' },
    });
    // Interrupt once the layer's temp file exists, i.e. in the middle of the blob copy.
    const deadline = Date.now() + 60_000;
    let seen = false;
    while (!seen && Date.now() < deadline && child.exitCode === null) {
      const blobs = join(dst, 'blobs', 'sha256');
      seen = existsSync(blobs) && (await readdir(blobs)).some((n) => n.startsWith('.tmp-'));
      if (!seen) await new Promise((r) => setTimeout(r, 10));
    }
    expect(seen).toBe(true);
    child.kill('SIGINT');
    const result = await child;
    expectOneLineError(result, 130, /interrupted/);
    expect(await readdir(dst)).toEqual([]);
  });
});
