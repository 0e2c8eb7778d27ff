import { Args } from '@oclif/core';
import { BaseCommand } from '../../cli/base.js';
import { platformsFlags, platformsFromFlags, registryFlags, transferFlags, transportOptions } from '../../cli/flags.js';
import { transferJson, transferText, writeJson, writeSummary } from '../../cli/output.js';
import { EsgzError } from '../../errors.js';
import { transferImage } from '../../image/pipeline.js';
import { openSink, openSource, parseTransportReference } from '../../image/transports/index.js';

export default class ImageCopy extends BaseCommand<typeof ImageCopy> {
  static override summary = 'Copy an image between registries, OCI layouts and docker archives';
  static override description = [
    'Streams every blob from SOURCE to DESTINATION without a daemon and writes the manifest (or index) last, so a failed copy never leaves a tag behind. Digests are kept byte for byte.',
    'References: REGISTRY/REPO[:TAG|@DIGEST] (docker.io shorthands work: "alpine" is docker.io/library/alpine:latest), oci:DIR[:TAG] (an OCI image layout, created if missing), docker-archive:FILE[:TAG] (a "docker save" tar).',
    "From a multi-platform index only this machine's platform is copied, unless --platform (one or several platforms) or --all-platforms says otherwise.",
  ].join('\n\n');

  static override examples = [
    {
      description: 'Pull an image from a registry into an OCI layout',
      command: '<%= config.bin %> image copy docker.io/library/alpine:3.20 oci:./alpine:3.20',
    },
    {
      description: 'Push an OCI layout to a local plain-HTTP registry',
      command: '<%= config.bin %> image copy --plain-http oci:./alpine:3.20 127.0.0.1:5000/library/alpine:3.20',
    },
    {
      description: 'Keep every platform of a multi-arch image',
      command: '<%= config.bin %> image copy --all-platforms ghcr.io/org/app:1.0 oci:./app:1.0',
    },
    {
      description: 'Keep two platforms of a multi-arch image (an index of just those); --platform can also be repeated',
      command: '<%= config.bin %> image copy --platform linux/amd64,linux/arm64 ghcr.io/org/app:1.0 oci:./app:1.0',
    },
    {
      description: 'Write the arm64 image to a docker archive (loadable with "docker load")',
      command: '<%= config.bin %> image copy --platform linux/arm64 oci:./app:1.0 docker-archive:./app.tar:app:1.0',
    },
    {
      description: 'Convert Docker media types to OCI on the way, and print a JSON summary',
      command: '<%= config.bin %> image copy --oci --json docker-archive:./app.tar oci:./app-oci:latest',
    },
  ];

  static override args = {
    source: Args.string({
      description: 'image to read (REGISTRY/REPO[:TAG|@DIGEST], oci:DIR[:TAG], docker-archive:FILE[:TAG])',
      required: true,
    }),
    destination: Args.string({
      description: 'where to write it (same syntax; a registry destination takes a tag)',
      required: true,
    }),
  };

  static override flags = {
    ...registryFlags,
    ...platformsFlags,
    ...transferFlags,
  };

  async run(): Promise<void> {
    const { args } = await this.parse(ImageCopy);
    const { flags } = this;
    const platformChoice = platformsFromFlags(flags);
    if (parseTransportReference(args.destination).transport === 'docker-archive') {
      if (flags['all-platforms'])
        throw new EsgzError(
          'BAD_FLAG',
          `${args.destination}: a docker archive holds one platform; use --platform instead of --all-platforms`,
        );
      if ((platformChoice.platforms?.length ?? 0) > 1)
        throw new EsgzError(
          'BAD_FLAG',
          `${args.destination}: a docker archive holds one platform; give one --platform`,
        );
    }
    const transport = transportOptions(flags);
    const source = await openSource(args.source, transport);
    try {
      await this.interruptible(async (signal) => {
        const sink = await openSink(args.destination, transport);
        const report = await transferImage({
          source,
          sink,
          ...platformChoice,
          oci: flags.oci,
          concurrency: flags.concurrency,
          signal,
          progress: this.progress,
          onWarning: this.warning,
        });
        this.progress.stop();
        if (flags.json) writeJson(transferJson(report, 'image copy'));
        else writeSummary(transferText(report, 'copied'), { digest: report.root.digest });
      }, 'interrupted; nothing was committed at the destination');
    } finally {
      await source.close();
    }
  }
}
