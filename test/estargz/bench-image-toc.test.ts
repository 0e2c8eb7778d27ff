// The TOCs esgz writes for the bench images (test/fixtures/debian.ts: the Debian base layer and
// the python3 layer on it) against those stargz-snapshotter's ctr-remote 0.12 writes for the same
// tars: the same entries, owners with their names (userName/groupName), modes, times, links,
// digests and chunks, for eStargz and zstd:chunked. The fixture's tars carry numeric owners only
// (built with --numeric-owner, so they do not depend on the build host's users); here their
// headers get the names the image's own /etc/passwd and /etc/group give, as `docker build` writes
// them. Gated on containerd and on a Debian fixture that can be built (root, debootstrap).
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import tarStream from 'tar-stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { debianImage, type DebianFixture } from '../fixtures/debian.js';
import { containerdAvailable, startContainerd, type RunningContainerd } from '../harness/containerd.js';
import { ESTARGZ_SUITE_CODEC } from './helpers.js';
import { ZSTD_CHUNKED_SUITE_CODEC } from './zstdchunked/helpers.js';
import { convertWithCtrRemote, readTOC, tocStructure } from './reference.js';
import { longTests } from '../harness/long-tests.js';

const canBuildDebian = process.getuid?.() === 0 && existsSync('/usr/sbin/debootstrap');

describe.skipIf(!longTests || !containerdAvailable() || !canBuildDebian)(
  "bench images: esgz's TOCs are ctr-remote's",
  () => {
    let containerd: RunningContainerd;
    let debian: DebianFixture;
    let owners: OwnerNames;

    beforeAll(async () => {
      containerd = await startContainerd({ namespace: 'esgz-bench-toc' });
      debian = await debianImage();
      owners = {
        users: idNames(await readFile(join(debian.rootfs.python, 'etc/passwd'), 'utf8')),
        groups: idNames(await readFile(join(debian.rootfs.python, 'etc/group'), 'utf8')),
      };
    }, 1_800_000);
    afterAll(async () => {
      await containerd?.stop();
    });

    for (const codec of [ESTARGZ_SUITE_CODEC, ZSTD_CHUNKED_SUITE_CODEC]) {
      it(`${codec.name}: every layer of the Debian + python3 image`, { timeout: 900_000 }, async () => {
        for (const layer of debian.python.layers) {
          const tar = await withOwnerNames(await readFile(layer.tarPath), owners);
          const ref = await convertWithCtrRemote(containerd, tar, [codec.ctrRemoteFlag]);
          const ours = await codec.convert(tar, {});
          const refTOC = (await readTOC(ref.blob)).toc;
          const ourTOC = (await readTOC(ours.blob)).toc;
          expect(tocStructure(ourTOC)).toEqual(tocStructure(refTOC));
          // Owner names are written (once per owner, as stargz does), not just resolvable.
          expect(ourTOC.entries.some((e) => e.userName === 'root' && e.groupName === 'root')).toBe(true);
          expect(refTOC.entries.some((e) => e.userName === 'root' && e.groupName === 'root')).toBe(true);
        }
      });
    }
  },
);

interface OwnerNames {
  users: Map<number, string>;
  groups: Map<number, string>;
}

/** id -> name from /etc/passwd or /etc/group lines (`name:x:id:...`). */
function idNames(file: string): Map<number, string> {
  const names = new Map<number, string>();
  for (const line of file.split('\n')) {
    const [name, , id] = line.split(':');
    if (name && id !== undefined && /^\d+$/.test(id)) names.set(Number(id), name);
  }
  return names;
}

/** The same tar with uname/gname set from `owners` (tar-stream re-packs every entry as it came). */
async function withOwnerNames(tar: Buffer, owners: OwnerNames): Promise<Buffer> {
  const extract = tarStream.extract();
  const pack = tarStream.pack();
  extract.on('entry', (header, stream, next) => {
    header.uname = owners.users.get(header.uid ?? 0) ?? '';
    header.gname = owners.groups.get(header.gid ?? 0) ?? '';
    stream.pipe(pack.entry(header, next));
  });
  extract.on('finish', () => pack.finalize());
  const chunks: Buffer[] = [];
  pack.on('data', (chunk: unknown) => chunks.push(chunk as Buffer));
  const done = new Promise<void>((resolve, reject) => {
    pack.on('end', resolve);
    pack.on('error', reject);
    extract.on('error', reject);
  });
  extract.end(tar);
  await done;
  return Buffer.concat(chunks);
}
