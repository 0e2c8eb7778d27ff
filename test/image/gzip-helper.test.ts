// `--estargz-gzip-helper pigz|igzip|unpigz`: gzip source layers decompressed by an external
// command (scripts/install-deps.sh installs pigz and isal). The output must be the same bytes as
// with in-process zlib; bad input, a bad helper name or a missing helper fail with one line and
// leave nothing behind; the helper process never outlives a stopped or failed decompression.
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, rm, symlink } from 'node:fs/promises';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { Readable } from 'node:stream';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compress as zstdCompress } from 'zstd-napi';
import { EsgzError } from '../../src/errors.js';
import { GZIP_HELPERS, openDecompressed, resolveGzipHelper } from '../../src/image/compression.js';
import { busyboxRootfs, multiLayerEntries, writeOciImage, type WrittenImage } from '../fixtures/oci-image.js';
import { buildTar, generatedBuffer, gzipBuffer, sha256Digest } from '../fixtures/tar.js';
import { esgz, expectOneLineError, repoRoot } from '../harness/cli.js';
import { registryAddress } from '../harness/registry.js';

const scratch = await mkdtemp(join(tmpdir(), 'esgz-gzip-helper-'));
afterAll(() => rm(scratch, { recursive: true, force: true }));

let image: WrittenImage;

beforeAll(async () => {
  if (!existsSync(join(repoRoot, 'dist/image/compression.js')))
    throw new Error('dist/ is missing: run `npm run build` first');
  for (const helper of GZIP_HELPERS) await resolveGzipHelper(helper); // installed by scripts/install-deps.sh
  image = await writeOciImage(join(scratch, 'src'), { tag: 'v1', layers: multiLayerEntries() });
});

/** Converts and returns the --json report's root digest. */
async function convert(args: string[], src: string, dst: string): Promise<string> {
  const res = await esgz('image', 'convert', '--json', ...args, src, dst);
  expect(res.exitCode, res.stderr).toBe(0);
  return JSON.parse(res.stdout).digest as string;
}

/**
 * The image tagged t at scratch/truncated whose layer 1 is stored as `blob` (the diffID of the
 * real layer kept), so the source itself verifies and only decompression can fail.
 */
async function withLayer1(layer1: Buffer, blob: Buffer): Promise<WrittenImage> {
  const prepared = { blob, mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', diffID: sha256Digest(layer1) };
  return writeOciImage(join(scratch, 'truncated'), { tag: 't', layers: [busyboxRootfs(), prepared] });
}

/** Pids of this process's children running `command`. */
function childrenNamed(command: string, parent = process.pid): number[] {
  const out = execFileSync('ps', ['-o', 'pid=,comm=', '--ppid', String(parent)], { encoding: 'utf8' }).trim();
  return out === ''
    ? []
    : out
        .split('\n')
        .map((l) => l.trim().split(/\s+/))
        .filter(([, comm]) => comm === command)
        .map(([pid]) => Number(pid));
}

async function waitFor(condition: () => boolean, what: string, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('esgz image convert --estargz-gzip-helper', () => {
  // 20 conversions (every helper, gzip included, for three formats): more than the default timeout on a busy machine.
  it('writes the same bytes with pigz, unpigz, igzip and gzip as in-process (eStargz, zstd:chunked, uncompress)', async () => {
    const src = `oci:${image.dir}:v1`;
    for (const format of [['--estargz', '--oci'], ['--zstdchunked', '--oci'], ['--uncompress']]) {
      const reference = await convert(format, src, `oci:${join(scratch, 'ref')}:${format[0]!.slice(2)}`);
      for (const helper of GZIP_HELPERS) {
        const digest = await convert(
          [...format, '--estargz-gzip-helper', helper],
          src,
          `oci:${join(scratch, `out-${helper}`)}:${format[0]!.slice(2)}`,
        );
        expect(digest, `${format[0]} with ${helper}`).toBe(reference);
      }
    }
    // An eStargz source is a concatenation of many gzip members: the helpers must read them all.
    const esgzSrc = `oci:${join(scratch, 'ref')}:estargz`;
    const plain = await convert(['--uncompress'], esgzSrc, `oci:${join(scratch, 'ref')}:back`);
    for (const helper of GZIP_HELPERS) {
      expect(
        await convert(
          ['--uncompress', '--estargz-gzip-helper', helper],
          esgzSrc,
          `oci:${join(scratch, `back-${helper}`)}:b`,
        ),
      ).toBe(plain);
    }
  }, 300_000);

  it('a corrupt gzip layer: one line naming the layer, nothing left at the destination', async () => {
    const layer1 = await buildTar(multiLayerEntries()[1]!);
    const original = gzipBuffer(layer1);
    const cut = original.subarray(0, Math.floor(original.length / 2));
    const truncated = await withLayer1(layer1, cut);
    const layer = sha256Digest(cut).slice(7, 19);

    for (const helper of ['pigz', 'igzip'] as const) {
      const dst = join(scratch, `truncated-out-${helper}`);
      const res = await esgz(
        'image',
        'convert',
        '--estargz',
        '--oci',
        '--estargz-gzip-helper',
        helper,
        `oci:${truncated.dir}:t`,
        `oci:${dst}:x`,
      );
      expectOneLineError(
        res,
        1,
        new RegExp(`layer 1 \\(${layer}\\).*corrupt gzip data: ${helper} -d -c exited with code \\d+`),
      );
      expect(existsSync(join(dst, 'index.json'))).toBe(false);
      expect(existsSync(dst) ? await readdir(join(dst, 'blobs', 'sha256')).catch(() => []) : []).toEqual([]);
    }

    // Garbage after a valid gzip header, pushed to a registry: no tag appears there.
    const garbage = Buffer.concat([original.subarray(0, 10), generatedBuffer(4096, 'not deflate')]);
    await withLayer1(layer1, garbage);
    const ref = `${registryAddress()}/esgz-gzip-helper/corrupt:x`;
    const res = await esgz(
      'image',
      'convert',
      '--plain-http',
      '--uncompress',
      '--estargz-gzip-helper',
      'pigz',
      `oci:${truncated.dir}:t`,
      ref,
    );
    expectOneLineError(
      res,
      1,
      new RegExp(`layer 1 \\(${sha256Digest(garbage).slice(7, 19)}\\).*corrupt gzip data: pigz -d -c exited`),
    );
    const inspect = await execa('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${ref}`], {
      reject: false,
    });
    expect(inspect.exitCode).not.toBe(0);
  });

  it('a bad helper name or a helper that is not installed: one line, nothing written', async () => {
    const dst = join(scratch, 'never');
    expectOneLineError(
      await esgz(
        'image',
        'convert',
        '--estargz',
        '--oci',
        '--estargz-gzip-helper',
        'gzip -d',
        `oci:${image.dir}:v1`,
        `oci:${dst}:x`,
      ),
      2,
      /--estargz-gzip-helper "gzip -d": expected one of pigz, igzip, unpigz/,
    );
    // PATH with only node on it: no igzip to be found.
    const onlyNode = join(scratch, 'only-node');
    await mkdir(onlyNode);
    await symlink(process.execPath, join(onlyNode, 'node'));
    const res = await execa(
      join(onlyNode, 'node'),
      [
        join(repoRoot, 'bin/run.js'),
        'image',
        'convert',
        '--estargz',
        '--oci',
        '--estargz-gzip-helper',
        'igzip',
        `oci:${image.dir}:v1`,
        `oci:${dst}:x`,
      ],
      {
        reject: false,
        env: { DEBUG: '', PATH: onlyNode },
        extendEnv: false,
        stdin: 'ignore',
      },
    );
    expectOneLineError(res, 1, /^esgz: --estargz-gzip-helper igzip: igzip is not installed \(apt-get install isal\)$/);
    expect(existsSync(dst)).toBe(false);
  });

  it('--help documents the helper with an example', async () => {
    const help = await esgz('image', 'convert', '--help');
    expect(help.stdout).toMatch(/--estargz-gzip-helper=pigz\|igzip\|unpigz/);
    expect(help.stdout).toMatch(/image convert --estargz --oci --estargz-gzip-helper pigz/);
  });
});

describe('openDecompressed with a gzip helper', () => {
  const tar = generatedBuffer(8 << 20, 'helper payload');
  const gz = gzipBuffer(tar);

  async function readAll(stream: Readable): Promise<Buffer> {
    const chunks: Buffer[] = [];
    for await (const chunk of stream) chunks.push(chunk as Buffer);
    return Buffer.concat(chunks);
  }

  it('decompresses gzip through the helper and leaves zstd and plain data to the in-process path', async () => {
    const gzip = await openDecompressed(Readable.from([gz]), 'layer g', { gzipHelper: 'pigz' });
    expect(gzip.compression).toBe('gzip');
    expect((await readAll(gzip.stream)).equals(tar)).toBe(true);
    const zstd = await openDecompressed(Readable.from([zstdCompress(tar)]), 'layer z', { gzipHelper: 'pigz' });
    expect(childrenNamed('pigz')).toEqual([]);
    expect(zstd.compression).toBe('zstd');
    expect((await readAll(zstd.stream)).equals(tar)).toBe(true);
    const plain = await openDecompressed(Readable.from([tar]), 'layer p', { gzipHelper: 'igzip' });
    expect(plain.compression).toBe('none');
    expect((await readAll(plain.stream)).equals(tar)).toBe(true);
    expect(childrenNamed('pigz')).toEqual([]);
  });

  it('kills the helper when the signal fires, or when the reader stops early', async () => {
    // A slow source: the helper waits on stdin until it is killed.
    const slow = (): Readable => {
      const stream = new Readable({ read() {} });
      stream.push(gz.subarray(0, 1 << 20));
      return stream;
    };
    const controller = new AbortController();
    const aborted = await openDecompressed(slow(), 'layer a', { gzipHelper: 'pigz', signal: controller.signal });
    const failed = readAll(aborted.stream).catch((err: unknown) => err);
    await waitFor(() => childrenNamed('pigz').length === 1, 'pigz to start');
    controller.abort();
    expect(await failed).toMatchObject({ code: 'INTERRUPTED' });
    await waitFor(() => childrenNamed('pigz').length === 0, 'pigz to be killed and reaped');

    const early = await openDecompressed(slow(), 'layer b', { gzipHelper: 'igzip' });
    await waitFor(() => childrenNamed('igzip').length === 1, 'igzip to start');
    early.stream.destroy();
    await waitFor(() => childrenNamed('igzip').length === 0, 'igzip to be killed and reaped');
  });

  it('a source error fails the output with that error and stops the helper', async () => {
    const source = new Readable({ read() {} });
    source.push(gz.subarray(0, 4096));
    const opened = await openDecompressed(source, 'layer s', { gzipHelper: 'unpigz' });
    const failed = readAll(opened.stream).catch((err: unknown) => err);
    await waitFor(() => childrenNamed('unpigz').length === 1, 'unpigz to start');
    source.destroy(new EsgzError('DIGEST_MISMATCH', 'layer s: digest mismatch'));
    expect(await failed).toMatchObject({ code: 'DIGEST_MISMATCH' });
    await waitFor(() => childrenNamed('unpigz').length === 0, 'unpigz to be killed and reaped');
  });
});
