import { existsSync } from 'node:fs';
import { Args, Flags } from '@oclif/core';
import { BaseCommand } from '../cli/base.js';
import { platformFlag, platformFromFlag, registryFlags, transportOptions, zstdchunkedFlag } from '../cli/flags.js';
import { writeJson } from '../cli/output.js';
import { EsgzError } from '../errors.js';
import { isDigest } from '../oci/digest.js';
import { openEstargzFile, type EstargzReader } from '../estargz/reader.js';
import { fetchExternalTOC, tocImageReference } from '../convert/external-toc.js';
import { readLayerTOC } from '../convert/verify.js';
import { resolveImages } from '../image/resolve.js';
import { openSource } from '../image/transports/index.js';
import { localBlobPath } from '../image/transports/local.js';
import type { ImageSource } from '../image/types.js';

const TRAILING_DIGEST = /^(.+)@(sha256:[0-9a-f]{64})$/;

export default class GetTocDigest extends BaseCommand<typeof GetTocDigest> {
  static override summary = 'Print the TOC digest of eStargz layers (or dump their TOC)';
  static override description = [
    'TARGET is a layer digest in the local store (as ctr-remote takes it, after "image pull"), a local layer blob file, or an image reference (REGISTRY/REPO[:TAG], oci:DIR[:TAG], docker-archive:FILE[:TAG]) optionally followed by @LAYER-DIGEST to pick one layer. Only the footer and the TOC are read (Range requests for registries), and the TOC digest is checked against the layer annotation when there is one.',
    'Without a layer digest every layer of the image is listed as "LAYER-DIGEST TOC-DIGEST" (layers that are not eStargz show "-").',
  ].join('\n\n');

  static override examples = [
    { description: 'A local blob file', command: '<%= config.bin %> get-toc-digest ./blobs/sha256/3f5c…' },
    {
      description: 'One layer of an image in a registry',
      command: '<%= config.bin %> get-toc-digest --plain-http 127.0.0.1:5000/app:esgz@sha256:3f5c…',
    },
    { description: 'Every layer of an OCI layout image', command: '<%= config.bin %> get-toc-digest oci:./app:esgz' },
    {
      description: 'Dump the TOC JSON of a layer',
      command: '<%= config.bin %> get-toc-digest --dump-toc oci:./app:esgz@sha256:3f5c…',
    },
  ];

  // Upstream's place is under `image` (ctr-remote image get-toc-digest); the top-level name stays.
  static override aliases = ['image:get-toc-digest'];

  static override args = {
    target: Args.string({
      description: 'LAYER-DIGEST in the store, layer blob file, or IMAGE[@LAYER-DIGEST]',
      required: true,
    }),
  };

  static override flags = {
    'dump-toc': Flags.boolean({ description: 'print the TOC JSON instead of its digest', default: false }),
    ...zstdchunkedFlag,
    layer: Flags.string({ description: 'layer digest to read (alternative to IMAGE@LAYER-DIGEST)' }),
    ...registryFlags,
    ...platformFlag,
  };

  async run(): Promise<void> {
    const { args } = await this.parse(GetTocDigest);
    const { flags } = this;
    const options = transportOptions(flags);
    // A layer named by its digest alone is read from the local store, as ctr-remote reads containerd's.
    const storedLayer = isDigest(args.target) ? localBlobPath(args.target, options.store) : undefined;
    if (storedLayer !== undefined && !existsSync(storedLayer))
      throw new EsgzError(
        'NOT_FOUND',
        `layer ${args.target} is not in the local store ${flags.root}: pull its image first`,
      );
    if (storedLayer !== undefined || existsSync(args.target)) {
      const reader = await openEstargzFile(storedLayer ?? args.target);
      try {
        this.checkFormat(reader, args.target);
        this.print([{ layer: args.target, tocDigest: reader.tocDigest, toc: reader.tocJSON }], flags['dump-toc']);
      } finally {
        await reader.blob.close?.();
      }
      return;
    }
    const platform = platformFromFlag(flags);
    let spec = args.target;
    let layerDigest = flags.layer;
    const m = TRAILING_DIGEST.exec(spec);
    let source: ImageSource | undefined;
    if (m && layerDigest === undefined) {
      // IMAGE@LAYER: the digest names a layer when the image without it has one; otherwise it is
      // the image's own manifest digest.
      try {
        source = await openSource(m[1]!, options);
        const images = await resolveImages(source, { platform });
        if (images.some((img) => img.manifest.layers.some((l) => l.digest === m[2]))) {
          spec = m[1]!;
          layerDigest = m[2];
        } else {
          await source.close();
          source = undefined;
        }
      } catch {
        await source?.close();
        source = undefined;
      }
    }
    source ??= await openSource(spec, options);
    try {
      const images = await resolveImages(source, { platform });
      const layers = images.flatMap((img) => img.manifest.layers);
      const wanted = layerDigest !== undefined ? layers.filter((l) => l.digest === layerDigest) : layers;
      if (wanted.length === 0) throw new EsgzError('NOT_FOUND', `${source.description}: no layer ${layerDigest}`);
      const rows: Array<{ layer: string; tocDigest?: string; toc?: Buffer; error?: string }> = [];
      for (const layer of wanted) {
        try {
          const reader = await readLayerTOC(source, layer, async () => {
            const tocSource = await openSource(tocImageReference(spec), options);
            try {
              return await fetchExternalTOC(tocSource, layer.digest);
            } finally {
              await tocSource.close();
            }
          });
          this.checkFormat(reader, layer.digest);
          rows.push({ layer: layer.digest, tocDigest: reader.tocDigest, toc: reader.tocJSON });
        } catch (err) {
          // A named layer must be eStargz; in a listing, other layers just show "-".
          if (layerDigest !== undefined || !(err instanceof EsgzError) || err.code !== 'BAD_FORMAT') throw err;
          rows.push({ layer: layer.digest, error: err.message });
        }
      }
      this.print(rows, flags['dump-toc']);
    } finally {
      await source.close();
    }
  }

  /** `--zstdchunked`: the layer must be zstd:chunked, not eStargz. */
  private checkFormat(reader: EstargzReader, where: string): void {
    if (this.flags.zstdchunked && reader.codec.name !== 'zstd')
      throw new EsgzError('BAD_FORMAT', `${where}: the layer is eStargz, not zstd:chunked (drop --zstdchunked)`);
  }

  private print(rows: Array<{ layer: string; tocDigest?: string; toc?: Buffer; error?: string }>, dump: boolean): void {
    if (this.flags.json) {
      writeJson(
        rows.map((r) => ({
          layer: r.layer,
          tocDigest: r.tocDigest ?? null,
          ...(dump && r.toc ? { toc: JSON.parse(r.toc.toString()) } : {}),
          ...(r.error ? { error: r.error } : {}),
        })),
      );
      return;
    }
    if (dump) {
      // Nothing to dump for a layer that is not eStargz: an error, not an empty success.
      const plain = rows.find((r) => !r.toc);
      if (plain) throw new EsgzError('BAD_FORMAT', `--dump-toc: layer ${plain.layer} is not eStargz: ${plain.error}`);
      for (const r of rows) process.stdout.write(`${r.toc!.toString()}\n`);
      return;
    }
    if (rows.length === 1 && rows[0]!.tocDigest) {
      process.stdout.write(`${rows[0]!.tocDigest}\n`);
      return;
    }
    for (const r of rows) process.stdout.write(`${r.layer} ${r.tocDigest ?? '-'}\n`);
  }
}
