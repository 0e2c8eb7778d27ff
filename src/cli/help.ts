// oclif's help with one more section: every command's --help ends with the ESGZ_* variables
// (package.json `oclif.helpClass` points here), so they are documented where the flags are.
import { CommandHelp, Help } from '@oclif/core';
import { ENVIRONMENT_HELP } from './environment.js';

class EsgzCommandHelp extends CommandHelp {
  /**
   * oclif marks every argument of a non-strict command variadic ("REF... [ID...]"); `run`'s
   * extra words are the container's command (its usage says so), not more REFs or IDs.
   */
  protected override args(args: Parameters<CommandHelp['args']>[0]): ReturnType<CommandHelp['args']> {
    const command = this.command as { strict?: boolean };
    const strict = command.strict;
    command.strict = true;
    try {
      return super.args(args);
    } finally {
      command.strict = strict;
    }
  }

  protected override sections(): ReturnType<CommandHelp['sections']> {
    return [...super.sections(), { header: 'ENVIRONMENT', generate: () => ENVIRONMENT_HELP }];
  }
}

export default class EsgzHelp extends Help {
  protected override CommandHelpClass = EsgzCommandHelp;
}
