import { Command, Flags, Interfaces } from '@oclif/core';
import { handleFatal } from './errors.js';

export type BaseFlags<T extends typeof Command> = Interfaces.InferredFlags<(typeof BaseCommand)['baseFlags'] & T['flags']>;

/**
 * Every esgz command extends this: shared flags (`--json`, registry transport flags), one-line
 * errors, and Ctrl-C turned into a clean teardown.
 */
export abstract class BaseCommand<T extends typeof Command> extends Command {
  static override baseFlags = {
    json: Flags.boolean({ description: 'Print a machine-readable JSON summary on stdout', default: false }),
    'plain-http': Flags.boolean({ description: 'Talk plain HTTP to registries (no TLS)', default: false }),
    insecure: Flags.boolean({ description: 'Skip TLS certificate verification', default: false }),
  };

  protected flags!: BaseFlags<T>;

  override async init(): Promise<void> {
    await super.init();
    const { flags } = await this.parse({
      flags: this.ctor.flags,
      baseFlags: (super.ctor as typeof BaseCommand).baseFlags,
      args: this.ctor.args,
      strict: this.ctor.strict,
    });
    this.flags = flags as BaseFlags<T>;
  }

  /** Writes a JSON document to stdout (for `--json`). */
  protected printJson(value: unknown): void {
    process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
  }

  override async catch(err: Error & { exitCode?: number }): Promise<never> {
    handleFatal(err);
  }
}
