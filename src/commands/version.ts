import { readFileSync } from 'node:fs';
import { BaseCommand } from '../cli/base.js';
import { defaultWorkerCount, libdeflateAvailable, selectGzipBackend } from '../estargz/gzip-pool.js';
import { isalAvailable, selectGunzipBackend } from '../image/gunzip.js';

export default class Version extends BaseCommand<typeof Version> {
  static override description = 'Print the esgz version and which compression backends are available';
  static override examples = ['<%= config.bin %> version', '<%= config.bin %> version --json'];

  async run(): Promise<void> {
    const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
    const libdeflate = libdeflateAvailable();
    const gzipBackend = chosenBackend(selectGzipBackend);
    const isal = isalAvailable();
    const gunzipBackend = chosenBackend(selectGunzipBackend);
    const info = {
      version: pkg.version,
      node: process.version,
      gzip: {
        backend: gzipBackend,
        libdeflate: libdeflate.available ? 'available' : `unavailable: ${libdeflate.error}`,
        workers: defaultWorkerCount(),
      },
      gunzip: {
        backend: gunzipBackend,
        isal: isal.available ? 'available' : `unavailable: ${isal.error}`,
      },
    };
    if (this.flags.json) this.printJson(info);
    else {
      this.log(`esgz ${info.version} (node ${info.node})`);
      this.log(`gzip backend: ${gzipBackend}${libdeflate.available ? '' : ` (libdeflate ${info.gzip.libdeflate})`}, ${info.gzip.workers} workers`);
      this.log(`gunzip backend: ${gunzipBackend}${isal.available ? '' : ` (ISA-L ${info.gunzip.isal})`}`);
    }
  }
}

/** The backend a selector picks, or why it cannot (an invalid ESGZ_*_BACKEND value). */
function chosenBackend(select: () => string): string {
  try {
    return select();
  } catch (err) {
    return `invalid (${(err as Error).message})`;
  }
}
