import { join } from 'node:path';
import type { Writable } from 'node:stream';
import { makeTempDir, removeTempDir } from '../tmp.js';
import { EsgzError } from '../errors.js';
import { formatPlatform, hostPlatform, platformMatches } from '../oci/platform.js';
import type { ImageConfig } from '../oci/types.js';
import { findRunc, runBundle, type StopReason } from '../runtime/runc.js';
import { buildRuntimeSpec, checkExecutable, writeBundleConfig, type RunOptions } from '../runtime/spec.js';
import { prepareRootfs, type LayerTar, type PreparedRootfs } from '../rootfs/overlay.js';
import type { RecordEntry } from './record.js';
import { startTracer, toImagePath, type AccessKind, type TraceEvent, type Tracer } from './tracer.js';

/** How long the workload runs unless something else stops it first (ctr-remote's default). */
export const DEFAULT_PERIOD_SECONDS = 10;

export interface ProfileWorkloadOptions {
  /** Decompressed layer tars, base first. */
  layers: LayerTar[];
  config: ImageConfig;
  /** Entrypoint/args/env/user/mount/DNS/network overrides (ctr-remote's sampler flags). */
  run: RunOptions;
  /** Seconds to let the workload run (default DEFAULT_PERIOD_SECONDS). */
  periodSeconds?: number;
  waitOnLine?: string;
  waitOnSignal?: boolean;
  /** `-i`: attach stdin. */
  stdin?: boolean;
  /** Aborting (Ctrl-C) stops the workload and tears everything down. */
  signal?: AbortSignal;
  stdout?: Writable;
  stderr?: Writable;
  /** Parent of the temporary directory (default: the OS temp dir). */
  tempRoot?: string;
  /** The runc binary (default: runc on PATH). */
  runc?: string;
  /** The fanotify tracer helper (default: the one built in native/fanotify/). */
  tracerBinary?: string;
  rootfsMode?: 'auto' | 'overlay' | 'merged';
  onWarning?(message: string): void;
  /**
   * Receives the removal of the unpacked layers (after unmounting) instead of awaiting it, so it
   * can overlap the conversion; the caller must await it before finishing.
   */
  backgroundCleanup?(removal: Promise<void>): void;
  /** Told the runc container id once the workload starts (for logs and leak checks). */
  onContainer?(id: string): void;
  /** Progress stages: 'unpack', 'run', 'trace'. */
  onStage?(stage: string): void;
}

/**
 * Who read a file: the workload (from its first exec on), or the container runtime while it set
 * the container up before that exec (runc reads the image's /etc/passwd and /etc/group).
 */
export type AccessOrigin = 'workload' | 'runtime';

export interface AccessedFile {
  /** Image path, e.g. `bin/busybox`. */
  path: string;
  /** Index of the topmost layer providing the file. */
  layerIndex: number;
  kind: AccessKind;
  /**
   * `runtime`: read only by the runtime before the workload's first exec. Such files come after
   * the workload's own files (a file the workload also opened keeps its workload position).
   */
  origin: AccessOrigin;
  /** Size of the file in bytes. */
  size: number;
}

export interface ProfileResult {
  /**
   * Image paths in prioritized order: the workload's files in first-access order, then the
   * runtime's setup reads that the workload did not touch itself, in the order the runtime read them.
   */
  accessed: string[];
  /** The same files with their providing layer, first access kind and origin. */
  files: AccessedFile[];
  /** Per layer index, the accessed files it provides, in prioritized order (the prioritized-files list of each layer). */
  perLayer: string[][];
  /** How many of `files` are runtime setup reads (`origin: 'runtime'`, at the end of the list). */
  runtimeFiles: number;
  /** Paths the workload touched that no layer provides (written at run time): not prioritized. */
  notInImage: number;
  exitCode: number | undefined;
  stopReason: StopReason;
  durationMs: number;
  rootfsMode: 'overlay' | 'merged';
  /** The runtime command line that ran. */
  args: string[];
}

/** Throws UNSUPPORTED unless the image's config says it can run on this machine. */
export function checkRunnablePlatform(config: ImageConfig): void {
  const host = hostPlatform();
  const image = {
    os: config.os ?? host.os,
    architecture: config.architecture ?? host.architecture,
    ...(config.variant ? { variant: config.variant } : {}),
  };
  if (!platformMatches(host, image)) {
    throw new EsgzError(
      'UNSUPPORTED',
      `the image is for ${formatPlatform(image)} but this machine is ${formatPlatform(host)}: it cannot be run to profile it`,
    );
  }
}

/**
 * Runs the image's workload under runc and records which files it opens, executes and reads:
 * unpack each layer, stack them (overlayfs, or a merged copy), build the runtime spec, start the
 * fanotify tracer, run until the workload exits / the period ends / the line shows / Ctrl-C,
 * then tear everything down (container, tracer, mounts, temporary files) whatever happened.
 */
export async function profileWorkload(options: ProfileWorkloadOptions): Promise<ProfileResult> {
  checkRunnablePlatform(options.config);
  const runc = await findRunc(options.runc);
  if (options.waitOnSignal && options.run.terminal) {
    throw new EsgzError(
      'BAD_FLAG',
      'a workload with a terminal cannot wait for a signal: its terminal receives Ctrl-C',
    );
  }
  if (options.run.terminal && !options.stdin)
    throw new EsgzError('BAD_FLAG', 'a workload with a terminal needs stdin attached');

  const workDir = await makeTempDir('opt', options.tempRoot, { runc });
  let rootfs: PreparedRootfs | undefined;
  let tracer: Tracer | undefined;
  try {
    options.onStage?.('unpack');
    rootfs = await prepareRootfs({
      workDir: join(workDir, 'r'),
      layers: options.layers,
      mode: options.rootfsMode,
      signal: options.signal,
      onWarning: options.onWarning,
      upperSizeBytes: options.run.upperSizeBytes,
    });
    const bundle = join(workDir, 'b');
    const spec = await buildRuntimeSpec({
      rootfs: rootfs.rootfs,
      config: options.config,
      options: options.run,
      bundleDir: bundle,
    });
    await checkExecutable(rootfs.rootfs, spec);
    await writeBundleConfig(bundle, spec);
    if (options.signal?.aborted) throw new EsgzError('INTERRUPTED', 'interrupted');

    const tracerOptions = { onlyOtherPidNamespaces: rootfs.mode === 'merged', binary: options.tracerBinary };
    tracer = await startTracer(rootfs.rootfs, tracerOptions);
    options.onStage?.('run');
    const run = await runBundle({
      bundle,
      runc,
      stateRoot: join(workDir, 's'),
      periodSeconds: options.periodSeconds ?? DEFAULT_PERIOD_SECONDS,
      waitOnLine: options.waitOnLine,
      waitOnSignal: options.waitOnSignal,
      signal: options.signal,
      stdout: options.stdout,
      stderr: options.stderr,
      stdin: options.stdin,
      terminal: options.run.terminal,
      onStart: options.onContainer,
    });
    options.onStage?.('trace');
    const events = await tracer.stop();
    for (const warning of tracer.warnings()) options.onWarning?.(`file access tracer: ${warning}`);
    tracer = undefined;

    const files: AccessedFile[] = [];
    const seen = new Set<string>();
    let notInImage = 0;
    const add = (event: TraceEvent, origin: AccessOrigin) => {
      const path = toImagePath(event.reported, rootfs!.rootfs);
      if (!path || seen.has(path)) return;
      seen.add(path);
      const layerIndex = rootfs!.provenance.layerOf(path);
      if (layerIndex === undefined) {
        // Files the workload created; the runtime's own (mount points, its bind-mounted files) are not counted.
        if (origin === 'workload') notInImage++;
        return;
      }
      files.push({ path, layerIndex, kind: event.kind, origin, size: rootfs!.provenance.sizeOf(path) });
    };
    // Everything before the first exec is runc setting up the container: it reads the image's
    // /etc/passwd and /etc/group inside the container. Every start of the image does the same,
    // so those files are prioritized too, but after the workload's own files (whose access order
    // stays first and intact); a file the workload opens as well keeps its workload position.
    const firstExec = events.findIndex((e) => e.kind === 'exec');
    const setupEvents = firstExec < 0 ? events : events.slice(0, firstExec);
    const workloadEvents = firstExec < 0 ? [] : events.slice(firstExec);
    for (const event of workloadEvents) add(event, 'workload');
    for (const event of setupEvents) add(event, 'runtime');
    const perLayer: string[][] = options.layers.map(() => []);
    for (const f of files) perLayer[f.layerIndex]!.push(f.path);
    if (run.reason === 'exited' && run.exitCode !== 0) {
      options.onWarning?.(
        `the workload exited with code ${run.exitCode} after ${(run.durationMs / 1000).toFixed(1)} s; the trace covers what it did until then`,
      );
    }
    return {
      accessed: files.map((f) => f.path),
      files,
      perLayer,
      runtimeFiles: files.filter((f) => f.origin === 'runtime').length,
      notInImage,
      exitCode: run.exitCode,
      stopReason: run.reason,
      durationMs: run.durationMs,
      rootfsMode: rootfs.mode,
      args: spec.process.args,
    };
  } finally {
    await tracer?.stop().catch(() => undefined);
    // Unmounting must finish here (a failure is reported and nothing under the mount is
    // deleted); removing the unpacked files can overlap the caller's next step.
    await rootfs?.unmountOnly();
    const removal = (async () => {
      await rootfs?.release();
      await removeTempDir(workDir);
    })();
    // Marked handled now: the caller awaits it later, and a rejection must not crash the process meanwhile.
    removal.catch(() => undefined);
    if (options.backgroundCleanup) options.backgroundCleanup(removal);
    else await removal;
  }
}

/**
 * Record-file entries (ctr-remote's format) for a profile of the platform manifest `manifestDigest`,
 * in prioritized order (the workload's files, then the runtime's setup reads).
 */
export function recordEntriesOf(result: ProfileResult, manifestDigest?: string): RecordEntry[] {
  return result.files.map((f) => ({
    path: f.path,
    ...(manifestDigest ? { manifestDigest } : {}),
    layerIndex: f.layerIndex,
  }));
}
