import { Args } from '@oclif/core';
import { BaseCommand } from '../../cli/base.js';
import { storeFlags, transportOptions, registryFlags } from '../../cli/flags.js';
import { writeJson } from '../../cli/output.js';
import { exportArchive } from '../../image/transports/archive-images.js';
import { openSource } from '../../image/transports/index.js';
import { findName, LOCAL_PREFIX } from '../../image/transports/local.js';
import type { ImageSource } from '../../image/types.js';

export default class ImageExport extends BaseCommand<typeof ImageExport> {
  static override summary = 'Write images of the local store to an OCI archive tar (as "ctr image export" does)';
  static override description =
    'The archive holds every platform the store has of each image, every blob once, and names each image in index.json with io.containerd.image.name (its full name) and org.opencontainers.image.ref.name (its tag), plus a docker-compatible manifest.json. "image import", "ctr image import", "docker load" and skopeo (oci-archive:FILE:NAME) read it.';

  static override examples = [
    {
      description: 'Export two images',
      command: '<%= config.bin %> image export images.tar app:1 localhost:5000/busybox:esgz',
    },
  ];

  static override strict = false;
  static override args = {
    file: Args.string({ description: 'Archive to write (replaced only once complete)', required: true }),
    ref: Args.string({ description: 'Image name(s) in the store', required: true }),
  };

  static override flags = { ...storeFlags, ...registryFlags };

  async run(): Promise<void> {
    const { argv } = await this.parse(ImageExport);
    const [file, ...refs] = argv as string[];
    const options = transportOptions(this.flags);
    const images: Array<{ name: string; source: ImageSource }> = [];
    try {
      for (const ref of refs) {
        const given = ref.startsWith(LOCAL_PREFIX) ? ref.slice(LOCAL_PREFIX.length) : ref;
        const name = (await findName(given, options.store))?.name ?? given;
        images.push({ name, source: await openSource(`${LOCAL_PREFIX}${name}`, options) });
      }
      const reports = await this.interruptible(
        (signal) => exportArchive(file!, images, { signal, progress: this.progress, onWarning: this.warning }),
        `interrupted; ${file} was not written`,
      );
      const exported = images.map((i, n) => ({ name: i.name, digest: reports[n]!.root.digest }));
      if (this.flags.json) writeJson({ file, images: exported });
      else for (const e of exported) process.stderr.write(`exported ${e.name}: ${e.digest}\n`);
    } finally {
      for (const i of images) await i.source.close();
    }
  }
}
