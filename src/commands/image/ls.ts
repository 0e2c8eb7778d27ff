import { BaseCommand } from '../../cli/base.js';
import { storeFlags } from '../../cli/flags.js';
import { formatTable, writeJson } from '../../cli/output.js';
import { formatBytes } from '../../cli/progress.js';
import { listImages, type ImageSummary } from '../../snapshotter/manage.js';

export default class ImageLs extends BaseCommand<typeof ImageLs> {
  static override summary =
    'List the images of the local store: pulled in full ("image pull") or lazily ("image rpull")';
  static override hiddenAliases = ['image:list'];
  static override examples = [
    {
      description: "List images (ctr's columns; LABELS says which are lazily pulled)",
      command: '<%= config.bin %> image ls',
    },
    { description: 'As JSON, from another state root', command: '<%= config.bin %> image ls --json --root /tmp/esgz' },
  ];

  static override flags = { ...storeFlags };

  async run(): Promise<void> {
    const images = await listImages(this.flags.root, this.flags.namespace);
    if (this.flags.json) {
      writeJson(images);
      return;
    }
    if (images.length === 0) {
      this.log(`no images in ${this.flags.root} (namespace ${this.flags.namespace})`);
      return;
    }
    const rows = [
      ['REF', 'TYPE', 'DIGEST', 'SIZE', 'PLATFORMS', 'LABELS'],
      ...images.map((i) => [
        i.reference,
        i.mediaType,
        i.manifestDigest,
        formatBytes(i.size),
        i.platforms.join(',') || '-',
        labels(i),
      ]),
    ];
    process.stdout.write(formatTable(rows));
  }
}

/** esgz's own facts in ctr's LABELS column: how many layers of a lazily pulled image are lazy. */
function labels(image: ImageSummary): string {
  return image.kind === 'lazy' ? `esgz.lazy=${image.lazyLayers}/${image.layers}` : '-';
}
