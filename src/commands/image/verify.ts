import { Args } from '@oclif/core';
import { BaseCommand } from '../../cli/base.js';
import { platformFlag, platformFromFlag, platformsFlags, registryFlags, transportOptions } from '../../cli/flags.js';
import { formatTable, writeJson } from '../../cli/output.js';
import { shortDigest } from '../../oci/digest.js';
import { formatBytes } from '../../cli/progress.js';
import { EsgzError } from '../../errors.js';
import { fetchExternalTOC, tocImageReference } from '../../convert/external-toc.js';
import { verifyLayer, type LayerVerification } from '../../convert/verify.js';
import { resolveImages } from '../../image/resolve.js';
import type { ImageSource } from '../../image/types.js';
import { openSource } from '../../image/transports/index.js';

export default class ImageVerify extends BaseCommand<typeof ImageVerify> {
  static override summary = 'Verify the eStargz and zstd:chunked layers of an image';
  static override description =
    "For every eStargz or zstd:chunked layer (any dialect: stargz-snapshotter's, containers/storage's current or pre-1.45 one, named in the DIALECT column): the TOC digest against the manifest annotations (toc.digest and/or the zstd:chunked manifest checksum), every chunk digest and file digest in the TOC, the diffID against the config, the uncompressed-size annotation, and the landmark. Layers that are not eStargz are listed as skipped. Prints a table (or --json) and exits non-zero when any check fails.";

  static override examples = [
    {
      description: 'Verify an image in a local registry',
      command: '<%= config.bin %> image verify --plain-http 127.0.0.1:5000/app:esgz',
    },
    {
      description: 'Verify an OCI layout image, JSON output',
      command: '<%= config.bin %> image verify --json oci:./app:esgz',
    },
    {
      description: 'Every platform of a multi-platform image',
      command: '<%= config.bin %> image verify --all-platforms registry.example.com/app:esgz',
    },
  ];

  static override args = {
    image: Args.string({
      description: 'image to verify (REGISTRY/REPO[:TAG|@DIGEST], oci:DIR[:TAG], docker-archive:FILE[:TAG])',
      required: true,
    }),
  };

  static override flags = {
    ...registryFlags,
    ...platformFlag,
    'all-platforms': platformsFlags['all-platforms'],
  };

  async run(): Promise<void> {
    const { args } = await this.parse(ImageVerify);
    const { flags } = this;
    const platform = platformFromFlag(flags);
    const transport = transportOptions(flags);
    const source = await openSource(args.image, transport);
    const results: Array<{ platform?: string; manifest: string; layers: LayerVerification[] }> = [];
    // Layers with an external TOC (STARGZEXTERNALTOC footer) find it in IMAGE-esgztoc, opened on demand.
    let tocImage: Promise<ImageSource> | undefined;
    const externalTOC = (digest: string) => async () => {
      tocImage ??= openSource(tocImageReference(args.image), transport);
      return fetchExternalTOC(await tocImage, digest);
    };
    try {
      const images = await resolveImages(source, {
        platform,
        allPlatforms: flags['all-platforms'],
      });
      for (const img of images) {
        const layers: LayerVerification[] = [];
        for (const [i, layer] of img.manifest.layers.entries()) {
          layers.push(
            await verifyLayer(source, layer, i, img.config.rootfs?.diff_ids?.[i], {
              externalTOC: externalTOC(layer.digest),
            }),
          );
        }
        results.push({ platform: img.platform, manifest: img.manifestDigest, layers });
      }
    } finally {
      await source.close();
      if (tocImage) await (await tocImage.catch(() => undefined))?.close();
    }
    const all = results.flatMap((r) => r.layers);
    const failed = all.filter((l) => l.status === 'failed');
    const verified = all.filter((l) => l.status === 'ok');
    if (flags.json) {
      writeJson({ image: args.image, ok: failed.length === 0, manifests: results });
    } else {
      for (const r of results) {
        process.stdout.write(`${r.platform ? `${r.platform} ` : ''}manifest ${r.manifest}\n`);
        const rows = [['LAYER', 'SIZE', 'FORMAT', 'DIALECT', 'TOC DIGEST', 'CHUNKS', 'LANDMARK', 'RESULT']];
        for (const l of r.layers) {
          rows.push([
            shortDigest(l.digest),
            formatBytes(l.size),
            l.format ?? '-',
            l.dialect ?? '-',
            l.tocDigest ? shortDigest(l.tocDigest) : '-',
            l.chunks !== undefined ? String(l.chunks) : '-',
            l.landmark ?? '-',
            l.status === 'ok' ? 'ok' : l.status === 'skipped' ? 'skipped' : 'FAILED',
          ]);
        }
        process.stdout.write(formatTable(rows));
        for (const l of r.layers) {
          for (const p of l.problems) process.stdout.write(`  layer ${shortDigest(l.digest)}: ${p}\n`);
          for (const n of l.notes) process.stdout.write(`  layer ${shortDigest(l.digest)}: note: ${n}\n`);
        }
      }
    }
    if (failed.length > 0) {
      throw new EsgzError('DIGEST_MISMATCH', `${failed.length} of ${all.length} layers failed verification`);
    }
    if (verified.length === 0) {
      throw new EsgzError('BAD_FORMAT', `${args.image}: no eStargz layers to verify`);
    }
  }
}
