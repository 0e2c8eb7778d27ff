import { Command, Flags, Interfaces } from '@oclif/core';
import { EsgzError, isEsgzError } from '../errors.js';
import { readEnvironment, type EsgzEnvironment } from './environment.js';
import { handleFatal } from './errors.js';

export type BaseFlags<T extends typeof Command> = Interfaces.InferredFlags<(typeof BaseCommand)['baseFlags'] & T['flags']>;

/**
 * Every esgz command extends this: `--json`, one-line errors, and Ctrl-C turned into a clean
 * teardown (`interruptible`). Other shared flags come from the sets in `flags.ts`.
 */
export abstract class BaseCommand<T extends typeof Command> extends Command {
  static override baseFlags = {
    json: Flags.boolean({ description: 'Print a machine-readable JSON summary on stdout', default: false }),
  };

  protected flags!: BaseFlags<T>;
  /** The ESGZ_* variables, read once here; the library gets them as options. */
  protected environment!: EsgzEnvironment;

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

  /**
   * Runs `body` with a signal that SIGINT (Ctrl-C) and SIGTERM abort. The body tears down what
   * it started when the signal fires; whatever error that surfaces as is reported as
   * INTERRUPTED with `message` (exit 130).
   */
  protected async interruptible<R>(body: (signal: AbortSignal) => Promise<R>, message = 'interrupted'): Promise<R> {
    const controller = new AbortController();
    const onSignal = (): void => controller.abort();
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
    try {
      return await body(controller.signal);
    } catch (err) {
      if (controller.signal.aborted && !(isEsgzError(err) && err.code === 'INTERRUPTED')) {
        throw new EsgzError('INTERRUPTED', message, { cause: err });
      }
      throw err;
    } finally {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    }
  }

  override async catch(err: Error & { exitCode?: number }): Promise<never> {
    handleFatal(err);
  }
}
