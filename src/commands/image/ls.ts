import { BaseCommand } from '../../cli/base.js';
import { stateRootFlags } from '../../cli/flags.js';
import { formatTable, writeJson } from '../../cli/output.js';
import { shortDigest } from '../../oci/digest.js';
import { listImages } from '../../snapshotter/manage.js';

export default class ImageLs extends BaseCommand<typeof ImageLs> {
  static override summary = 'List images pulled with "esgz image rpull"';
  static override examples = [
    { description: 'List lazily pulled images', command: '<%= config.bin %> image ls' },
    { description: 'As JSON, from another state root', command: '<%= config.bin %> image ls --json --root /tmp/esgz' },
  ];

  static override flags = {
    ...stateRootFlags,
  };

  async run(): Promise<void> {
    const images = await listImages(this.flags.root);
    if (this.flags.json) {
      writeJson(images);
      return;
    }
    if (images.length === 0) {
      this.log(`no images in ${this.flags.root}`);
      return;
    }
    const rows = [
      ['REFERENCE', 'DIGEST', 'PLATFORM', 'LAYERS', 'LAZY', 'SIZE'],
      ...images.map((i) => [
        i.reference,
        shortDigest(i.manifestDigest),
        i.platform ?? '-',
        String(i.layers),
        String(i.lazyLayers),
        String(i.size),
      ]),
    ];
    process.stdout.write(formatTable(rows));
  }
}
