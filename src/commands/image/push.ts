import { Args } from '@oclif/core';
import { BaseCommand } from '../../cli/base.js';
import { invokedAsCtrRemote } from '../../cli/invocation.js';
import { platformsFlags, platformsFromFlags, registryFlags, storeFlags, transportOptions } from '../../cli/flags.js';
import { transferJson, transferText, writeJson } from '../../cli/output.js';
import { transferImage } from '../../image/pipeline.js';
import { openSink, openSource } from '../../image/transports/index.js';
import { LOCAL_PREFIX } from '../../image/transports/local.js';

export default class ImagePush extends BaseCommand<typeof ImagePush> {
  static override summary = 'Push an image of the local store to a registry';
  static override description = [
    'Streams the image the store names LOCAL to REMOTE (default: LOCAL itself, as a registry reference), blobs first and the manifest last. Every platform the store holds is pushed unless --platform says otherwise.',
    "Under the name ctr-remote the two names come in ctr's order, REMOTE [LOCAL] (`ctr image push <remote> [<local>]`), so scripts written for it push what they meant.",
  ].join('\n\n');

  static override examples = [
    {
      description: 'Push a pulled (or optimized into the store) image back under its own name',
      command: '<%= config.bin %> image push --plain-http localhost:5000/busybox:esgz',
    },
    {
      description: 'Push a local name to another registry reference',
      command: '<%= config.bin %> image push app:1 registry.example.com/team/app:1',
    },
  ];

  static override args = {
    local: Args.string({ description: 'Name in the local store (local: prefix optional)', required: true }),
    remote: Args.string({ description: 'Registry reference to push to (default: LOCAL)' }),
  };

  static override flags = {
    ...registryFlags,
    ...storeFlags,
    ...platformsFlags,
  };

  async run(): Promise<void> {
    const { args } = await this.parse(ImagePush);
    const { flags } = this;
    const options = { ...transportOptions(flags), unqualified: 'registry' as const };
    const [local, remote] =
      invokedAsCtrRemote() && args.remote !== undefined ? [args.remote, args.local] : [args.local, args.remote];
    const name = local.startsWith(LOCAL_PREFIX) ? local.slice(LOCAL_PREFIX.length) : local;
    const choice = platformsFromFlags(flags);
    const source = await openSource(`${LOCAL_PREFIX}${name}`, options);
    try {
      await this.interruptible(async (signal) => {
        const report = await transferImage({
          source,
          sink: await openSink(remote ?? name, options),
          ...choice,
          allPlatforms: choice.allPlatforms || choice.platforms === undefined,
          signal,
          progress: this.progress,
          onWarning: this.warning,
        });
        this.progress.stop();
        if (flags.json) writeJson(transferJson(report, 'image push'));
        else process.stdout.write(transferText(report, 'pushed'));
      }, 'interrupted; nothing was tagged at the destination');
    } finally {
      await source.close();
    }
  }
}
