import { Flags } from '@oclif/core';
import { BaseCommand } from '../../cli/base.js';
import { listImages } from '../../snapshotter/manage.js';
import { DEFAULT_STATE_ROOT } from '../../snapshotter/state.js';

export default class ImageLs extends BaseCommand<typeof ImageLs> {
  static override summary = 'List images pulled with "esgz image rpull"';
  static override examples = [
    { description: 'List lazily pulled images', command: '<%= config.bin %> image ls' },
    { description: 'As JSON, from another state root', command: '<%= config.bin %> image ls --json --root /tmp/esgz' },
  ];

  static override flags = {
    root: Flags.string({ description: 'State root', default: DEFAULT_STATE_ROOT }),
  };

  async run(): Promise<void> {
    const images = await listImages(this.flags.root);
    if (this.flags.json) {
      this.printJson(images);
      return;
    }
    if (images.length === 0) {
      this.log(`no images in ${this.flags.root}`);
      return;
    }
    const rows = [['REFERENCE', 'DIGEST', 'PLATFORM', 'LAYERS', 'LAZY', 'SIZE'], ...images.map((i) => [i.reference, i.manifestDigest.slice(0, 19), i.platform ?? '-', String(i.layers), String(i.lazyLayers), String(i.size)])];
    const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
    for (const r of rows) this.log(r.map((cell, c) => cell.padEnd(widths[c]!)).join('  ').trimEnd());
  }
}
