import { Args } from '@oclif/core';
import { BaseCommand } from '../../cli/base.js';
import { storeFlags, transportOptions, registryFlags } from '../../cli/flags.js';
import { writeJson } from '../../cli/output.js';
import { transferImage } from '../../image/pipeline.js';
import { archivedImages } from '../../image/transports/archive-images.js';
import { openSink, openSource } from '../../image/transports/index.js';
import { LOCAL_PREFIX } from '../../image/transports/local.js';

export default class ImageImport extends BaseCommand<typeof ImageImport> {
  static override summary = 'Read the images of an OCI archive or docker-archive tar into the local store';
  static override description =
    "Each image the archive names (io.containerd.image.name, a full reference as ref name, or docker save's RepoTags) is copied into the store with every platform the archive holds, blobs digest-checked, and named last.";

  static override examples = [
    {
      description: 'Import what "image export" or "ctr image export" wrote',
      command: '<%= config.bin %> image import images.tar',
    },
    {
      description: 'Import a "docker save" archive into namespace ci',
      command: '<%= config.bin %> image import -n ci app.tar',
    },
  ];

  static override args = {
    file: Args.string({ description: 'Archive to read', required: true }),
  };

  static override flags = { ...storeFlags, ...registryFlags };

  async run(): Promise<void> {
    const { args } = await this.parse(ImageImport);
    const options = transportOptions(this.flags);
    const imported: Array<{ name: string; digest: string }> = [];
    for (const image of await archivedImages(args.file)) {
      const source = await openSource(image.spec, options);
      try {
        const report = await this.interruptible(
          async (signal) =>
            transferImage({
              source,
              sink: await openSink(`${LOCAL_PREFIX}${image.name}`, options),
              allPlatforms: true,
              signal,
              progress: this.progress,
              onWarning: this.warning,
            }),
          `interrupted; ${image.name} was not named in the store`,
        );
        imported.push({ name: image.name, digest: report.root.digest });
      } finally {
        await source.close();
      }
    }
    if (this.flags.json) writeJson({ file: args.file, images: imported });
    else for (const i of imported) this.log(`${i.name}: ${i.digest}`);
  }
}
