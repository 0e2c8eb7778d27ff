import { Flags } from '@oclif/core';
import { BaseCommand } from '../../cli/base.js';
import { pruneState } from '../../snapshotter/manage.js';
import { DEFAULT_STATE_ROOT } from '../../snapshotter/state.js';

export default class ImagePrune extends BaseCommand<typeof ImagePrune> {
  static override summary = 'Delete blobs, unpacked layers and cached chunks no pulled image uses, and clean up after crashed "esgz run"s';
  static override examples = [{ description: 'Reclaim space after "esgz image rm"', command: '<%= config.bin %> image prune' }];

  static override flags = {
    root: Flags.string({ description: 'State root', default: DEFAULT_STATE_ROOT }),
  };

  async run(): Promise<void> {
    const result = await pruneState(this.flags.root, (m) => this.warn(m));
    if (this.flags.json) this.printJson(result);
    else this.log(`removed ${result.containers} dead containers, ${result.blobs} blobs, ${result.layers} layers, ${result.chunks} chunks (${result.bytes} bytes)`);
  }
}
