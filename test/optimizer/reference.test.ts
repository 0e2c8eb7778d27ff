import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openSink, openSource } from '../../src/image/transports/index.js';
import { optimizeImage } from '../../src/optimizer/optimize-image.js';
import { containerdAvailable, startContainerd, type RunningContainerd } from '../harness/containerd.js';
import { convertWithCtrRemote } from '../estargz/reference.js';
import { readLayoutBlob, readOciLayout } from '../fixtures/oci-layout.js';
import { busyboxRootfs, writeOciImage } from '../fixtures/oci-image.js';
import { buildTar } from '../fixtures/tar.js';

/**
 * ctr-remote 0.12 as the oracle for the record format: `convert --estargz-record-in` must read the
 * record esgz writes with `optimize --record-out` and put the same files before the landmark.
 */
describe.skipIf(!containerdAvailable())('record files against ctr-remote', () => {
  let containerd: RunningContainerd;
  let work: string;
  beforeAll(async () => {
    containerd = await startContainerd();
    work = mkdtempSync(join(tmpdir(), 'esgz-optref-'));
  });
  afterAll(async () => {
    await containerd?.stop();
    rmSync(work, { recursive: true, force: true });
  });

  function names(blob: Buffer): string[] {
    const file = join(work, `blob-${Math.random().toString(16).slice(2)}`);
    writeFileSync(file, blob);
    return execFileSync('tar', ['-tzf', file], { encoding: 'utf8' }).trim().split('\n');
  }
  const prefetched = (list: string[]) =>
    list.slice(0, list.indexOf('.prefetch.landmark')).map((n) => n.replace(/\/$/, ''));

  it('ctr-remote convert --estargz-record-in reads our record and prefetches the same files in the same order', async () => {
    const entries = busyboxRootfs();
    const layout = join(work, 'src');
    await writeOciImage(layout, { tag: 'latest', layers: [entries], config: { Cmd: ['/bin/sh'] } });
    const record = join(work, 'record.json');
    const out = join(work, 'out');
    const source = await openSource(`oci:${layout}:latest`);
    try {
      await optimizeImage({
        source,
        sink: await openSink(`oci:${out}:opt`),
        format: 'estargz',
        convert: {},
        oci: true,
        recordOut: record,
        run: { entrypoint: ['/bin/sh', '-c'], args: ['cat /etc/passwd; cat /etc/hello; ls /bin'] },
        workloadStdout: new PassThrough(),
        workloadStderr: new PassThrough(),
      });
    } finally {
      await source.close();
    }
    const ours = names(readLayoutBlob(out, readOciLayout(out).manifests[0]!.layers[0]!.digest));

    const theirs = names(
      (await convertWithCtrRemote(containerd, await buildTar(entries), ['--estargz', '--estargz-record-in', record]))
        .blob,
    );
    // The workload reads etc/passwd itself (it keeps that position); etc/group only runc read, before the exec: last.
    expect(prefetched(ours).filter((n) => n !== 'bin' && n !== 'etc')).toEqual([
      'bin/busybox',
      'etc/passwd',
      'etc/hello',
      'etc/group',
    ]);
    expect(prefetched(ours)).toEqual(prefetched(theirs));
  });
});
