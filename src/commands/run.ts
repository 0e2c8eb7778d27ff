import { Args, Flags } from '@oclif/core';
import { BaseCommand } from '../cli/base.js';
import {
  lazyPullFlags,
  platformFlag,
  platformFromFlag,
  PRIVILEGED_WARNING,
  workloadRegistryFlags,
  runOptionsFromFlags,
  stateRootFlags,
  transportOptions,
  workloadFlags,
} from '../cli/flags.js';
import { writeJson } from '../cli/output.js';
import { EsgzError } from '../errors.js';
import { formatPlatform, hostPlatform, platformMatches } from '../oci/platform.js';
import { rpull } from '../snapshotter/rpull.js';
import { runContainer, type RunStats } from '../snapshotter/run.js';

/**
 * Splits argv into what oclif parses (flags, REF, ID) and the container command, which is passed
 * through untouched: in `esgz run REF ID sh -c "echo hi"`, `-c` belongs to sh, not to esgz.
 */
export function splitRunArgv(argv: string[]): { head: string[]; command: string[] } {
  const valueFlags = optionWords(Run.flags);
  const head: string[] = [];
  let positionals = 0;
  for (let i = 0; i < argv.length; i++) {
    const word = argv[i]!;
    if (word === '--') {
      // Everything after "--" is REF/ID (if not yet given) and the command.
      const rest = argv.slice(i + 1);
      while (positionals < 2 && rest.length) {
        head.push(rest.shift()!);
        positionals++;
      }
      return { head, command: rest };
    }
    if (word.startsWith('-') && word !== '-') {
      head.push(word);
      if (valueFlags.has(word) && i + 1 < argv.length) head.push(argv[++i]!);
      continue;
    }
    if (positionals === 2) return { head, command: argv.slice(i) };
    head.push(word);
    positionals++;
  }
  return { head, command: [] };
}

/** The argv words that name a flag taking a value (the next word, unless written --flag=value). */
function optionWords(flags: Record<string, { type: string; char?: string }>): Set<string> {
  const words = new Set<string>();
  for (const [name, flag] of Object.entries(flags)) {
    if (flag.type !== 'option') continue;
    words.add(`--${name}`);
    if (flag.char) words.add(`-${flag.char}`);
  }
  return words;
}

export default class Run extends BaseCommand<typeof Run> {
  static override summary =
    'Run a command in a lazily pulled image (FUSE layers served by this process, overlayfs, runc)';
  static override description = `Mounts each layer of an image pulled with "esgz image rpull" through FUSE (files are fetched
chunk by chunk on first read, verified, and cached), stacks them with overlayfs over a fresh
writable layer, and runs the command with runc using the image config. Everything is unmounted
when the container exits or on Ctrl-C. Needs root. Arguments after ID are the command.`;

  static override examples = [
    {
      description: 'Run the image default command and remove the container afterwards',
      command: '<%= config.bin %> run --rm localhost:5000/busybox:esgz',
    },
    {
      description: 'Run a command (ID first, then the command)',
      command: '<%= config.bin %> run --rm --env GREETING=hi localhost:5000/python:esgz c1 python3 -c "print(\'hi\')"',
    },
    {
      description: 'Interactive shell with the host network',
      command: '<%= config.bin %> run --rm -t --net-host localhost:5000/debian:esgz shell /bin/bash',
    },
  ];

  static override usage = '<%= command.id %> [FLAGS] REF [ID] [COMMAND [ARG...]]';

  static override strict = false;
  static override args = {
    ref: Args.string({ description: 'Image reference (as given to "esgz image rpull")', required: true }),
    id: Args.string({ description: 'Container id (default: esgz-<random>)' }),
  };

  static override flags = {
    ...workloadRegistryFlags,
    ...stateRootFlags,
    ...workloadFlags,
    ...lazyPullFlags,
    ...platformFlag,
    snapshotter: Flags.string({
      description:
        'stargz: layers pulled by "image rpull" are mounted lazily (FUSE); overlayfs: every layer is downloaded and unpacked first, then run',
      options: ['stargz', 'overlayfs'],
      default: 'stargz',
    }),
    rm: Flags.boolean({ description: "Remove the container's writable layer when it exits", default: false }),
    tty: Flags.boolean({ char: 't', description: 'Allocate a terminal (stdin must be one)', default: false }),
    hostname: Flags.string({ description: 'Container host name' }),
    stats: Flags.boolean({
      description:
        'Print what the run fetched (bytes, requests, prefetch hits, on-demand misses) and the time to the first output, on stderr (always in --json)',
      default: false,
    }),
  };

  private command: string[] = [];

  override async init(): Promise<void> {
    const { head, command } = splitRunArgv(this.argv);
    this.argv = head;
    this.command = command;
    await super.init();
  }

  async run(): Promise<void> {
    const { args } = await this.parse(Run);
    const flags = this.flags;
    const run = runOptionsFromFlags(flags, flags.tty);
    if (flags.tty && !process.stdin.isTTY) throw new EsgzError('BAD_FLAG', '-t needs a terminal on stdin');
    this.checkPlatform();
    if (flags.privileged) this.warning(PRIVILEGED_WARNING);
    if (flags.snapshotter === 'overlayfs') await this.pullUnpacked(args.ref);

    const result = await this.interruptible((signal) =>
      runContainer({
        reference: args.ref,
        id: args.id,
        stateRoot: flags.root,
        rm: flags.rm,
        run,
        command: this.command.length ? this.command : undefined,
        ...transportOptions(flags),
        stdin: flags.interactive || flags.tty,
        stdout: flags.json ? process.stderr : process.stdout,
        stderr: process.stderr,
        signal,
        backgroundFetch: flags['background-fetch'],
        runc: this.environment.runc,
        onWarning: (m) => this.warn(m),
      }),
    );
    if (flags.json) writeJson(result);
    else if (flags.stats) process.stderr.write(`${formatRunStats(result.stats)}\n`);
    process.exitCode = result.exitCode ?? 1;
  }

  /** A container runs on this machine's platform only; `--platform` may name it (ctr run's flag). */
  private checkPlatform(): void {
    const wanted = platformFromFlag(this.flags);
    const host = hostPlatform();
    if (wanted && !platformMatches(host, wanted))
      throw new EsgzError(
        'UNSUPPORTED',
        `--platform ${formatPlatform(wanted)}: this machine runs ${formatPlatform(host)} only`,
      );
  }

  /** `--snapshotter overlayfs`: every layer downloaded and unpacked (none lazy) before the run. */
  private async pullUnpacked(reference: string): Promise<void> {
    const flags = this.flags;
    await this.interruptible((signal) =>
      rpull({
        reference,
        stateRoot: flags.root,
        platform: platformFromFlag(flags),
        ...transportOptions(flags),
        lazy: false,
        noPrefetch: true,
        signal,
        onProgress: (m) => process.stderr.write(`${m}\n`),
      }),
    );
  }
}

/** One line for `--stats`. */
export function formatRunStats(stats: RunStats): string {
  const mb = (bytes: number) => `${(bytes / 1e6).toFixed(2)} MB`;
  const first = stats.firstOutputMs === undefined ? 'no output' : `${(stats.firstOutputMs / 1000).toFixed(3)} s`;
  const background =
    stats.backgroundComplete === undefined
      ? ''
      : `, background ${mb(stats.backgroundBytes)} (${stats.backgroundComplete ? 'complete' : 'stopped'})`;
  return (
    `stats: fetched ${mb(stats.bytesFetched)} in ${stats.requests} requests${background}, ` +
    `${stats.prefetchHits} prefetch hits, ${stats.onDemandMisses} on-demand misses, first output after ${first}`
  );
}
