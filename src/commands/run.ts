import { Args, Flags } from '@oclif/core';
import { BaseCommand } from '../cli/base.js';
import { EsgzError } from '../errors.js';
import { DEFAULT_PIDS_LIMIT, parseByteSize, parseCommaList, parseMountFlag, type RunOptions } from '../runtime/spec.js';
import { runContainer } from '../snapshotter/run.js';
import { DEFAULT_STATE_ROOT } from '../snapshotter/state.js';

/** Flags of this command that take a value (the next argv word when not written --flag=value). */
const VALUE_FLAGS = new Set(['--root', '--env', '--env-file', '--mount', '--user', '-u', '--cwd', '--dns-nameservers', '--hostname', '--pids-limit', '--memory']);

/**
 * Splits argv into what oclif parses (flags, REF, ID) and the container command, which is passed
 * through untouched: in `esgz run REF ID sh -c "echo hi"`, `-c` belongs to sh, not to esgz.
 */
export function splitRunArgv(argv: string[]): { head: string[]; command: string[] } {
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
      if (VALUE_FLAGS.has(word) && i + 1 < argv.length) head.push(argv[++i]!);
      continue;
    }
    if (positionals === 2) return { head, command: argv.slice(i) };
    head.push(word);
    positionals++;
  }
  return { head, command: [] };
}

export default class Run extends BaseCommand<typeof Run> {
  static override summary = 'Run a command in a lazily pulled image (FUSE layers served by this process, overlayfs, runc)';
  static override description = `Mounts each layer of an image pulled with "esgz image rpull" through FUSE (files are fetched
chunk by chunk on first read, verified, and cached), stacks them with overlayfs over a fresh
writable layer, and runs the command with runc using the image config. Everything is unmounted
when the container exits or on Ctrl-C. Needs root. Arguments after ID are the command.`;

  static override examples = [
    { description: 'Run the image default command and remove the container afterwards', command: '<%= config.bin %> run --rm localhost:5000/busybox:esgz' },
    { description: 'Run a command (ID first, then the command)', command: '<%= config.bin %> run --rm --env GREETING=hi localhost:5000/python:esgz c1 python3 -c "print(\'hi\')"' },
    { description: 'Interactive shell with the host network', command: '<%= config.bin %> run --rm -t --net-host localhost:5000/debian:esgz shell /bin/bash' },
  ];

  static override strict = false;
  static override args = {
    ref: Args.string({ description: 'Image reference (as given to "esgz image rpull")', required: true }),
    id: Args.string({ description: 'Container id (default: esgz-<random>)' }),
  };

  static override flags = {
    root: Flags.string({ description: 'State root', default: DEFAULT_STATE_ROOT }),
    rm: Flags.boolean({ description: "Remove the container's writable layer when it exits", default: false }),
    tty: Flags.boolean({ char: 't', description: 'Allocate a terminal (stdin must be one)', default: false }),
    i: Flags.boolean({ char: 'i', description: 'Attach stdin', default: false }),
    'net-host': Flags.boolean({ description: 'Use the host network (default: a private one with loopback only)', default: false }),
    env: Flags.string({ description: 'KEY=VALUE added to the environment (repeatable)', multiple: true, multipleNonGreedy: true }),
    'env-file': Flags.string({ description: 'File of KEY=VALUE lines added to the environment' }),
    mount: Flags.string({ description: 'Extra mount, e.g. type=bind,source=/src,destination=/dst,options=rbind:ro (repeatable)', multiple: true, multipleNonGreedy: true }),
    user: Flags.string({ char: 'u', description: 'user[:group] to run as (names looked up in the image)' }),
    cwd: Flags.string({ description: "Working directory (overrides the image's)" }),
    hostname: Flags.string({ description: 'Container host name' }),
    'dns-nameservers': Flags.string({ description: 'Comma-separated nameservers for /etc/resolv.conf', default: '8.8.8.8' }),
    'background-fetch': Flags.boolean({ description: 'Fetch the rest of every layer while the container runs', default: false }),
    // Sandbox limits (nerdctl's names)
    'pids-limit': Flags.integer({ description: `Most processes and threads the container may have (0: no limit; default ${DEFAULT_PIDS_LIMIT})` }),
    memory: Flags.string({ description: 'Memory limit, e.g. 512m, 2g (0: no limit; default: half of this machine\'s memory, at most 4g)' }),
    privileged: Flags.boolean({ description: 'Run without the sandbox: every capability, no seccomp filter, no masked paths', default: false }),
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
    const run: RunOptions = {
      env: flags.env,
      envFile: flags['env-file'],
      user: flags.user,
      cwd: flags.cwd,
      mounts: (flags.mount ?? []).map(parseMountFlag),
      dnsNameservers: parseCommaList(flags['dns-nameservers']),
      netHost: flags['net-host'],
      terminal: flags.tty,
      hostname: flags.hostname,
      pidsLimit: flags['pids-limit'],
      ...(flags.memory !== undefined ? { memoryLimitBytes: parseByteSize('memory', flags.memory) } : {}),
      privileged: flags.privileged,
    };
    if (flags.tty && !process.stdin.isTTY) throw new EsgzError('BAD_FLAG', '-t needs a terminal on stdin');

    const abort = new AbortController();
    const onSignal = () => abort.abort();
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
    try {
      const result = await runContainer({
        reference: args.ref,
        id: args.id,
        stateRoot: flags.root,
        rm: flags.rm,
        run,
        command: this.command.length ? this.command : undefined,
        plainHttp: flags['plain-http'],
        insecure: flags.insecure,
        stdin: flags.i || flags.tty,
        stdout: flags.json ? process.stderr : process.stdout,
        stderr: process.stderr,
        signal: abort.signal,
        backgroundFetch: flags['background-fetch'],
        onWarning: (m) => this.warn(m),
      });
      if (flags.json) this.printJson(result);
      process.exitCode = result.exitCode ?? 1;
    } finally {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    }
  }
}
