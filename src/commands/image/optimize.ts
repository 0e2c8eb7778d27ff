import { Args, Flags } from '@oclif/core';
import { BaseCommand } from '../../cli/base.js';
import { conversionFlags, conversionOptionsFromFlags, platformsFlags, platformsFromFlags, prioritizedFromFlags, workloadRegistryFlags, runOptionsFromFlags, transportOptions, userFlag, workloadFlags } from '../../cli/flags.js';
import { writeJson } from '../../cli/output.js';
import { formatBytes, ProgressBars } from '../../cli/progress.js';
import { EsgzError } from '../../errors.js';
import { tocImageReference } from '../../convert/transform.js';
import { openSink, openSource, parseTransportReference } from '../../image/transports/index.js';
import { optimizeImage, type OptimizeReport } from '../../optimizer/optimize-image.js';
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
    source: Args.string({ description: 'Source image: REGISTRY/REPO[:TAG|@DIGEST], oci:DIR[:TAG], docker-archive:FILE[:TAG]', required: true }),
    target: Args.string({ description: 'Destination image (same forms)', required: true }),
  };

  static override flags = {
    ...workloadRegistryFlags,
    ...platformsFlags,
    ...conversionFlags,
    'no-optimize': Flags.boolean({ description: 'Convert without running the workload', default: false }),
    'record-out': Flags.string({ description: 'Write the trace to FILE in ctr-remote\'s record format (readable by convert --estargz-record-in)' }),
    'temp-dir': Flags.string({ description: 'Directory for unpacked layers and spool files (default: $TMPDIR or /tmp; a tmpfs like /dev/shm is much faster if the image fits in memory)' }),
    // Workload (ctr-remote's sampler flags)
    ...workloadFlags,
    terminal: Flags.boolean({ char: 't', description: 'Allocate a terminal for the workload (needs -i)', default: false }),
    i: Flags.boolean({ char: 'i', description: 'Attach stdin to the workload', default: false }),
    period: Flags.integer({ description: 'Seconds to run the workload before stopping it', default: 10, min: 1 }),
    'wait-on-signal': Flags.boolean({ description: 'Run until Ctrl-C instead of --period, then convert', default: false }),
    'wait-on-line': Flags.string({ description: 'Stop the workload once a stdout line contains this string' }),
    user: userFlag(),
    args: Flags.string({ description: 'Command arguments as a JSON array (overrides the image\'s Cmd)' }),
    entrypoint: Flags.string({ description: 'Entrypoint as a JSON array (overrides the image\'s)' }),
    'dns-search-domains': Flags.string({ description: 'Comma-separated search domains for /etc/resolv.conf' }),
    'dns-options': Flags.string({ description: 'Comma-separated options for /etc/resolv.conf' }),
    'add-hosts': Flags.string({ description: 'Comma-separated host:IP entries for /etc/hosts' }),
    'upper-size': Flags.string({ description: `Size of the tmpfs holding the workload's writes, e.g. 256m (default ${DEFAULT_UPPER_SIZE_BYTES / 1024 ** 3}g); beyond it writes fail with ENOSPC` }),
    // ctr-remote flags esgz does not implement: accepted so scripts get a clear message.
    cni: Flags.boolean({ hidden: true, default: false }),
    'cni-plugin-conf-dir': Flags.string({ hidden: true }),
    'cni-plugin-dir': Flags.string({ hidden: true }),
    gpus: Flags.string({ hidden: true }),
  };

  async run(): Promise<void> {
    const { args } = await this.parse(ImageOptimize);
    const flags = this.flags;
    if (flags['no-optimize'] && flags['prefetch-list']) throw new EsgzError('BAD_FLAG', '--no-optimize and --prefetch-list cannot be used together');
    for (const name of ['cni', 'cni-plugin-conf-dir', 'cni-plugin-dir'] as const) {
      if (flags[name]) throw new EsgzError('UNSUPPORTED', `--${name} is not supported by esgz: the workload gets a private loopback-only network, or the host's with --net-host`);
    }
    if (flags.gpus) throw new EsgzError('UNSUPPORTED', '--gpus is not supported by esgz: the workload gets no GPU devices');
    if (flags['no-optimize'] && flags['record-out']) throw new EsgzError('BAD_FLAG', '--record-out needs the workload to run: drop --no-optimize');
    if (flags.zstdchunked && !flags.oci) throw new EsgzError('BAD_FLAG', 'option --zstdchunked must be used in conjunction with --oci');
    if (flags['wait-on-signal'] && flags.terminal) throw new EsgzError('BAD_FLAG', '--wait-on-signal cannot be used with --terminal');
    if (flags.terminal && !flags.i) throw new EsgzError('BAD_FLAG', '--terminal must be used with -i');
    const format = flags.zstdchunked ? 'zstdchunked' : 'estargz';
    const progress = new ProgressBars();
    const warn = (message: string): void => {
      progress.stop();
      process.stderr.write(`esgz: warning: ${message}\n`);
    };
    const convert = await conversionOptionsFromFlags(flags, format, { warn });
    if (flags['estargz-external-toc']) tocImageReference(args.target); // reject impossible destinations before running anything
    const platformChoice = platformsFromFlags(flags);
    const run = runOptionsFromFlags(flags, flags.terminal);
    if (flags['upper-size'] !== undefined) run.upperSizeBytes = parseByteSize('upper-size', flags['upper-size']);
    const prefetchList = await prioritizedFromFlags(flags, format);

    // Ctrl-C: with --wait-on-signal the first one only ends the workload; otherwise, and on a
    // second one, everything stops and is torn down (containers, mounts, half-written output).
    const runAbort = new AbortController();
    const allAbort = new AbortController();
    let interrupts = 0;
    const onSigint = () => {
      interrupts++;
      runAbort.abort();
      if (!flags['wait-on-signal'] || interrupts > 1 || runFinished) allAbort.abort();
    };
    let runFinished = false;
    process.on('SIGINT', onSigint);
    process.on('SIGTERM', onSigint);

    const transport = transportOptions(flags);
    const source = await openSource(args.source, transport);
    let report: OptimizeReport;
    try {
      const sink = await openSink(args.target, transport);
      const log = flags.json ? process.stderr : process.stdout;
      report = await optimizeImage({
        source,
        sink,
        format,
        convert,
        concurrency: flags.concurrency,
        progress,
        ...platformChoice,
        oci: flags.oci,
        noOptimize: flags['no-optimize'],
        cacheBlobs: parseTransportReference(args.source).transport === 'registry',
        ...(flags['temp-dir'] ? { tempDir: flags['temp-dir'] } : {}),
        prefetchList,
        recordOut: flags['record-out'],
        run,
        periodSeconds: flags.period,
        waitOnLine: flags['wait-on-line'],
        waitOnSignal: flags['wait-on-signal'],
        stdin: flags.i,
        runSignal: runAbort.signal,
        signal: allAbort.signal,
        // With --json, stdout carries only the report: the workload writes to stderr.
        workloadStdout: log,
        workloadStderr: process.stderr,
        reopenTarget: () => openSource(args.target, transport),
        openTocSink: async () => {
          const reference = tocImageReference(args.target);
          return { sink: await openSink(reference, transport), reference };
        },
        onWarning: warn,
        onStage: (stage) => {
          if (stage === 'convert') runFinished = true;
          if (stage === 'run' && flags['wait-on-signal']) process.stderr.write('esgz: workload running; press Ctrl-C to stop it and convert\n');
        },
      });
    } finally {
      progress.stop();
      process.off('SIGINT', onSigint);
      process.off('SIGTERM', onSigint);
      await source.close();
    }
    if (flags.json) {
      writeJson(report);
      return;
    }
    this.printReport(report);
  }

  private printReport(report: OptimizeReport): void {
    const p = report.profiled;
    if (p) {
      const stop = p.stopReason === 'exited' ? `exited with code ${p.exitCode}` : `stopped (${p.stopReason})`;
      this.log(`workload: ${JSON.stringify(p.args)} ${stop} after ${(p.durationMs / 1000).toFixed(1)} s (${p.rootfsMode})`);
      this.log(`files traced: ${p.filesTraced} (${formatBytes(p.bytesTraced)}), prefetch coverage ${(p.prefetchCoverage * 100).toFixed(1)}%`);
      if (p.runtimeFiles.length > 0) {
        const shown = p.runtimeFiles.slice(0, 5).join(', ') + (p.runtimeFiles.length > 5 ? `, … (${p.runtimeFiles.length} in all)` : '');
        this.log(`  read by the runtime before the workload started (prioritized after the workload's files): ${shown}`);
      }
      for (const l of p.layers) {
        const landmark = l.landmarkOffset !== undefined ? `, landmark at ${l.landmarkOffset}` : '';
        const out = l.outputDigest ? ` -> ${l.outputDigest.slice(0, 19)}… ${formatBytes(l.outputSize ?? 0)}` : '';
        this.log(`  layer ${l.index}: ${l.prioritizedFiles} prioritized file(s), ${formatBytes(l.prioritizedBytes)}${landmark}${out}`);
      }
    }
    if (report.recordOut) this.log(`record: ${report.recordOut}`);
    if (report.tocImage) this.log(`extra image: ${report.tocImage.reference} (${report.tocImage.digest})`);
    const t = report.timings;
    this.log(`time: ${t.profileMs !== undefined ? `profile ${(t.profileMs / 1000).toFixed(1)} s, ` : ''}convert ${((t.convertMs ?? 0) / 1000).toFixed(1)} s`);
    this.log(report.transfer.root.digest);
  }
}
