import { Args, Flags } from '@oclif/core';
import { BaseCommand } from '../../cli/base.js';
import { registryFlags, transportOptions } from '../../cli/flags.js';
import { EsgzError } from '../../errors.js';
import { writeJson } from '../../cli/output.js';
import { probeRegistry, type ProbeReport } from '../../registry/probe.js';

export default class RegistryProbe extends BaseCommand<typeof RegistryProbe> {
  static override summary = 'Report what a registry supports for lazy pulls, and what esgz will do there';
  static override description = [
    'With HOST only: the API endpoint and its auth scheme. With HOST/REPO[:TAG]: the largest layer of that image is read with HEAD, a Range request and a multi-range request, and a redirect to storage (and the lifetime its signed URL states) is reported.',
    'With --push, a 1 KiB blob is also uploaded to REPO in PATCH chunks and mounted into REPO-esgz-probe, to check chunked upload and cross-repository mount: it writes to the registry.',
  ].join('\n\n');

  static override examples = [
    {
      description: 'What ghcr.io does for an image',
      command: '<%= config.bin %> registry probe ghcr.io/containerd/busybox:1.36',
    },
    {
      description: 'A local registry, uploads and mounts included, as JSON',
      command: '<%= config.bin %> registry probe --plain-http --push --json 127.0.0.1:5000/app:esgz',
    },
  ];

  static override args = {
    target: Args.string({ description: 'HOST or HOST/REPO[:TAG|@DIGEST]', required: true }),
  };

  // The host itself is probed: mirrors (--hosts-dir) and client TLS files do not apply.
  static override flags = {
    'plain-http': registryFlags['plain-http'],
    insecure: registryFlags.insecure,
    'registry-user': registryFlags['registry-user'],
    refresh: registryFlags.refresh,
    'http-trace': registryFlags['http-trace'],
    'http-dump': registryFlags['http-dump'],
    'http-read-timeout': registryFlags['http-read-timeout'],
    push: Flags.boolean({
      description: 'also check chunked upload and cross-repository mount (writes to the registry)',
      default: false,
    }),
  };

  async run(): Promise<void> {
    const { args } = await this.parse(RegistryProbe);
    if (!/^[^/\s]+(\/[^\s]+)?$/.test(args.target))
      throw new EsgzError('BAD_FLAG', `"${args.target}" is not HOST or HOST/REPO[:TAG|@DIGEST]`);
    const { credentials, ...options } = transportOptions(this.flags);
    const report = await probeRegistry(args.target, {
      ...options,
      ...(credentials !== undefined
        ? { credentials: typeof credentials === 'function' ? await credentials() : credentials }
        : {}),
      push: this.flags.push,
    });
    if (this.flags.json) writeJson(report);
    else this.log(describe(report));
  }
}

function describe(report: ProbeReport): string {
  const redirect = report.redirect;
  const lines: Array<[string, string | undefined]> = [
    ['registry', `${report.registry} (${report.endpoint}, auth: ${report.auth})`],
    ['blob', report.blob && `${report.repository}@${report.blob.digest} (${report.blob.size} bytes)`],
    ['HEAD', report.head],
    ['Range', report.range],
    ['multi-range', report.multiRange],
    [
      'redirects',
      redirect &&
        (redirect.redirected
          ? `to ${redirect.host}${redirect.lifetimeSeconds !== undefined ? `, signed for ${redirect.lifetimeSeconds} s` : ', lifetime not stated'}`
          : 'no'),
    ],
    ['chunked upload', report.chunkedUpload],
    ['cross-repo mount', report.crossRepoMount],
  ];
  const table = lines.filter(([, v]) => v !== undefined).map(([k, v]) => `${`${k}:`.padEnd(18)}${v}`);
  return [...table, 'esgz will:', ...report.plan.map((p) => `  - ${p}`)].join('\n');
}
