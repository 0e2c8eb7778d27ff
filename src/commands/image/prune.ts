import { BaseCommand } from '../../cli/base.js';
import { stateRootFlags } from '../../cli/flags.js';
import { writeJson } from '../../cli/output.js';
import { pruneState } from '../../snapshotter/manage.js';

export default class ImagePrune extends BaseCommand<typeof ImagePrune> {
  static override summary =
    'Delete blobs, unpacked layers and cached chunks no pulled image uses, and clean up after crashed "esgz run"s';
  static override examples = [
    { description: 'Reclaim space after "esgz image rm"', command: '<%= config.bin %> image prune' },
  ];

  static override flags = {
    ...stateRootFlags,
  };

  async run(): Promise<void> {
    const result = await pruneState(this.flags.root, (m) => this.warn(m), this.environment.runc);
    if (this.flags.json) writeJson(result);
    else
      this.log(
        `removed ${result.containers} dead containers, ${result.blobs} blobs, ${result.layers} layers, ${result.chunks} chunks (${result.bytes} bytes)`,
      );
  }
}
