import { Args, Flags } from '@oclif/core';
import { BaseCommand } from '../../cli/base.js';
import {
  lazyPullFlags,
  platformFlag,
  platformFromFlag,
  registryFlags,
  stateRootFlags,
  transportOptions,
} from '../../cli/flags.js';
import { writeJson, writeReport } from '../../cli/output.js';
import { rpull } from '../../snapshotter/rpull.js';

export default class ImageRpull extends BaseCommand<typeof ImageRpull> {
  static override summary = 'Lazily pull an eStargz / zstd:chunked image: fetch only manifest, config and TOCs';
  static override description = `Resolves the image for this platform, stores its manifest and config and, for each eStargz or
zstd:chunked layer, fetches only the footer and TOC (verified against the layer's
containerd.io/snapshot/stargz/toc.digest annotation). Other layers are downloaded and unpacked in
full. Then each layer's prioritized files (before .prefetch.landmark) are fetched in one Range
request into the chunk cache, unless --no-prefetch. "esgz run" starts containers from the result.`;

  static override examples = [
    {
      description: 'Lazily pull from a local plain-HTTP registry',
      command: '<%= config.bin %> image rpull --plain-http localhost:5000/busybox:esgz',
    },
    {
      description: 'Pull into another state root and fetch everything in the background',
      command: '<%= config.bin %> image rpull --root /tmp/esgz --background-fetch registry.example.com/app:1-esgz',
    },
  ];

  static override args = {
    ref: Args.string({ description: 'Image reference REGISTRY/REPO[:TAG|@DIGEST]', required: true }),
  };

  static override flags = {
    ...registryFlags,
    ...stateRootFlags,
    ...platformFlag,
    ...lazyPullFlags,
    'no-prefetch': Flags.boolean({ description: 'Do not fetch the prioritized files now', default: false }),
  };

  async run(): Promise<void> {
    const { args } = await this.parse(ImageRpull);
    const flags = this.flags;
    const report = await rpull({
      reference: args.ref,
      stateRoot: flags.root,
      platform: platformFromFlag(flags),
      ...transportOptions(flags),
      noPrefetch: flags['no-prefetch'],
      backgroundFetch: flags['background-fetch'],
      onProgress: flags.json ? undefined : (m) => process.stderr.write(`${m}\n`),
    });
    if (flags.json) {
      writeJson(report);
      return;
    }
    const lazy = report.layers.filter((l) => l.kind === 'lazy').length;
    const fetched = report.layers.reduce((n, l) => n + l.fetchedBytes, 0);
    const total = report.layers.reduce((n, l) => n + l.size, 0);
    writeReport(
      `${report.reference}: ${report.manifestDigest}\n` +
        `${lazy} of ${report.layers.length} layers lazy; fetched ${fetched} of ${total} layer bytes (ready in ${report.resolveMs} ms, prefetch ${report.prefetchMs} ms)\n`,
    );
  }
}
