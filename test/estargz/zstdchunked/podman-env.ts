// Debian's podman (4.3.1, containers/storage 1.43) in a private graph root with partial pulls
// enabled, for the zstd:chunked interoperability tests. Needs root (overlay graph driver).
import { existsSync } from 'node:fs';
import { readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { execa } from 'execa';
import { expect } from 'vitest';

export const PODMAN = '/usr/bin/podman';
export const podmanAvailable =
  existsSync(PODMAN) && existsSync('/usr/bin/skopeo') && existsSync('/bin/busybox') && process.getuid?.() === 0;

export interface PodmanEnv {
  work: string;
  podman(args: string[], options?: { reject?: boolean }): ReturnType<typeof execa>;
  /** Pulls with debug logging and checks every layer went through the partial-pull path. */
  pullPartially(reference: string, layerDigests: string[], logName: string): Promise<void>;
  /** Runs `command` in the image (no network, limits a sandbox can grant) and returns its stdout. */
  runIn(reference: string, command: string): Promise<string>;
  /** `podman import` of a tar, then `podman push --compression-format zstd:chunked` to `reference`. */
  pushZstdChunked(tarPath: string, reference: string): Promise<void>;
  close(): Promise<void>;
}

/** Unmounts whatever podman left mounted under `root` (deepest first). */
async function unmountUnder(root: string): Promise<void> {
  const mounts = (await readFile('/proc/self/mounts', 'utf8'))
    .split('\n')
    .map((l) => l.split(' ')[1]?.replace(/\\040/g, ' '))
    .filter((m): m is string => !!m && (m === root || m.startsWith(`${root}/`)))
    .sort((a, b) => b.length - a.length);
  for (const m of mounts) await execa('umount', ['-l', m], { reject: false });
}

export async function startPodman(work: string): Promise<PodmanEnv> {
  const graphroot = path.join(work, 'graph');
  const runroot = path.join(work, 'run');
  const storageConf = path.join(work, 'storage.conf');
  // containers/storage 1.43 reads pull_options from the default store options, which honour
  // CONTAINERS_STORAGE_CONF: the same private file podman uses.
  await writeFile(
    storageConf,
    [
      '[storage]',
      'driver = "overlay"',
      `graphroot = ${JSON.stringify(graphroot)}`,
      `runroot = ${JSON.stringify(runroot)}`,
      '[storage.options]',
      'pull_options = {enable_partial_images = "true", use_hard_links = "false", ostree_repos = ""}',
      '',
    ].join('\n'),
  );
  const env = { ...process.env, CONTAINERS_STORAGE_CONF: storageConf } as Record<string, string>;
  const globalArgs = [
    ...['--root', graphroot, '--runroot', runroot, '--storage-driver', 'overlay'],
    ...['--cgroup-manager', 'cgroupfs', '--events-backend', 'file', '--runtime', '/usr/sbin/runc'],
    ...['--tmpdir', path.join(work, 'libpod-tmp')],
  ];
  const podman = (args: string[], options: { reject?: boolean } = {}) =>
    execa(PODMAN, [...globalArgs, ...args], { env, reject: options.reject ?? true, all: true });

  return {
    work,
    podman,
    async pullPartially(reference, layerDigests, logName) {
      const pulled = await podman(['--log-level=debug', 'pull', '--tls-verify=false', reference]);
      const log = String(pulled.all ?? '');
      await writeFile(path.join(work, logName), log);
      // containers/image logs one of these per layer: the partial path worked, or why it did not.
      const failures = log.split('\n').filter((l) => l.includes('Failed to retrieve partial blob'));
      expect(failures, failures.join('\n')).toEqual([]);
      for (const digest of layerDigests) expect(log).toContain(`Retrieved partial blob ${digest}`);
    },
    async runIn(reference, command) {
      // podman's default nofile/nproc limits exceed what a sandbox may grant (runc EPERM).
      const ran = await podman([
        ...['run', '--rm', '--network', 'none', '--ulimit', 'nofile=1024:1024', '--ulimit', 'nproc=1024:1024'],
        ...[reference, '/bin/sh', '-c', command],
      ]);
      return String(ran.stdout);
    },
    async pushZstdChunked(tarPath, reference) {
      const local = `localhost/esgz-test/imported:${Date.now()}`;
      await podman(['import', '--quiet', tarPath, local]);
      // An imported tar has no compressed form yet, so the push compresses it with containers/storage's writer.
      await podman([
        ...['push', '--quiet', '--tls-verify=false', '--compression-format', 'zstd:chunked'],
        ...[local, `docker://${reference}`],
      ]);
    },
    async close() {
      await podman(['rm', '--all', '--force'], { reject: false });
      await podman(['rmi', '--all', '--force'], { reject: false });
      await unmountUnder(work);
      if (process.env.ESGZ_KEEP_PODMAN_DIR !== '1') await rm(work, { recursive: true, force: true });
    },
  };
}
