import { readFileSync } from 'node:fs';
import type { ImageConfig } from '../../src/oci/types.js';
import type { LayerTar } from '../../src/rootfs/overlay.js';
import { buildTar, streamOf, type TestEntry } from './tar-helpers.js';

/** Applets the tests call; each is a symlink to the static /bin/busybox. */
const APPLETS = ['sh', 'cat', 'ls', 'echo', 'sleep', 'id', 'true', 'false', 'pwd', 'env'];

/**
 * A small busybox image generated from the host's static /bin/busybox: layer 0 has busybox and
 * /etc/passwd, /etc/group; layer 1 adds /etc/hello and whites out /etc/removed from layer 0.
 */
export async function busyboxLayers(extra: TestEntry[][] = []): Promise<LayerTar[]> {
  const busybox = readFileSync('/bin/busybox');
  const base: TestEntry[] = [
    { name: 'bin/', type: 'directory' },
    { name: 'bin/busybox', content: busybox, mode: 0o755 },
    ...APPLETS.map((a) => ({ name: `bin/${a}`, type: 'symlink' as const, linkname: 'busybox' })),
    { name: 'etc/', type: 'directory' },
    { name: 'etc/passwd', content: 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\nalice:x:1000:1000::/home/alice:/bin/sh\n' },
    { name: 'etc/group', content: 'root:x:0:\nnogroup:x:65534:\nalice:x:1000:\nstaff:x:50:alice\n' },
    { name: 'etc/removed', content: 'should be hidden by layer 1' },
    { name: 'tmp/', type: 'directory', mode: 0o1777 },
  ];
  const top: TestEntry[] = [{ name: 'etc/hello', content: 'hello from layer 1\n' }, { name: 'etc/.wh.removed' }];
  const tars = await Promise.all([base, top, ...extra].map((entries) => buildTar(entries)));
  return tars.map((tar, i) => ({ name: `layer ${i}`, open: async () => streamOf(tar) }));
}

export function busyboxConfig(overrides: Partial<NonNullable<ImageConfig['config']>> = {}): ImageConfig {
  return {
    architecture: 'amd64',
    os: 'linux',
    config: { Env: ['PATH=/bin'], Cmd: ['/bin/sh'], ...overrides },
    rootfs: { type: 'layers', diff_ids: [] },
  };
}
