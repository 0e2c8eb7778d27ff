import { readFileSync } from 'node:fs';
import { BaseCommand } from '../cli/base.js';

export default class Version extends BaseCommand<typeof Version> {
  static override description = 'Print the esgz version and which compression backends are available';
  static override examples = ['<%= config.bin %> version', '<%= config.bin %> version --json'];

  async run(): Promise<void> {
    const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
    const info = { version: pkg.version, node: process.version };
    if (this.flags.json) this.printJson(info);
    else this.log(`esgz ${info.version} (node ${info.node})`);
  }
}
