import { readFileSync } from 'node:fs';
import { BaseCommand } from '../cli/base.js';
import { writeJson } from '../cli/output.js';
import { defaultWorkerCount, libdeflateAvailable, selectGzipBackend } from '../estargz/gzip-pool.js';

export default class Version extends BaseCommand<typeof Version> {
  static override description = 'Print the esgz version and which compression backends are available';
  static override examples = ['<%= config.bin %> version', '<%= config.bin %> version --json'];

  async run(): Promise<void> {
    const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
    const libdeflate = libdeflateAvailable();
    let gzipBackend: string;
    try {
      gzipBackend = selectGzipBackend(this.environment.gzipBackend);
    } catch (err) {
      gzipBackend = `invalid (${(err as Error).message})`;
    }
    const info = {
      version: pkg.version,
      node: process.version,
      gzip: {
        backend: gzipBackend,
        libdeflate: libdeflate.available ? 'available' : `unavailable: ${libdeflate.error}`,
        workers: this.environment.workers ?? defaultWorkerCount(),
      },
    };
    if (this.flags.json) writeJson(info);
    else {
      this.log(`esgz ${info.version} (node ${info.node})`);
      this.log(
        `gzip backend: ${gzipBackend}${libdeflate.available ? '' : ` (libdeflate ${info.gzip.libdeflate})`}, ${info.gzip.workers} workers`,
      );
    }
  }
}
