import { Args, Flags } from '@oclif/core';
import { BaseCommand } from '../../cli/base.js';
import { storeFlags } from '../../cli/flags.js';
import { writeJson } from '../../cli/output.js';
import { pruneState, removeImage } from '../../snapshotter/manage.js';

export default class ImageRm extends BaseCommand<typeof ImageRm> {
  static override summary = 'Remove image names from the local store (their data goes at the next "esgz image prune")';
  static override hiddenAliases = ['image:delete', 'image:del', 'image:remove'];
  static override examples = [
    { description: 'Remove an image', command: '<%= config.bin %> image rm localhost:5000/busybox:esgz' },
    {
      description: "Remove it and free what no other name needs now, as ctr's --sync waits for that",
      command: '<%= config.bin %> image rm --sync localhost:5000/busybox:esgz',
    },
  ];

  static override strict = false;
  static override args = {
    ref: Args.string({ description: 'Image name(s) to remove', required: true }),
  };

  static override flags = {
    ...storeFlags,
    sync: Flags.boolean({
      description: 'Also free now the blobs, layers and chunks no name needs any more (as "image prune")',
      default: false,
    }),
  };

  async run(): Promise<void> {
    const { argv } = await this.parse(ImageRm);
    const removed: string[] = [];
    for (const ref of argv as string[]) removed.push(await removeImage(ref, this.flags.root, this.flags.namespace));
    if (this.flags.sync) await pruneState(this.flags.root, (m) => this.warn(m), this.environment.runc);
    if (this.flags.json) writeJson({ removed });
    else for (const r of removed) this.log(r);
  }
}
