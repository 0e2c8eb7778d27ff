import { Args, Flags } from '@oclif/core';
import { BaseCommand } from '../../cli/base.js';
import { transferJson, transferText, writeJson } from '../../cli/output.js';
import { ProgressBars } from '../../cli/progress.js';
import { EsgzError } from '../../errors.js';
import { libdeflateAvailable, selectGzipBackend } from '../../estargz/gzip-pool.js';
import { readPrefetchList, readRecordFile, type PriorityItem } from '../../estargz/priority.js';
import { createLayerTransform, tocImageReference, writeExternalTOCImage, type ChunkedTransformOptions, type LayerFormat } from '../../estargz/transform.js';
import { resolveGzipHelper } from '../../image/compression.js';
import { transferImage } from '../../image/pipeline.js';
import { parsePlatforms } from '../../image/platform.js';
import { openSink, openSource } from '../../image/transports/index.js';

export default class ImageConvert extends BaseCommand<typeof ImageConvert> {
  static override summary = 'Convert an image to eStargz, zstd:chunked or uncompressed layers';
  static override description = [
    'Reads SOURCE, rewrites every layer (eStargz: one gzip member per file chunk with a TOC and footer, as stargz-snapshotter reads them; zstd:chunked: the same with zstd frames; --uncompress: plain tar), recomputes the config diff_ids, adds the toc.digest and uncompressed-size annotations and writes DESTINATION, manifest last. Flag names follow ctr-remote image convert.',
    'gzip compression runs on every core with libdeflate (native addon, built at install) and falls back to Node\'s zlib when the addon is missing (ESGZ_GZIP_BACKEND=zlib forces it; `esgz version --json` says which one is used). Output is byte-reproducible for a given backend, whatever the core count.',
    'Prioritized files (--estargz-record-in from `image optimize`, or --prefetch-list with paths and globs) are placed first in each layer that has them, followed by .prefetch.landmark.',
  ].join('\n\n');

  static override examples = [
    {
      description: 'Convert an image in a registry to eStargz with OCI media types',
      command: '<%= config.bin %> image convert --estargz --oci registry.example.com/app:1.0 registry.example.com/app:1.0-esgz',
    },
    {
      description: 'Convert an OCI layout, putting the files a workload reads first',
      command: '<%= config.bin %> image convert --estargz --oci --estargz-record-in record.json oci:./app:1.0 oci:./app:esgz',
    },
    {
      description: 'Use a prefetch list with globs and smaller chunks, print a JSON report',
      command: '<%= config.bin %> image convert --estargz --oci --prefetch-list prefetch.txt --estargz-chunk-size 1048576 --json oci:./app:1.0 oci:./app:esgz',
    },
    {
      description: 'Convert two platforms of a multi-arch image (the result is an index of those two)',
      command: '<%= config.bin %> image convert --estargz --oci --platform linux/amd64,linux/arm64 registry.example.com/app:1.0 registry.example.com/app:1.0-esgz',
    },
    {
      description: 'zstd:chunked for podman/CRI-O partial pulls',
      command: '<%= config.bin %> image convert --zstdchunked --oci 127.0.0.1:5000/app:1.0 127.0.0.1:5000/app:zstdchunked --plain-http',
    },
    {
      description: 'Decompress the source layers with pigz (apt-get install pigz; igzip comes with isal)',
      command: '<%= config.bin %> image convert --estargz --oci --estargz-gzip-helper pigz registry.example.com/app:1.0 registry.example.com/app:1.0-esgz',
    },
    {
      description: 'Back to plain tar layers',
      command: '<%= config.bin %> image convert --uncompress oci:./app:esgz oci:./app:plain',
    },
  ];

  static override args = {
    source: Args.string({ description: 'image to convert (REGISTRY/REPO[:TAG|@DIGEST], oci:DIR[:TAG], docker-archive:FILE[:TAG])', required: true }),
    destination: Args.string({ description: 'where to write the result (same syntax)', required: true }),
  };

  static override flags = {
    estargz: Flags.boolean({ description: 'convert layers to eStargz for lazy pulling (use with --oci)', default: false }),
    'estargz-record-in': Flags.string({ description: "prioritized files from a record file ('image optimize --record-out' / ctr-remote format)" }),
    'estargz-compression-level': Flags.integer({ description: 'gzip level: 1-9 (zlib) or 1-12 (libdeflate)', default: 9, min: 0, max: 12 }),
    'estargz-chunk-size': Flags.integer({ description: 'chunk size in bytes (0: 4 MiB)', default: 0, min: 0 }),
    'estargz-min-chunk-size': Flags.integer({ description: 'minimal bytes in one gzip member; small files share members (adds innerOffset)', default: 0, min: 0 }),
    'estargz-external-toc': Flags.boolean({ description: 'put TOCs in a separate image, DESTINATION with "-esgztoc" appended to its tag', default: false }),
    'estargz-keep-diff-id': Flags.boolean({ description: 'keep the layers\' uncompressed tar (and diffIDs) byte for byte; needs --estargz-external-toc', default: false }),
    'estargz-gzip-helper': Flags.string({ description: 'decompress gzip source layers with this command instead of in-process: pigz, igzip or unpigz (must be installed; the output is the same bytes)', helpValue: 'pigz|igzip|unpigz' }),
    zstdchunked: Flags.boolean({ description: 'convert layers to zstd:chunked (requires --oci)', default: false }),
    'zstdchunked-record-in': Flags.string({ description: 'prioritized files from a record file, for --zstdchunked' }),
    'zstdchunked-compression-level': Flags.integer({ description: 'zstd level', default: 3, min: 1, max: 22 }),
    'zstdchunked-chunk-size': Flags.integer({ description: 'chunk size in bytes for --zstdchunked (0: 4 MiB)', default: 0, min: 0 }),
    'prefetch-list': Flags.string({ description: 'file of paths or globs (*, ?, [..], **) to prioritize, one per line, # comments' }),
    uncompress: Flags.boolean({ description: 'convert layers to uncompressed tar', default: false }),
    oci: Flags.boolean({ description: 'convert Docker media types to OCI media types', default: false }),
    reuse: Flags.boolean({ description: 'keep layers that already are valid eStargz / zstd:chunked as they are', default: false }),
    platform: Flags.string({ description: 'convert only these platforms, os/arch[/variant]; repeatable or comma-separated, several keep an index of them (default: this machine)', multiple: true, multipleNonGreedy: true }),
    'all-platforms': Flags.boolean({ description: 'convert every platform of a multi-platform image', default: false }),
    concurrency: Flags.integer({ description: 'layers converted at once', default: 2, min: 1, max: 16 }),
    workers: Flags.integer({ description: 'compression worker threads (default: number of cores)', min: 1, max: 256 }),
  };

  async run(): Promise<void> {
    const { args } = await this.parse(ImageConvert);
    const { flags } = this;
    const format = chooseFormat(flags);
    if (flags.platform !== undefined && flags['all-platforms']) {
      throw new EsgzError('BAD_FLAG', '--platform and --all-platforms cannot be used together');
    }
    const warn = (message: string): void => {
      progress.stop();
      process.stderr.write(`esgz: warning: ${message}\n`);
    };
    const progress = new ProgressBars();
    // `--estargz` without `--oci` on a Docker-media-type image is warned about by the transform
    // once the source manifest is known (OCI sources need no --oci).

    const transformOptions: ChunkedTransformOptions = { oci: flags.oci, reuse: flags.reuse, workers: flags.workers, warn };
    // ctr-remote treats an empty value as "no helper".
    if (flags['estargz-gzip-helper']) transformOptions.gzipHelper = await resolveGzipHelper(flags['estargz-gzip-helper']);
    if (format === 'estargz') {
      Object.assign(transformOptions, {
        compressionLevel: flags['estargz-compression-level'],
        chunkSize: flags['estargz-chunk-size'] || undefined,
        minChunkSize: flags['estargz-min-chunk-size'] || undefined,
        externalTOC: flags['estargz-external-toc'],
        keepDiffID: flags['estargz-keep-diff-id'],
      });
      if (flags['estargz-keep-diff-id'] && flags['estargz-record-in']) {
        throw new EsgzError('BAD_FLAG', 'option --estargz-keep-diff-id conflicts with --estargz-record-in');
      }
      if (flags['estargz-compression-level'] > 9 && selectGzipBackend() === 'zlib') {
        throw new EsgzError('BAD_FLAG', `--estargz-compression-level ${flags['estargz-compression-level']} needs libdeflate (${libdeflateAvailable().error ?? 'ESGZ_GZIP_BACKEND=zlib'}); zlib stops at 9`);
      }
    } else if (format === 'zstdchunked') {
      Object.assign(transformOptions, {
        compressionLevel: flags['zstdchunked-compression-level'],
        chunkSize: flags['zstdchunked-chunk-size'] || undefined,
      });
    }
    const prioritized: PriorityItem[] = [];
    const recordIn = format === 'zstdchunked' ? flags['zstdchunked-record-in'] : flags['estargz-record-in'];
    if (recordIn) prioritized.push(...(await readRecordFile(recordIn)));
    if (flags['prefetch-list']) prioritized.push(...(await readPrefetchList(flags['prefetch-list'])));
    if (prioritized.length > 0) {
      if (format === 'uncompress') throw new EsgzError('BAD_FLAG', 'prioritized files need --estargz or --zstdchunked');
      transformOptions.prioritizedFiles = prioritized;
    }
    const transform = createLayerTransform(format, transformOptions);
    if (transformOptions.externalTOC) tocImageReference(args.destination); // reject impossible destinations before converting

    const platforms = flags.platform !== undefined ? parsePlatforms(flags.platform) : undefined;
    const options = { plainHttp: flags['plain-http'], insecure: flags.insecure };
    const source = await openSource(args.source, options);
    const controller = new AbortController();
    const onSignal = (): void => controller.abort();
    process.once('SIGINT', onSignal);
    process.once('SIGTERM', onSignal);
    try {
      const sink = await openSink(args.destination, options);
      const report = await transferImage({
        source,
        sink,
        transform,
        ...(platforms !== undefined ? { platforms } : {}),
        allPlatforms: flags['all-platforms'],
        oci: flags.oci,
        concurrency: flags.concurrency,
        signal: controller.signal,
        progress,
        onWarning: warn,
      });
      progress.stop();
      let tocImage: { reference: string; digest: string } | undefined;
      const externalTOCs = (transform as { externalTOCs?: Map<string, Buffer> }).externalTOCs;
      if (transformOptions.externalTOC && externalTOCs) {
        const reference = tocImageReference(args.destination);
        const root = await writeExternalTOCImage(await openSink(reference, options), externalTOCs);
        tocImage = { reference, digest: root.digest };
        if (!flags.json) process.stderr.write(`extra image: ${reference} (${root.digest})\n`);
      }
      if (flags.json) writeJson({ ...transferJson(report, 'image convert'), format, ...(tocImage ? { tocImage } : {}), ...(format !== 'uncompress' ? { backend: await backendOf(transform as { codec?: () => Promise<{ backend: string }> }) } : {}) });
      else process.stdout.write(transferText(report, 'converted'));
    } catch (err) {
      progress.stop();
      if (controller.signal.aborted && !(err instanceof EsgzError && err.code === 'INTERRUPTED')) {
        throw new EsgzError('INTERRUPTED', 'interrupted; nothing was committed at the destination', { cause: err });
      }
      throw err;
    } finally {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
      await transform.close?.();
      await source.close();
    }
  }
}

async function backendOf(transform: { codec?: () => Promise<{ backend: string }> }): Promise<string | undefined> {
  return transform.codec ? (await transform.codec()).backend : undefined;
}

/** ctr-remote's rules for combining the format flags. */
export function chooseFormat(flags: { estargz: boolean; zstdchunked: boolean; uncompress: boolean; oci: boolean }): LayerFormat {
  if (flags.estargz && flags.uncompress) throw new EsgzError('BAD_FLAG', 'option --estargz conflicts with --uncompress');
  if (flags.estargz && flags.zstdchunked) throw new EsgzError('BAD_FLAG', 'option --estargz conflicts with --zstdchunked');
  if (flags.zstdchunked && flags.uncompress) throw new EsgzError('BAD_FLAG', 'option --zstdchunked conflicts with --uncompress');
  if (flags.zstdchunked && !flags.oci) throw new EsgzError('BAD_FLAG', 'option --zstdchunked must be used in conjunction with --oci');
  if (flags.estargz) return 'estargz';
  if (flags.zstdchunked) return 'zstdchunked';
  if (flags.uncompress) return 'uncompress';
  throw new EsgzError('BAD_FLAG', 'specify a layer format: --estargz, --zstdchunked or --uncompress');
}
