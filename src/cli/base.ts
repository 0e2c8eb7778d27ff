import { Command, Flags, Interfaces } from '@oclif/core';
import { EsgzError, isEsgzError } from '../errors.js';
import { readEnvironment, type EsgzEnvironment } from './environment.js';
import { handleFatal } from './errors.js';
import { ProgressBars } from './progress.js';

export type BaseFlags<T extends typeof Command> = Interfaces.InferredFlags<
  (typeof BaseCommand)['baseFlags'] & T['flags']
>;

/** What `interruptible` hands its body besides the signal that stops everything. */
export interface Interrupts {
  /**
   * Aborted by the first Ctrl-C (or SIGTERM). With `firstStopsWorkload` that one only ends the
   * workload, which then is the normal way to end it; without, it is aborted with everything.
   */
  workloadSignal: AbortSignal;
  /** The workload is over: from now on the first Ctrl-C stops everything. */
  workloadDone(): void;
}

/**
 * Every esgz command extends this: `--json`, one-line errors, progress bars and warnings on
 * stderr, and Ctrl-C turned into a clean teardown (`interruptible`). Other shared flags come
 * from the sets in `flags.ts`; the ESGZ_* variables from `this.environment`.
 */
export abstract class BaseCommand<T extends typeof Command> extends Command {
  static override baseFlags = {
    json: Flags.boolean({ description: 'Print a machine-readable JSON summary on stdout', default: false }),
  };

  protected flags!: BaseFlags<T>;
  /** The ESGZ_* variables, read once here; the library gets them as options. */
  protected environment!: EsgzEnvironment;
  /** Per-blob progress bars on stderr (only when it is a terminal); stopped when `interruptible` ends. */
  protected readonly progress = new ProgressBars();

  override async init(): Promise<void> {
    await super.init();
    const { flags } = await this.parse({
      flags: this.ctor.flags,
      baseFlags: (super.ctor as typeof BaseCommand).baseFlags,
      args: this.ctor.args,
      strict: this.ctor.strict,
    });
    this.flags = flags as BaseFlags<T>;
    this.environment = readEnvironment();
  }

  /** A warning on stderr (`esgz: warning: …`), clearing the progress bars first. */
  protected readonly warning = (message: string): void => {
    this.progress.stop();
    process.stderr.write(`esgz: warning: ${message}\n`);
  };

  /**
   * Runs `body` with a signal that SIGINT (Ctrl-C) and SIGTERM abort. The body tears down what
   * it started when the signal fires; whatever error that surfaces as is reported as
   * INTERRUPTED with `message` (exit 130). With `firstStopsWorkload` (optimize's
   * --wait-on-signal), the first Ctrl-C only aborts `interrupts.workloadSignal` until
   * `interrupts.workloadDone()`; a second one, or one after that, stops everything.
   */
  protected async interruptible<R>(
    body: (signal: AbortSignal, interrupts: Interrupts) => Promise<R>,
    message = 'interrupted',
    options: { firstStopsWorkload?: boolean } = {},
  ): Promise<R> {
    const everything = new AbortController();
    const workload = new AbortController();
    let workloadOver = !options.firstStopsWorkload;
    const onSignal = (): void => {
      const first = !workload.signal.aborted;
      workload.abort();
      if (!first || workloadOver) everything.abort();
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
    try {
      const interrupts = { workloadSignal: workload.signal, workloadDone: () => (workloadOver = true) };
      return await body(everything.signal, interrupts);
    } catch (err) {
      if (everything.signal.aborted && !(isEsgzError(err) && err.code === 'INTERRUPTED')) {
        throw new EsgzError('INTERRUPTED', message, { cause: err });
      }
      throw err;
    } finally {
      this.progress.stop();
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    }
  }

  override async catch(err: Error & { exitCode?: number }): Promise<never> {
    handleFatal(err);
  }
}
