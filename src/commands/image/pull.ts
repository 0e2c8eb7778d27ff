import { Args } from '@oclif/core';
import { BaseCommand } from '../../cli/base.js';
import { platformsFlags, platformsFromFlags, registryFlags, storeFlags, transportOptions } from '../../cli/flags.js';
import { transferJson, transferText, writeJson } from '../../cli/output.js';
import { EsgzError } from '../../errors.js';
import { transferImage } from '../../image/pipeline.js';
import { openSink, openSource, parseTransportReference } from '../../image/transports/index.js';
import { formatReference, parseReference } from '../../registry/reference.js';

export default class ImagePull extends BaseCommand<typeof ImagePull> {
  static override summary = 'Pull an image in full into the local store (every blob downloaded and verified)';
  static override description = [
    'Streams every blob of REF from its registry into the store under the state root (--root), digest-checked before it is kept, and names the image REF (its full form: "alpine" is docker.io/library/alpine:latest) last.',
    'Other commands then read it as local:REF (under the name ctr-remote, a bare name such as app:1 means the store too). "image rpull" pulls lazily instead.',
    "From a multi-platform index only this machine's platform is pulled, unless --platform or --all-platforms says otherwise.",
  ].join('\n\n');

  static override examples = [
    {
      description: 'Pull an image from a local plain-HTTP registry',
      command: '<%= config.bin %> image pull --plain-http localhost:5000/busybox:latest',
    },
    {
      description: 'Every platform, into another state root and namespace',
      command: '<%= config.bin %> image pull --all-platforms --root /tmp/esgz -n ci ghcr.io/org/app:1.0',
    },
  ];

  static override args = {
    ref: Args.string({ description: 'Registry image REGISTRY/REPO[:TAG|@DIGEST]', required: true }),
  };

  static override flags = {
    ...registryFlags,
    ...storeFlags,
    ...platformsFlags,
  };

  async run(): Promise<void> {
    const { args } = await this.parse(ImagePull);
    const { flags } = this;
    const options = { ...transportOptions(flags), unqualified: 'registry' as const };
    const parsed = parseTransportReference(args.ref, options);
    if (parsed.transport !== 'registry')
      throw new EsgzError(
        'BAD_REFERENCE',
        `${args.ref}: pull reads a registry; use "image import" or "image copy SRC local:NAME"`,
      );
    const name = formatReference(parseReference(parsed.reference));
    const source = await openSource(args.ref, options);
    try {
      await this.interruptible(async (signal) => {
        const report = await transferImage({
          source,
          sink: await openSink(`local:${name}`, options),
          ...platformsFromFlags(flags),
          signal,
          progress: this.progress,
          onWarning: this.warning,
        });
        this.progress.stop();
        if (flags.json) writeJson(transferJson(report, 'image pull'));
        else process.stdout.write(transferText(report, 'pulled'));
      }, 'interrupted; the image was not named in the store');
    } finally {
      await source.close();
    }
  }
}
