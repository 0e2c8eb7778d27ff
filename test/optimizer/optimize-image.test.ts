import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EsgzError } from '../../src/errors.js';
import { openSink, openSource } from '../../src/image/transports/index.js';
import { optimizeImage, type OptimizeImageOptions } from '../../src/optimizer/optimize-image.js';
import { memoryBackedTempRoot, profileImage } from '../../src/optimizer/image-profile.js';
import { listContainers } from '../../src/runtime/runc.js';
import { busyboxRootfs, twoPlatformImages, writeOciImage } from '../fixtures/oci-image.js';
import { layoutBlobPath, layoutRootDigest, readOciLayout } from '../fixtures/oci-layout.js';
import { contentSize, dir, file } from '../fixtures/tar.js';
import { debianImage, debianImageCached } from '../fixtures/debian.js';
import { readPrefetchList } from '../../src/estargz/priority.js';

let work: string;
let busyboxRef: string;

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), 'esgz-optimize-'));
  // Two layers: busybox, then a layer with unrelated files that must stay after the landmark.
  await writeOciImage(join(work, 'src'), {
    tag: 'latest',
    layers: [
      busyboxRootfs(),
      [
        dir('opt'),
        file('opt/unused-1', 'not touched\n'),
        file('opt/unused-2', 'not touched either\n'),
        dir('etc'),
        file('etc/motd', 'read me\n'),
      ],
    ],
    config: { Cmd: ['/bin/sh'] },
  });
  busyboxRef = `oci:${join(work, 'src')}:latest`;
});
afterAll(() => rmSync(work, { recursive: true, force: true }));

/** The layers of the image `tag` in an OCI layout, as GNU tar lists them (the oracle). */
function layerEntryNames(layout: string, tag: string): string[][] {
  return readOciLayout(layout, tag).manifests[0]!.layers.map((layer) => {
    expect(layer.annotations?.['containerd.io/snapshot/stargz/toc.digest']).toMatch(/^sha256:/);
    return execFileSync('tar', ['-tzf', layoutBlobPath(layout, layer.digest)], { encoding: 'utf8' })
      .trim()
      .split('\n');
  });
}

/**
 * The busybox layer's entries up to and including the landmark after optimizing `cat /etc/hello;
 * ls /bin`: the workload's files in access order (with their parent directories), then the files
 * runc read setting up the container before it exec'd the workload (etc/passwd, then etc/group).
 */
const BUSYBOX_PREFETCH = ['bin/', 'bin/busybox', 'etc/', 'etc/hello', 'etc/passwd', 'etc/group', '.prefetch.landmark'];
/** The same without the directories. */
const BUSYBOX_PREFETCH_FILES = BUSYBOX_PREFETCH.filter((n) => !n.endsWith('/'));

async function optimize(src: string, dst: string, overrides: Partial<OptimizeImageOptions> = {}) {
  const source = await openSource(src);
  const sink = await openSink(dst);
  const out = new PassThrough();
  let stdout = '';
  out.on('data', (c: Buffer) => (stdout += c.toString()));
  const warnings: string[] = [];
  try {
    const report = await optimizeImage({
      source,
      sink,
      format: 'estargz',
      convert: {},
      oci: true,
      run: { entrypoint: ['/bin/sh', '-c'], args: ['cat /etc/hello; ls /bin'] },
      periodSeconds: 20,
      workloadStdout: out,
      workloadStderr: out,
      onWarning: (m) => warnings.push(m),
      ...overrides,
    });
    return { report, stdout, warnings };
  } finally {
    await source.close();
  }
}

describe('optimizeImage (profile + convert through the pipeline)', () => {
  it("puts bin/busybox and etc/hello before the landmark in access order, then runc's etc/passwd and etc/group, and everything else after", async () => {
    const out = join(work, 'out1');
    const record = join(work, 'record.json');
    const { report, stdout } = await optimize(busyboxRef, `oci:${out}:opt`, {
      recordOut: record,
      reopenTarget: () => openSource(`oci:${out}:opt`),
    });
    expect(stdout).toContain('hello from an esgz fixture');
    const [base, top] = layerEntryNames(out, 'opt');
    // Parent directories come with their files: the workload's files in access order, then the
    // runtime's setup reads in the order runc read them, then the landmark.
    const landmark = base!.indexOf('.prefetch.landmark');
    expect(base!.slice(0, landmark + 1)).toEqual(BUSYBOX_PREFETCH);
    // Everything else, once each, after the landmark.
    const after = base!.slice(landmark + 1);
    expect(after).toEqual(expect.arrayContaining(['bin/sh', 'bin/ls', 'tmp/']));
    for (const name of BUSYBOX_PREFETCH) expect(after).not.toContain(name);
    // The second layer had nothing accessed: no prefetch range.
    expect(top![0]).toBe('.no.prefetch.landmark');
    expect(top).not.toContain('.prefetch.landmark');

    const p = report.profiled!;
    expect(p.filesTraced).toBe(4);
    expect(p.runtimeFiles).toEqual(['etc/passwd', 'etc/group']);
    expect(p.layers.map((l) => l.prioritizedFiles)).toEqual([4, 0]);
    const fixtureBytes = ['etc/hello', 'etc/passwd', 'etc/group'].map((n) =>
      contentSize(busyboxRootfs().find((e) => e.path === n)!),
    );
    expect(p.layers[0]!.prioritizedBytes).toBe(
      readFileSync('/bin/busybox').length + fixtureBytes.reduce((a, b) => a + b, 0),
    );
    expect(p.prefetchCoverage).toBe(1);
    // The reported landmark offset is where the gzip member of its payload starts (TOC offset
    // semantics): gunzip from there (the oracle) yields the landmark's one byte, 0x0f, first.
    const offset = p.layers[0]!.landmarkOffset!;
    expect(offset).toBeGreaterThan(500_000);
    const blob = join(out, 'blobs', 'sha256', report.transfer.manifests[0]!.layers[0]!.output.digest.slice(7));
    const fromLandmark = execFileSync(
      'sh',
      ['-c', `tail -c +${offset + 1} "$1" | gzip -dc | head -c 1 | od -An -tx1`, 'sh', blob],
      { encoding: 'utf8' },
    );
    expect(fromLandmark.trim()).toBe('0f');
    expect(p.layers[1]!.landmarkOffset).toBeUndefined();
    // One JSON object per line, as ctr-remote writes them.
    const entries = readFileSync(record, 'utf8')
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as { path: string; layerIndex?: number; manifestDigest?: string });
    expect(entries.map((e) => [e.path, e.layerIndex])).toEqual([
      ['bin/busybox', 0],
      ['etc/hello', 0],
      ['etc/passwd', 0],
      ['etc/group', 0],
    ]);
    expect(entries[0]!.manifestDigest).toBe(p.manifestDigest);
  });

  it('produces an image that unpacks and runs the same workload again', async () => {
    const out = join(work, 'rerun');
    await optimize(busyboxRef, `oci:${out}:r`);
    const source = await openSource(`oci:${out}:r`);
    try {
      const rerun = await profileImage(source, await source.fetchRoot(), {
        run: { entrypoint: ['/bin/sh', '-c'], args: ['cat /etc/hello; ls /bin'] },
        stdout: new PassThrough(),
      });
      expect(rerun.exitCode).toBe(0);
      expect(rerun.accessed).toEqual(BUSYBOX_PREFETCH_FILES.slice(0, -1));
    } finally {
      await source.close();
    }
  });

  it('gives the same digests when the same workload is optimized twice', async () => {
    await optimize(busyboxRef, `oci:${join(work, 'twice-a')}:t`);
    await optimize(busyboxRef, `oci:${join(work, 'twice-b')}:t`);
    expect(layoutRootDigest(join(work, 'twice-b'), 't')).toBe(layoutRootDigest(join(work, 'twice-a'), 't'));
  });

  it('--no-optimize converts without running anything', async () => {
    const out = join(work, 'noopt');
    const { report } = await optimize(busyboxRef, `oci:${out}:n`, {
      noOptimize: true,
      run: { entrypoint: ['/bin/does-not-matter'] },
    });
    expect(report.profiled).toBeUndefined();
    const [base] = layerEntryNames(out, 'n');
    expect(base![0]).toBe('.no.prefetch.landmark');
  });

  it('profiles only the platform that runs here and converts the other with a warning', async () => {
    const layout = join(work, 'multi');
    await writeOciImage(layout, { tag: 'multi', platforms: twoPlatformImages() });
    const out = join(work, 'multi-out');
    const { report, warnings } = await optimize(`oci:${layout}:multi`, `oci:${out}:m`, { allPlatforms: true });
    expect(report.notProfiled).toEqual(['linux/arm64']);
    expect(warnings.join('\n')).toMatch(/linux\/arm64: not runnable on this machine/);
    expect(report.profiled!.filesTraced).toBe(4);
    expect(report.transfer.manifests).toHaveLength(2);
  });

  it('refuses a single-platform image for another architecture with a clear message', async () => {
    const layout = join(work, 'arm');
    await writeOciImage(layout, { tag: 'arm', platforms: [twoPlatformImages()[1]!] });
    const err = await optimize(`oci:${layout}:arm`, `oci:${join(work, 'arm-out')}:a`, {
      platform: { os: 'linux', architecture: 'arm64' },
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(EsgzError);
    expect((err as EsgzError).message).toMatch(/none of the selected platforms \(linux\/arm64\) runs on this machine/);
    expect(
      existsSync(join(work, 'arm-out', 'index.json')) &&
        readFileSync(join(work, 'arm-out', 'index.json'), 'utf8').includes('"a"'),
    ).toBe(false);
    expect(await listContainers()).toEqual([]);
  });
});

/** Threads of this process (the main thread, libuv's pool, V8's helpers, worker threads). */
function threadCount(): number {
  return readdirSync('/proc/self/task').length;
}

describe('optimizeImage compression threads', () => {
  it('traced and untraced layers compress on one pool: never more worker threads than its size', async () => {
    const out = join(work, 'threads');
    const workers = 2;
    let before: number | undefined;
    let peak = 0;
    // Threads started since the conversion began are the compression workers (libuv's pool and
    // V8's helpers were started by the profile already).
    const sampler = setInterval(() => {
      if (before !== undefined) peak = Math.max(peak, threadCount() - before);
    }, 2);
    let report: Awaited<ReturnType<typeof optimize>>['report'];
    try {
      ({ report } = await optimize(busyboxRef, `oci:${out}:t`, {
        convert: { workers },
        concurrency: 2,
        // Compressing ahead starts the same pool before the profile, where other threads start
        // too; counted from the conversion on, the pool's threads must be new.
        compressAhead: false,
        onStage: (stage) => {
          if (stage === 'convert') before = threadCount();
        },
      }));
    } finally {
      clearInterval(sampler);
    }
    // Layer 0 holds what the workload read (traced writer), layer 1 only untouched files (untraced).
    expect(report.profiled!.layers.map((l) => l.prioritizedFiles > 0)).toEqual([true, false]);
    expect(peak).toBeGreaterThan(0);
    expect(peak).toBeLessThanOrEqual(workers);
  });
});

describe('memory-backed temp dir', () => {
  it.skipIf(!existsSync('/dev/shm') || process.env.TMPDIR !== undefined)(
    'unpacks into /dev/shm only when it and the available memory have room',
    async () => {
      expect(await memoryBackedTempRoot(10 << 20)).toBe('/dev/shm');
      expect(await memoryBackedTempRoot(1e15)).toBeUndefined();
      expect(await memoryBackedTempRoot(10 << 20, { candidate: '/nonexistent-esgz' })).toBeUndefined();
      expect(await memoryBackedTempRoot(10 << 20, { tmpfs: false })).toBeUndefined();
      const named = mkdtempSync(join(tmpdir(), 'esgz-tmpfs-setting-'));
      try {
        expect(await memoryBackedTempRoot(1e15, { tmpfs: named })).toBe(named);
      } finally {
        rmSync(named, { recursive: true, force: true });
      }
    },
  );
});

describe('optimizeImage options', () => {
  it("--prefetch-list adds files after the traced ones (the workload's and the runtime's)", async () => {
    const list = join(work, 'prefetch.txt');
    // etc/group is already prioritized (runc read it): listing it again does not move or repeat it.
    writeFileSync(list, '# extra\n/etc/group\n/opt/unused-2\n');
    const out = join(work, 'prefetch-out');
    await optimize(busyboxRef, `oci:${out}:p`, { prefetchList: await readPrefetchList(list) });
    const [base, top] = layerEntryNames(out, 'p');
    expect(base!.slice(0, BUSYBOX_PREFETCH.length)).toEqual(BUSYBOX_PREFETCH);
    // The list applies to every layer: the untraced top layer prefetches the listed file it has.
    expect(top!.slice(0, top!.indexOf('.prefetch.landmark') + 1)).toEqual([
      'opt/',
      'opt/unused-2',
      '.prefetch.landmark',
    ]);
  });

  it('--temp-dir on a tmpfs holds every temporary file and is left empty', async () => {
    const temp = mkdtempSync(join(existsSync('/dev/shm') ? '/dev/shm' : tmpdir(), 'esgz-h5-temp-'));
    try {
      const out = join(work, 'tempdir-out');
      const { report } = await optimize(busyboxRef, `oci:${out}:t`, { tempDir: temp });
      expect(report.profiled!.filesTraced).toBe(4);
      expect(readdirSync(temp)).toEqual([]);
      expect(layoutRootDigest(out, 't')).toBe(layoutRootDigest(join(work, 'out1'), 'opt'));
    } finally {
      rmSync(temp, { recursive: true, force: true });
    }
  });

  it('--reuse keeps an eStargz layer the workload did not touch and rewrites the touched one', async () => {
    const first = join(work, 'reuse-1');
    await optimize(busyboxRef, `oci:${first}:r`);
    const second = join(work, 'reuse-2');
    const { report } = await optimize(`oci:${first}:r`, `oci:${second}:r`, { convert: { reuse: true } });
    const layers = report.transfer.manifests[0]!.layers;
    expect(layers.map((l) => l.changed)).toEqual([true, false]);
    expect(layers[1]!.output.digest).toBe(layers[1]!.input.digest);
    expect(layerEntryNames(second, 'r')[0]!.slice(0, BUSYBOX_PREFETCH.length)).toEqual(BUSYBOX_PREFETCH);
  });
});

describe('optimizeImage to zstd:chunked from Docker media types', () => {
  it('--oci --zstdchunked converts a Docker image and prioritizes the traced files', async () => {
    const layout = join(work, 'docker');
    await writeOciImage(layout, {
      tag: 'd',
      mediaTypes: 'docker',
      layers: [busyboxRootfs()],
      config: { Cmd: ['/bin/sh'] },
    });
    const out = join(work, 'zstd');
    const { report } = await optimize(`oci:${layout}:d`, `oci:${out}:z`, {
      format: 'zstdchunked',
      convert: { oci: true },
    });
    const layer = report.transfer.manifests[0]!.layers[0]!;
    expect(layer.output.mediaType).toBe('application/vnd.oci.image.layer.v1.tar+zstd');
    // zstd -d is the oracle for the frames, GNU tar for the order.
    const names = execFileSync('sh', ['-c', 'zstd -dc "$1" | tar -t', 'sh', layoutBlobPath(out, layer.output.digest)], {
      encoding: 'utf8',
    })
      .trim()
      .split('\n');
    expect(names.slice(0, BUSYBOX_PREFETCH.length)).toEqual(BUSYBOX_PREFETCH);
  });
});

describe('optimizeImage with --estargz-external-toc', () => {
  it('writes the TOC image next to the target and still reports the landmark', async () => {
    const out = join(work, 'ext');
    const { report } = await optimize(busyboxRef, `oci:${out}:e`, {
      convert: { externalTOC: true },
      reopenTarget: () => openSource(`oci:${out}:e`),
      openTocSink: async () => ({ sink: await openSink(`oci:${out}:e-esgztoc`), reference: `oci:${out}:e-esgztoc` }),
    });
    expect(report.tocImage?.reference).toBe(`oci:${out}:e-esgztoc`);
    expect(layoutRootDigest(out, 'e-esgztoc')).toBe(report.tocImage!.digest);
    const names = execFileSync(
      'tar',
      ['-tzf', layoutBlobPath(out, report.transfer.manifests[0]!.layers[0]!.output.digest)],
      { encoding: 'utf8' },
    )
      .trim()
      .split('\n');
    expect(names.slice(0, BUSYBOX_PREFETCH.length)).toEqual(BUSYBOX_PREFETCH);
    expect(names).not.toContain('stargz.index.json');
    expect(report.profiled!.layers[0]!.landmarkOffset).toBeGreaterThan(500_000);
  });
});

describe('optimizeImage on the Debian bookworm python3 image', () => {
  it.skipIf(!debianImageCached())(
    'prioritizes the interpreter, loader, libraries, ld.so.cache and encodings of python3 -c "print(1)"',
    async () => {
      const fixture = await debianImage();
      const out = join(work, 'debian');
      const { report, stdout } = await optimize(fixture.python.ref, `oci:${out}:py`, {
        run: { entrypoint: ['python3', '-c'], args: ['print(1)'] },
        // The order is what is under test; a fast level keeps the test short on a shared machine.
        convert: { compressionLevel: 1 },
      });
      expect(stdout).toBe('1\n');
      const [base, python] = layerEntryNames(out, 'py');
      const prefetched = (names: string[]) =>
        names.slice(0, names.indexOf('.prefetch.landmark')).filter((n) => !n.endsWith('/'));
      const basePrefetch = prefetched(base!);
      const pythonPrefetch = prefetched(python!);
      expect(pythonPrefetch[0]).toBe('usr/bin/python3.11');
      expect(pythonPrefetch).toContain('etc/ld.so.cache');
      expect(pythonPrefetch.some((n) => n.startsWith('usr/lib/python3.11/encodings/'))).toBe(true);
      expect(basePrefetch).toEqual(
        expect.arrayContaining([
          'usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2',
          'usr/lib/x86_64-linux-gnu/libc.so.6',
          'usr/lib/x86_64-linux-gnu/libm.so.6',
        ]),
      );
      // runc's setup reads come after python's own files, last before the base layer's landmark.
      expect(report.profiled!.runtimeFiles).toEqual(['etc/passwd', 'etc/group']);
      expect(basePrefetch.slice(-2)).toEqual(['etc/passwd', 'etc/group']);
      // Nothing else is prefetched: everything before the landmark was traced.
      expect(basePrefetch.length + pythonPrefetch.length).toBe(report.profiled!.filesTraced);
      expect(base!.length).toBeGreaterThan(1000);
    },
    600_000,
  );

  it.skipIf(!debianImageCached())(
    'compressing while the workload runs writes the same bytes as compressing after it, reusing most members',
    async () => {
      const fixture = await debianImage();
      const out = join(work, 'debian-ahead');
      const options = (compressAhead: boolean): Partial<OptimizeImageOptions> => ({
        // One process reading files one after another: the same trace every run (python's reads
        // of its encodings vary in order from run to run).
        run: { entrypoint: ['/bin/cat'], args: ['/etc/debian_version', '/usr/lib/python3.11/os.py'] },
        convert: { compressionLevel: 1 },
        compressAhead,
      });
      const ahead = await optimize(fixture.python.ref, `oci:${out}:ahead`, options(true));
      const after = await optimize(fixture.python.ref, `oci:${out}:after`, options(false));
      expect(ahead.stdout).toMatch(/^12\.\d+\n/);
      expect(after.report.compressedAhead).toBeUndefined();
      expect(layoutRootDigest(out, 'ahead')).toBe(layoutRootDigest(out, 'after'));
      // Every member compresses once ahead; the conversion takes nearly all of them from the
      // spill file and compresses again only those the new order changes.
      const { reused, compressed, spilledBytes } = ahead.report.compressedAhead!;
      expect(reused).toBeGreaterThan(0.95 * compressed);
      expect(spilledBytes).toBeGreaterThan(0);
    },
    600_000,
  );
});

describe('esgz image optimize (CLI)', () => {
  const cli = join(process.cwd(), 'bin', 'run.js');
  const built = existsSync(join(process.cwd(), 'dist', 'commands', 'image', 'optimize.js'));

  it.skipIf(!built)('runs ctr-remote style flags end to end and prints the report', async () => {
    const out = join(work, 'cli');
    const result = await execa(
      'node',
      [
        cli,
        'image',
        'optimize',
        '--oci',
        '--entrypoint',
        '["/bin/sh","-c"]',
        '--args',
        '["cat /etc/hello; ls /bin"]',
        busyboxRef,
        `oci:${out}:cli`,
      ],
      { reject: false },
    );
    expect(result.stderr).toBe('');
    expect(result.exitCode).toBe(0);
    expect(result.stdout).toContain('hello from an esgz fixture');
    expect(result.stdout).toMatch(/files traced: 4 /);
    expect(result.stdout).toContain(
      "read by the runtime before the workload started (prioritized after the workload's files): etc/passwd, etc/group\n",
    );
    // The same summary as convert's and copy's ends the report.
    expect(result.stdout).toMatch(new RegExp(`\noptimized ${busyboxRef} -> oci:${out}:cli in [0-9.]+ m?s\n`));
    expect(result.stdout.trim().split('\n').pop()).toBe(`digest: ${layoutRootDigest(out, 'cli')}`);
  });

  it.skipIf(!built)(
    'prints one line and exits 1 for an entrypoint that does not exist, leaving nothing behind',
    async () => {
      const leftovers = () =>
        [tmpdir(), '/dev/shm']
          .filter((d) => existsSync(d))
          .flatMap((d) => readdirSync(d).filter((n) => n.startsWith('esgz-opt-')));
      const before = leftovers();
      const result = await execa(
        'node',
        [
          cli,
          'image',
          'optimize',
          '--oci',
          '--entrypoint',
          '["/bin/nope"]',
          busyboxRef,
          `oci:${join(work, 'cli-bad')}:x`,
        ],
        { reject: false },
      );
      expect(result.exitCode).toBe(1);
      expect(result.stderr.trim()).toBe(
        'esgz: entrypoint "/bin/nope" does not exist in the image or is not executable',
      );
      expect(leftovers()).toEqual(before);
      expect(readFileSync('/proc/self/mountinfo', 'utf8')).not.toContain('esgz-opt-');
    },
  );

  it.skipIf(!built)('--wait-on-signal: Ctrl-C ends the workload, then the image is converted', async () => {
    const out = join(work, 'cli-signal');
    const child = execa(
      'node',
      [
        cli,
        'image',
        'optimize',
        '--oci',
        '--wait-on-signal',
        '--entrypoint',
        '["/bin/sh","-c"]',
        '--args',
        '["cat /etc/hello; echo WAITING; sleep 600"]',
        busyboxRef,
        `oci:${out}:s`,
      ],
      { reject: false, detached: true },
    );
    await waitForOutput(child, 'WAITING');
    // As a terminal does: Ctrl-C goes to the whole foreground process group.
    process.kill(-child.pid!, 'SIGINT');
    const result = await child;
    expect(result.exitCode).toBe(0);
    expect(result.stdout).toMatch(/stopped \(signal\)/);
    expect(result.stdout).toMatch(/files traced: 4 /);
    expect(layerEntryNames(out, 's')[0]!.slice(0, BUSYBOX_PREFETCH.length)).toEqual(BUSYBOX_PREFETCH);
    expect(await listContainers()).toEqual([]);
  });

  it.skipIf(!built)(
    'Ctrl-C without --wait-on-signal stops everything: exit 130, nothing written, nothing left',
    async () => {
      const out = join(work, 'cli-int');
      const child = execa(
        'node',
        [
          cli,
          'image',
          'optimize',
          '--oci',
          '--entrypoint',
          '["/bin/sh","-c"]',
          '--args',
          '["echo WAITING; sleep 600"]',
          busyboxRef,
          `oci:${out}:i`,
        ],
        { reject: false, detached: true },
      );
      await waitForOutput(child, 'WAITING');
      process.kill(-child.pid!, 'SIGINT');
      const result = await child;
      expect(result.exitCode).toBe(130);
      expect(result.stderr.trim()).toBe('esgz: interrupted');
      expect(existsSync(join(out, 'index.json'))).toBe(false);
      expect(readFileSync('/proc/self/mountinfo', 'utf8')).not.toContain('esgz-opt-');
      expect(await listContainers()).toEqual([]);
    },
  );

  it.skipIf(!built)('rejects --zstdchunked without --oci like ctr-remote', async () => {
    const result = await execa(
      'node',
      [cli, 'image', 'optimize', '--zstdchunked', busyboxRef, `oci:${join(work, 'z')}:z`],
      { reject: false },
    );
    expect(result.exitCode).toBe(2);
    expect(result.stderr.trim()).toBe('esgz: option --zstdchunked must be used in conjunction with --oci');
  });
});

/** Resolves once the child's stdout shows `text`. */
function waitForOutput(child: ReturnType<typeof execa>, text: string): Promise<void> {
  return new Promise((resolve, reject) => {
    let seen = '';
    child.stdout!.on('data', (c: Buffer) => {
      seen += c.toString();
      if (seen.includes(text)) resolve();
    });
    child.once('exit', () => reject(new Error(`exited before printing ${text}: ${seen}`)));
  });
}
