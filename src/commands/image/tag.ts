import { Args } from '@oclif/core';
import { BaseCommand } from '../../cli/base.js';
import { storeFlags } from '../../cli/flags.js';
import { writeJson } from '../../cli/output.js';
import { tagImage } from '../../snapshotter/manage.js';

export default class ImageTag extends BaseCommand<typeof ImageTag> {
  static override summary = 'Give an image of the local store more names';
  static override examples = [
    { description: 'Name a pulled image app:1', command: '<%= config.bin %> image tag localhost:5000/app:1 app:1' },
    {
      description: 'Two names at once, in namespace ci',
      command: '<%= config.bin %> image tag -n ci app:1 app:latest registry.example.com/app:1',
    },
  ];

  static override strict = false;
  static override args = {
    source: Args.string({ description: 'Name in the store', required: true }),
    target: Args.string({ description: 'New name(s)', required: true }),
  };

  static override flags = { ...storeFlags };

  async run(): Promise<void> {
    const { argv } = await this.parse(ImageTag);
    const [source, ...targets] = argv as string[];
    const tagged = await tagImage(source!, targets, this.flags.root, this.flags.namespace);
    if (this.flags.json) writeJson({ source, tagged });
    else for (const t of tagged) this.log(t);
  }
}
