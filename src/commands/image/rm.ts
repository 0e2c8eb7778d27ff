import { Args } from '@oclif/core';
import { BaseCommand } from '../../cli/base.js';
import { storeFlags } from '../../cli/flags.js';
import { writeJson } from '../../cli/output.js';
import { removeImage } from '../../snapshotter/manage.js';

export default class ImageRm extends BaseCommand<typeof ImageRm> {
  static override summary = 'Remove image names from the local store (their data goes at the next "esgz image prune")';
  static override hiddenAliases = ['image:delete', 'image:del', 'image:remove'];
  static override examples = [
    { description: 'Remove an image', command: '<%= config.bin %> image rm localhost:5000/busybox:esgz' },
  ];

  static override strict = false;
  static override args = {
    ref: Args.string({ description: 'Image name(s) to remove', required: true }),
  };

  static override flags = { ...storeFlags };

  async run(): Promise<void> {
    const { argv } = await this.parse(ImageRm);
    const removed: string[] = [];
    for (const ref of argv as string[]) removed.push(await removeImage(ref, this.flags.root, this.flags.namespace));
    if (this.flags.json) writeJson({ removed });
    else for (const r of removed) this.log(r);
  }
}
