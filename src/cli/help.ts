// oclif's help with one more section: every command's --help ends with the ESGZ_* variables
// (package.json `oclif.helpClass` points here), so they are documented where the flags are.
import { CommandHelp, Help } from '@oclif/core';
import { ENVIRONMENT_HELP } from './environment.js';

class EsgzCommandHelp extends CommandHelp {
  protected override sections(): ReturnType<CommandHelp['sections']> {
    return [...super.sections(), { header: 'ENVIRONMENT', generate: () => ENVIRONMENT_HELP }];
  }
}

export default class EsgzHelp extends Help {
  protected override CommandHelpClass = EsgzCommandHelp;
}
