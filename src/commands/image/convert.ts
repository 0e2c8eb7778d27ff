import { Args, Flags } from '@oclif/core';
import { BaseCommand } from '../../cli/base.js';
import { invokedAsCtrRemote } from '../../cli/invocation.js';
import { conversionJson, transferText, writeJson, writeSummary } from '../../cli/output.js';
import {
  chooseFormat,
  ociFromFormatFlag,
  conversionFlags,
  conversionOptionsFromFlags,
  platformsFlags,
  prioritizedFromFlags,
  conversionPlatformsFromFlags,
  registryFlags,
  transportOptions,
} from '../../cli/flags.js';
import { createLayerTransform } from '../../convert/transform.js';
import { DEFAULT_PLAIN_ZSTD_LEVEL } from '../../image/compression.js';
import { tocImageReference, writeExternalTOCImage } from '../../convert/external-toc.js';
import { transferImage } from '../../image/pipeline.js';
import { openSink, openSource } from '../../image/transports/index.js';

export default class ImageConvert extends BaseCommand<typeof ImageConvert> {
  static override summary = 'Convert an image to eStargz, zstd:chunked or uncompressed layers';
  static override description = [
    'Reads SOURCE, rewrites every layer (eStargz: one gzip member per file chunk with a TOC and footer, as stargz-snapshotter reads them; zstd:chunked: the same with zstd frames; --uncompress: plain tar), recomputes the config diff_ids, adds the toc.digest and uncompressed-size annotations and writes DESTINATION, manifest last. Flag names follow ctr-remote image convert.',
    "gzip compression runs on every core with libdeflate (native addon, built at install) and falls back to Node's zlib when the addon is missing (ESGZ_GZIP_BACKEND=zlib forces it; `esgz version --json` says which one is used). Output is byte-reproducible for a given backend, whatever the core count.",
    'Prioritized files (--estargz-record-in from `image optimize`, or --prefetch-list with paths and globs) are placed first in each layer that has them, followed by .prefetch.landmark.',
  ].join('\n\n');

  static override examples = [
    {
      description: 'Convert an image in a registry to eStargz with OCI media types',
      command:
        '<%= config.bin %> image convert --estargz --oci registry.example.com/app:1.0 registry.example.com/app:1.0-esgz',
    },
    {
      description: 'Convert an OCI layout, putting the files a workload reads first',
      command:
        '<%= config.bin %> image convert --estargz --oci --estargz-record-in record.json oci:./app:1.0 oci:./app:esgz',
    },
    {
      description: 'Use a prefetch list with globs and smaller chunks, print a JSON report',
      command:
        '<%= config.bin %> image convert --estargz --oci --prefetch-list prefetch.txt --estargz-chunk-size 1048576 --json oci:./app:1.0 oci:./app:esgz',
    },
    {
      description: 'Convert two platforms of a multi-arch image (the result is an index of those two)',
      command:
        '<%= config.bin %> image convert --estargz --oci --platform linux/amd64,linux/arm64 registry.example.com/app:1.0 registry.example.com/app:1.0-esgz',
    },
    {
      description: 'zstd:chunked for podman/CRI-O partial pulls',
      command:
        '<%= config.bin %> image convert --zstdchunked --oci 127.0.0.1:5000/app:1.0 127.0.0.1:5000/app:zstdchunked --plain-http',
    },
    {
      description: 'Decompress the source layers with pigz (apt-get install pigz; igzip comes with isal)',
      command:
        '<%= config.bin %> image convert --estargz --oci --estargz-gzip-helper pigz registry.example.com/app:1.0 registry.example.com/app:1.0-esgz',
    },
    {
      description: 'Back to plain tar layers',
      command: '<%= config.bin %> image convert --uncompress oci:./app:esgz oci:./app:plain',
    },
  ];

  static override args = {
    source: Args.string({
      description: 'image to convert (REGISTRY/REPO[:TAG|@DIGEST], oci:DIR[:TAG], docker-archive:FILE[:TAG])',
      required: true,
    }),
    destination: Args.string({ description: 'where to write the result (same syntax)', required: true }),
  };

  static override flags = {
    ...registryFlags,
    ...platformsFlags,
    ...conversionFlags,
    estargz: Flags.boolean({
      description: 'Convert layers to eStargz for lazy pulling (use with --oci)',
      default: false,
    }),
    'estargz-record-in': Flags.string({
      description: "Prioritized files from a record file ('image optimize --record-out' / ctr-remote format)",
    }),
    'estargz-keep-diff-id': Flags.boolean({
      description: "Keep the layers' uncompressed tar (and diffIDs) byte for byte; needs --estargz-external-toc",
      default: false,
    }),
    'zstdchunked-record-in': Flags.string({ description: 'Prioritized files from a record file, for --zstdchunked' }),
    uncompress: Flags.boolean({ description: 'Convert layers to uncompressed tar', default: false }),
    zstd: Flags.boolean({
      description: "Convert layers to plain zstd (nerdctl's --zstd; use with --oci; not lazily pullable)",
      default: false,
    }),
    'zstd-compression-level': Flags.integer({
      description: `zstd level for --zstd (default ${DEFAULT_PLAIN_ZSTD_LEVEL}, as nerdctl)`,
      min: 1,
      max: 22,
    }),
    format: Flags.string({
      description:
        "nerdctl's image format choice: oci (same as --oci); docker is refused (esgz does not convert to Docker media types)",
      options: ['oci', 'docker'],
    }),
  };

  async run(): Promise<void> {
    const { args } = await this.parse(ImageConvert);
    const flags = { ...this.flags, oci: ociFromFormatFlag(this.flags) };
    const format = chooseFormat(flags);
    const platformChoice = conversionPlatformsFromFlags(flags, args.destination);
    const warn = this.warning;
    // `--estargz` without `--oci` on a Docker-media-type image is warned about by the transform
    // once the source manifest is known (OCI sources need no --oci).
    const recordIn = format === 'zstdchunked' ? flags['zstdchunked-record-in'] : flags['estargz-record-in'];
    const transformOptions = await conversionOptionsFromFlags(flags, format, this.environment, { recordIn, warn });
    const prioritized = await prioritizedFromFlags(flags, format, recordIn);
    if (prioritized.length > 0) transformOptions.prioritizedFiles = prioritized;
    const transform = createLayerTransform(format, transformOptions);
    if (transformOptions.externalTOC) tocImageReference(args.destination); // reject impossible destinations before converting

    const transport = transportOptions(flags);
    const source = await openSource(args.source, transport);
    try {
      await this.interruptible(async (signal) => {
        const sink = await openSink(args.destination, transport);
        const report = await transferImage({
          source,
          sink,
          transform,
          ...platformChoice,
          oci: flags.oci,
          concurrency: flags.concurrency,
          signal,
          progress: this.progress,
          onWarning: warn,
        });
        this.progress.stop();
        let tocImage: { reference: string; digest: string } | undefined;
        if (transformOptions.externalTOC) {
          const reference = tocImageReference(args.destination);
          const root = await writeExternalTOCImage(await openSink(reference, transport), transform.externalTOCs());
          tocImage = { reference, digest: root.digest };
          if (!flags.json && !invokedAsCtrRemote())
            process.stderr.write(`extra image: ${reference} (${root.digest})\n`);
        }
        const backend = transform.backend;
        if (flags.json)
          writeJson(
            conversionJson(report, 'image convert', {
              format,
              ...(tocImage ? { tocImage } : {}),
              ...(backend !== undefined ? { backend } : {}),
            }),
          );
        else writeSummary(transferText(report, 'converted'), { digest: report.root.digest, tocImage });
      }, 'interrupted; nothing was committed at the destination');
    } finally {
      await transform.close();
      await source.close();
    }
  }
}
