// Issue #12: hostile layers through the layer unpacker, end to end through the built CLI
// (npm run build first): `image optimize` (unpacks every layer to run the workload) and
// `image rpull` + `run` (unpacks layers that are not eStargz). Each attack aims at a decoy
// directory this test creates, never at a real host path, and each run must leave the decoy
// as it was, end in a correct result or one clean line of error, and stay under 512 MiB and 30 s.
import { existsSync, mkdirSync, readFileSync, readdirSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { gunzipSync } from 'node:zlib';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { readTar } from '../../src/estargz/tar.js';
import { esgz, esgzMeasured, expectBounded, expectOneLineError, repoRoot, type MeasuredRun } from '../harness/cli.js';
import { registryAddress } from '../harness/registry.js';
import { busyboxRootfs, writeOciImage } from '../fixtures/oci-image.js';
import { layoutTags, readLayoutBlob, readOciLayout } from '../fixtures/oci-layout.js';
import { buildTar, type TarEntry } from '../fixtures/tar.js';
import {
  BINARY_USER_XATTR,
  CAP_SETUID_XATTR,
  decoyState,
  makeDecoy,
  binaryAndOverlayXattrs,
  climbingSymlink,
  dotDotTraversal,
  dotWhiteouts,
  hardlinkOut,
  manyWhiteouts,
  replacedDirectoryUnderSymlink,
  staleDirectoryMetadata,
  writeThroughSymlink,
} from '../fixtures/hostile-unpack.js';

let scratch: string;
let decoy: string;
let decoyBefore: string;

beforeAll(async () => {
  if (!existsSync(join(repoRoot, 'dist/commands/image/optimize.js')))
    throw new Error('dist/ is missing: run `npm run build` first');
  scratch = await mkdtemp(join(tmpdir(), 'esgz-sec-unpack-'));
});
let decoys = 0;
// A fresh decoy per test: one test's damage must not show up as another's.
beforeEach(() => {
  decoy = join(scratch, `decoy-${decoys++}`);
  decoyBefore = makeDecoy(decoy);
});
afterAll(async () => {
  if (scratch) await rm(scratch, { recursive: true, force: true });
});

/** Mode, owner, mtime, link count and contents of the decoy and what is in it. */

/** No mount left under the scratch directory (optimize's overlay, rpull's FUSE, run's rootfs). */
function expectNoMounts(): void {
  expect(
    readFileSync('/proc/self/mounts', 'utf8')
      .split('\n')
      .filter((line) => line.includes(scratch)),
  ).toEqual([]);
}

let images = 0;
/** Busybox, then the hostile layer: an OCI layout of its own. */
async function hostileImage(layer: TarEntry[] | Buffer): Promise<string> {
  const layout = join(scratch, `src-${images++}`);
  await writeOciImage(layout, { tag: 'hostile', layers: [busyboxRootfs(), layer], config: { Cmd: ['/bin/sh'] } });
  return `oci:${layout}:hostile`;
}

/**
 * `esgz image optimize` of the image into a fresh layout, with its temp files under the scratch
 * dir (so the test sees what is left), or where esgz picks (`tmpfs: true`: /dev/shm when it fits).
 */
async function optimize(
  source: string,
  options: { tmpfs?: boolean } = {},
): Promise<{ run: MeasuredRun; out: string; temp: string }> {
  const out = join(scratch, `out-${images}`);
  const temp = join(scratch, `tmp-${images}`);
  mkdirSync(temp);
  const tempDir = options.tmpfs ? [] : ['--temp-dir', temp];
  const run = await esgzMeasured(
    'image',
    'optimize',
    '--oci',
    ...tempDir,
    '--period',
    '5',
    '--entrypoint',
    '["/bin/sh","-c"]',
    '--args',
    '["cat /etc/hello; ls /"]',
    source,
    `oci:${out}:opt`,
  );
  return { run, out, temp };
}

function expectTagged(out: string, tagged: boolean): void {
  expect(layoutTags(out)).toEqual(tagged ? ['opt'] : []);
}

/** The PAX records of each entry of the image's last layer (an OCI layout `out`, tag `opt`). */
async function lastLayerPax(out: string): Promise<Map<string, Map<string, Buffer>>> {
  const tar = gunzipSync(readLayoutBlob(out, readOciLayout(out).manifests[0]!.layers.at(-1)!.digest));
  const records = new Map<string, Map<string, Buffer>>();
  for await (const entry of readTar(Readable.from([tar]), 'output layer'))
    records.set(entry.header.name, entry.header.pax);
  return records;
}

describe('image optimize: hostile layers (issue #12, unpack)', () => {
  const succeeding: Array<[string, (decoy: string) => TarEntry[]]> = [
    ['a directory mode/mtime applied through a symlink planted after it (item 1)', staleDirectoryMetadata],
    ['a file written through an absolute symlink to the decoy', writeThroughSymlink],
    ['a directory and file through a symlink climbing above the root', climbingSymlink],
    ['a directory a symlink pointed through, replaced by a symlink to the decoy', replacedDirectoryUnderSymlink],
  ];
  for (const [label, layer] of succeeding) {
    it(`contains ${label}: correct result, decoy untouched`, async () => {
      const { run, out, temp } = await optimize(await hostileImage(layer(decoy)));
      expect(run.exitCode, run.stderr).toBe(0);
      expect(decoyState(decoy)).toBe(decoyBefore);
      expectTagged(out, true);
      expectBounded(run);
      expect(readdirSync(temp)).toEqual([]);
      expectNoMounts();
    });
  }

  const refused: Array<[string, (decoy: string) => TarEntry[], RegExp]> = [
    ['.. traversal', dotDotTraversal, /entry "(\.\.\/)+.*\/evil" escapes the root/],
    ['a hardlink out of the root', hardlinkOut, /hardlink "shadow" to ".*" escapes the root/],
    ['a whiteout of ..', () => dotWhiteouts()[1]!, /whiteout "\/\.wh\.\.\." names no file/],
  ];
  for (const [label, layer, message] of refused) {
    it(`refuses ${label} with one line, nothing tagged, decoy untouched`, async () => {
      const { run, out, temp } = await optimize(await hostileImage(layer(decoy)));
      expectOneLineError(run, 'nonzero', message);
      expect(decoyState(decoy)).toBe(decoyBefore);
      expectTagged(out, false);
      expectBounded(run);
      expect(readdirSync(temp)).toEqual([]);
      expectNoMounts();
    });
  }

  it('keeps binary xattrs (security.capability with byte 0x80) exact and drops forged trusted.overlay.* (item 8)', async () => {
    const { run, out } = await optimize(await hostileImage(binaryAndOverlayXattrs()));
    expect(run.exitCode, run.stderr).toBe(0);
    expectBounded(run);
    const pax = await lastLayerPax(out);
    expect(pax.get('bin/ping')?.get('SCHILY.xattr.security.capability')?.toString('hex')).toBe(
      CAP_SETUID_XATTR.toString('hex'),
    );
    expect(pax.get('bin/ping')?.get('SCHILY.xattr.user.bin')?.toString('hex')).toBe(BINARY_USER_XATTR.toString('hex'));
    expect(run.stderr).toMatch(
      /skipped extended attribute trusted\.overlay\.opaque on "forged\/" \(overlayfs metadata cannot come from a layer\)/,
    );
  });

  it('unpacks a layer of 100k whiteouts over 5k directories (item 7)', async () => {
    const layer = await buildTar(manyWhiteouts(100_000, 5_000));
    // On tmpfs as optimize picks by default: on the shared test machine's disk, 100k device
    // nodes cost more in journal waits than in esgz.
    const { run, out } = await optimize(await hostileImage(layer), { tmpfs: true });
    expect(run.exitCode, run.stderr).toBe(0);
    expectTagged(out, true);
    expectBounded(run);
  });
});

describe('image rpull + run: hostile plain-gzip layers (issue #12, unpack)', () => {
  let state: string;
  beforeAll(() => {
    state = join(scratch, 'state');
  });

  async function push(layer: TarEntry[], name: string): Promise<string> {
    const ref = `${registryAddress()}/sec-unpack/${name}:v1`;
    const copied = await esgz('image', 'copy', '--plain-http', await hostileImage(layer), ref);
    expect(copied.exitCode, copied.stderr).toBe(0);
    return ref;
  }

  it('pulls a layer whose directory metadata would go through a later symlink: decoy untouched, container sees the symlink', async () => {
    const ref = await push([...staleDirectoryMetadata(decoy), ...binaryAndOverlayXattrs()], 'stale');
    const pulled = await esgzMeasured('image', 'rpull', '--plain-http', '--root', state, ref);
    expect(pulled.exitCode, pulled.stderr).toBe(0);
    expectBounded(pulled);
    expect(decoyState(decoy)).toBe(decoyBefore);
    const ran = await esgz('run', '--rm', '--root', state, ref, 'c1', 'sh', '-c', 'readlink /a; ls /forged');
    expect(ran.exitCode, ran.stderr).toBe(0);
    expect(ran.stdout.trim().split('\n')).toEqual([decoy, 'file']);
    expect(decoyState(decoy)).toBe(decoyBefore);
    expectNoMounts();
  });

  it('refuses a layer with .. traversal in one line and keeps nothing of it', async () => {
    const ref = await push(dotDotTraversal(decoy), 'traversal');
    // --json: no progress lines, so stderr is the error alone.
    const pulled = await esgzMeasured('image', 'rpull', '--plain-http', '--json', '--root', state, ref);
    expectOneLineError(
      pulled,
      'nonzero',
      /layer 1 \(sha256:[0-9a-f]{64}\): entry "(\.\.\/)+.*\/evil" escapes the root/,
    );
    expectBounded(pulled);
    expect(decoyState(decoy)).toBe(decoyBefore);
    // The half-unpacked layer directory is gone.
    expect(readdirSync(state, { recursive: true }).filter((p) => String(p).includes('.tmp-'))).toEqual([]);
    expectOneLineError(await esgz('run', '--rm', '--root', state, ref, 'c2', 'true'), 'nonzero', /is not pulled/);
    expectNoMounts();
  });
});
