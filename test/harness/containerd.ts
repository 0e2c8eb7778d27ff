/**
 * A private containerd for reference comparisons (stargz-snapshotter's `ctr-remote` 0.12 needs a
 * containerd to convert images). Own root, state and socket under a temp dir, no CRI plugin, so
 * it never touches a system containerd. Used by test/estargz/reference.test.ts and reusable by
 * the benchmark: `const c = await startContainerd(); await c.ctrRemote([...]); await c.stop();`
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, openSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';

export interface RunningContainerd {
  /** Unix socket path (`ctr -a`). */
  address: string;
  /** Namespace the helpers use (`ctr -n`). */
  namespace: string;
  dir: string;
  logPath: string;
  /** Runs `ctr -a ADDRESS -n NAMESPACE ...args`, returns stdout. */
  ctr(args: string[]): Promise<string>;
  /** Runs `ctr-remote -a ADDRESS -n NAMESPACE ...args`, returns stdout. */
  ctrRemote(args: string[]): Promise<string>;
  stop(): Promise<void>;
}

/** Whether containerd, ctr and ctr-remote are installed and we are root (containerd needs it). */
export function containerdAvailable(): boolean {
  return (
    process.getuid?.() === 0 &&
    ['/usr/bin/containerd', '/usr/bin/ctr', '/usr/bin/ctr-remote'].every((p) => existsSync(p))
  );
}

export async function startContainerd(options: { namespace?: string } = {}): Promise<RunningContainerd> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'esgz-containerd-'));
  const address = path.join(dir, 'containerd.sock');
  const logPath = path.join(dir, 'containerd.log');
  const namespace = options.namespace ?? 'esgz';
  const config = [
    'version = 2',
    `root = ${JSON.stringify(path.join(dir, 'root'))}`,
    `state = ${JSON.stringify(path.join(dir, 'state'))}`,
    // Only what image import/convert/export need: no CRI, no exotic snapshotters.
    'disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]',
    '[grpc]',
    `  address = ${JSON.stringify(address)}`,
    '[ttrpc]',
    `  address = ${JSON.stringify(`${address}.ttrpc`)}`,
    '[debug]',
    '  address = ""',
    '[metrics]',
    '  address = ""',
    '',
  ].join('\n');
  const configPath = path.join(dir, 'config.toml');
  await writeFile(configPath, config);
  const log = openSync(logPath, 'a');
  const child: ChildProcess = spawn('/usr/bin/containerd', ['--config', configPath], { stdio: ['ignore', log, log] });
  let exited = false;
  child.on('exit', () => {
    exited = true;
  });

  const ctrBase = ['-a', address, '-n', namespace];
  const run = async (bin: string, args: string[]) => {
    const result = await execa(bin, [...ctrBase, ...args], { maxBuffer: 1 << 28, reject: false });
    if (result.exitCode !== 0)
      throw new Error(`${bin} ${args.join(' ')} failed (exit ${result.exitCode}): ${String(result.stderr).trim()}`);
    return String(result.stdout);
  };
  const stop = async () => {
    if (!exited) {
      child.kill('SIGTERM');
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          child.kill('SIGKILL');
          resolve();
        }, 10_000);
        child.once('exit', () => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    await rm(dir, { recursive: true, force: true }).catch(() => {});
  };

  const deadline = Date.now() + 30_000;
  for (;;) {
    if (exited) {
      const { readFile } = await import('node:fs/promises');
      const text = await readFile(logPath, 'utf8').catch(() => '');
      await stop();
      throw new Error(`containerd exited at start-up:\n${text.slice(-2000)}`);
    }
    if (existsSync(address)) {
      try {
        await execa('/usr/bin/ctr', ['-a', address, 'version'], { timeout: 5000 });
        break;
      } catch {
        /* not ready yet */
      }
    }
    if (Date.now() > deadline) {
      await stop();
      throw new Error('containerd did not come up within 30 s');
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    address,
    namespace,
    dir,
    logPath,
    ctr: (args) => run('/usr/bin/ctr', args),
    ctrRemote: (args) => run('/usr/bin/ctr-remote', args),
    stop,
  };
}
