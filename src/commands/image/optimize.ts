import { Args, Flags } from '@oclif/core';
import { BaseCommand } from '../../cli/base.js';
import {
  conversionFlags,
  conversionOptionsFromFlags,
  platformsFlags,
  conversionPlatformsFromFlags,
  prioritizedFromFlags,
  PRIVILEGED_WARNING,
  workloadRegistryFlags,
  runOptionsFromFlags,
  transportOptions,
  workloadFlags,
} from '../../cli/flags.js';
import { optimizeJson, optimizeText, writeJson, writeSummary } from '../../cli/output.js';
import { EsgzError } from '../../errors.js';
import { tocImageReference } from '../../convert/external-toc.js';
import { isRoot } from '../../host/native.js';
import { DEFAULT_PERIOD_SECONDS } from '../../optimizer/optimize.js';
import { optimizeImageReference, type OptimizeReferenceOptions } from '../../optimizer/optimize-reference.js';
import { DEFAULT_UPPER_SIZE_BYTES } from '../../rootfs/overlay.js';
import { parseByteSize } from '../../runtime/spec.js';

export default class ImageOptimize extends BaseCommand<typeof ImageOptimize> {
  static override description = `Run the image's workload under runc, trace the files it touches, and write eStargz (or zstd:chunked) with those files prefetched first

Like ctr-remote's optimize, without containerd: the layers are unpacked into overlayfs, the
workload runs with runc for --period seconds (or until it exits, --wait-on-line matches, or
Ctrl-C with --wait-on-signal), and fanotify records every file executed, opened or read. Each
layer is then converted with its accessed files before the .prefetch.landmark, in access order.
Needs root (runc, overlayfs, fanotify). Platforms this machine cannot run are converted without
optimization.`;

  static override examples = [
    {
      description: 'Optimize for a shell command, push to a local registry',
      command: `<%= config.bin %> image optimize --plain-http --oci --entrypoint '["/bin/sh","-c"]' --args '["cat /etc/hello; ls /bin"]' localhost:5000/busybox:latest localhost:5000/busybox:esgz`,
    },
    {
      description: 'Wait until a server says it is ready, keep the trace, write zstd:chunked',
      command: `<%= config.bin %> image optimize --oci --zstdchunked --wait-on-line "ready to accept connections" --record-out trace.json registry.example.com/app:1 registry.example.com/app:1-zstdchunked`,
    },
    {
      description: 'Profile the amd64 image on an amd64 machine, convert arm64 too (without optimization)',
      command: `<%= config.bin %> image optimize --oci --platform linux/amd64,linux/arm64 registry.example.com/app:1 registry.example.com/app:1-esgz`,
    },
    {
      description: 'Convert without running (same flags as convert), OCI layout to OCI layout',
      command: '<%= config.bin %> image optimize --no-optimize --oci oci:./in:latest oci:./out:latest',
    },
  ];

  static override args = {
    source: Args.string({
      description: 'Source image: REGISTRY/REPO[:TAG|@DIGEST], oci:DIR[:TAG], docker-archive:FILE[:TAG]',
      required: true,
    }),
    target: Args.string({ description: 'Destination image (same forms)', required: true }),
  };

  static override flags = {
    ...workloadRegistryFlags,
    ...platformsFlags,
    ...conversionFlags,
    'no-optimize': Flags.boolean({ description: 'Convert without running the workload', default: false }),
    'record-out': Flags.string({
      description: "Write the trace to FILE in ctr-remote's record format (readable by convert --estargz-record-in)",
    }),
    'temp-dir': Flags.string({
      description:
        'Directory for unpacked layers and spool files (default: $TMPDIR or /tmp; a tmpfs like /dev/shm is much faster if the image fits in memory)',
    }),
    // Workload (ctr-remote's sampler flags)
    ...workloadFlags,
    terminal: Flags.boolean({
      char: 't',
      description: 'Allocate a terminal for the workload (needs -i)',
      default: false,
    }),
    period: Flags.integer({
      description: 'Seconds to run the workload before stopping it',
      default: DEFAULT_PERIOD_SECONDS,
      min: 1,
    }),
    'wait-on-signal': Flags.boolean({
      description: 'Run until Ctrl-C instead of --period, then convert',
      default: false,
    }),
    'wait-on-line': Flags.string({ description: 'Stop the workload once a stdout line contains this string' }),
    args: Flags.string({ description: "Command arguments as a JSON array (overrides the image's Cmd)" }),
    entrypoint: Flags.string({ description: "Entrypoint as a JSON array (overrides the image's)" }),
    'dns-search-domains': Flags.string({ description: 'Comma-separated search domains for /etc/resolv.conf' }),
    'dns-options': Flags.string({ description: 'Comma-separated options for /etc/resolv.conf' }),
    'add-hosts': Flags.string({ description: 'Comma-separated host:IP entries for /etc/hosts' }),
    'upper-size': Flags.string({
      description: `Size of the tmpfs holding the workload's writes, e.g. 256m (default ${DEFAULT_UPPER_SIZE_BYTES / 1024 ** 3}g); beyond it writes fail with ENOSPC`,
    }),
    // ctr-remote flags esgz does not implement: accepted so scripts get a clear message.
    cni: Flags.boolean({ hidden: true, default: false }),
    'cni-plugin-conf-dir': Flags.string({ hidden: true }),
    'cni-plugin-dir': Flags.string({ hidden: true }),
    gpus: Flags.string({ hidden: true }),
  };

  async run(): Promise<void> {
    const { args } = await this.parse(ImageOptimize);
    const flags = this.flags;
    this.checkFlags();
    if (flags.privileged) this.warning(PRIVILEGED_WARNING);
    const format = flags.zstdchunked ? 'zstdchunked' : 'estargz';
    const convert = await conversionOptionsFromFlags(flags, format, this.environment, { warn: this.warning });
    // Reject impossible destinations before running anything.
    const tocTarget = flags['estargz-external-toc'] ? tocImageReference(args.target) : undefined;
    const options = {
      source: args.source,
      target: args.target,
      ...(tocTarget !== undefined ? { tocTarget } : {}),
      transport: transportOptions(flags),
      format,
      convert,
      ...conversionPlatformsFromFlags(flags, args.target),
      ...this.profileOptions(),
      prefetchList: await prioritizedFromFlags(flags, format),
      concurrency: flags.concurrency,
      oci: flags.oci,
      progress: this.progress,
      onWarning: this.warning,
    } satisfies Partial<OptimizeReferenceOptions>;
    // Ctrl-C: with --wait-on-signal the first one only ends the workload; otherwise, and on a
    // second one, everything stops and is torn down (containers, mounts, half-written output).
    const report = await this.interruptible(
      (signal, interrupts) =>
        optimizeImageReference({
          ...options,
          signal,
          runSignal: interrupts.workloadSignal,
          onStage: (stage) => {
            if (stage === 'convert') interrupts.workloadDone();
            if (stage === 'run' && flags['wait-on-signal']) {
              process.stderr.write('esgz: workload running; press Ctrl-C to stop it and convert\n');
            }
          },
        }),
      'interrupted',
      { firstStopsWorkload: flags['wait-on-signal'] },
    );
    if (flags.json) writeJson(optimizeJson(report, format));
    else writeSummary(optimizeText(report), { digest: report.transfer.root.digest, tocImage: report.tocImage });
  }

  /** ctr-remote's rules for optimize's own flags, and the ctr-remote flags esgz does not have. */
  private checkFlags(): void {
    const flags = this.flags;
    if (flags['no-optimize'] && flags['prefetch-list'])
      throw new EsgzError('BAD_FLAG', '--no-optimize and --prefetch-list cannot be used together');
    for (const name of ['cni', 'cni-plugin-conf-dir', 'cni-plugin-dir'] as const) {
      if (flags[name])
        throw new EsgzError(
          'UNSUPPORTED',
          `--${name} is not supported by esgz: the workload gets a private loopback-only network, or the host's with --net-host`,
        );
    }
    if (flags.gpus)
      throw new EsgzError('UNSUPPORTED', '--gpus is not supported by esgz: the workload gets no GPU devices');
    if (flags['no-optimize'] && flags['record-out'])
      throw new EsgzError('BAD_FLAG', '--record-out needs the workload to run: drop --no-optimize');
    if (flags.zstdchunked && !flags.oci)
      throw new EsgzError('BAD_FLAG', 'option --zstdchunked must be used in conjunction with --oci');
    if (flags['wait-on-signal'] && flags.terminal)
      throw new EsgzError('BAD_FLAG', '--wait-on-signal cannot be used with --terminal');
    if (flags.terminal && !flags.interactive) throw new EsgzError('BAD_FLAG', '--terminal must be used with -i');
    if (!flags['no-optimize'] && !isRoot()) {
      const why = 'running the workload needs root (runc with overlayfs and fanotify)';
      throw new EsgzError('RUNTIME', `${why}: run esgz as root or use --no-optimize`);
    }
  }

  /** How the workload runs and where its profile goes, from the workload flags and the environment. */
  private profileOptions() {
    const flags = this.flags;
    const run = runOptionsFromFlags(flags, flags.terminal);
    if (flags['upper-size'] !== undefined) run.upperSizeBytes = parseByteSize('upper-size', flags['upper-size']);
    const { runc, fanotifyBinary, tmpfs } = this.environment;
    return {
      run,
      noOptimize: flags['no-optimize'],
      recordOut: flags['record-out'],
      ...(flags['temp-dir'] ? { tempDir: flags['temp-dir'] } : {}),
      periodSeconds: flags.period,
      waitOnLine: flags['wait-on-line'],
      waitOnSignal: flags['wait-on-signal'],
      stdin: flags.interactive,
      // With --json, stdout carries only the report: the workload writes to stderr.
      workloadStdout: flags.json ? process.stderr : process.stdout,
      workloadStderr: process.stderr,
      host: {
        runc,
        ...(fanotifyBinary !== undefined ? { tracerBinary: fanotifyBinary } : {}),
        ...(tmpfs !== undefined ? { tmpfs } : {}),
      },
    };
  }
}
