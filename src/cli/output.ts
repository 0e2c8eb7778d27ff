// The one place transfer reports become output: a JSON document for `--json` (stable field
// names, for scripts) or a few human lines on stdout.
import type { TransferReport } from '../image/pipeline.js';
import { formatBytes, formatDuration } from './progress.js';

export function writeJson(value: unknown, stream: NodeJS.WritableStream = process.stdout): void {
  stream.write(`${JSON.stringify(value, null, 2)}\n`);
}

/** The `--json` document of a copy/convert/optimize. */
export function transferJson(report: TransferReport, command: string): Record<string, unknown> {
  return {
    command,
    source: report.source,
    destination: report.destination,
    transform: report.transform,
    digest: report.root.digest,
    mediaType: report.root.mediaType,
    size: report.root.size,
    sourceDigest: report.sourceRoot.digest,
    durationMs: report.durationMs,
    manifests: report.manifests.map((m) => ({
      ...(m.platform !== undefined ? { platform: m.platform } : {}),
      digest: m.output.digest,
      mediaType: m.output.mediaType,
      size: m.output.size,
      sourceDigest: m.source.digest,
      config: { digest: m.config.output.digest, size: m.config.output.size, sourceDigest: m.config.source.digest },
      layers: m.layers.map((l) => ({
        index: l.index,
        input: l.input,
        output: l.output,
        diffID: l.diffID,
        changed: l.changed,
        existed: l.existed,
        durationMs: l.durationMs,
        ...(l.transform !== undefined ? { report: l.transform } : {}),
      })),
    })),
  };
}

/** Human summary: what was written where, the root digest, per-platform sizes. */
export function transferText(report: TransferReport, verb: string): string {
  const lines: string[] = [];
  for (const m of report.manifests) {
    const bytes = m.layers.reduce((sum, l) => sum + l.output.size, 0);
    const changed = m.layers.filter((l) => l.changed).length;
    const reused = m.layers.filter((l) => l.existed).length;
    const parts = [`${m.layers.length} layer${m.layers.length === 1 ? '' : 's'}`, formatBytes(bytes)];
    if (report.transform !== 'identity') parts.push(`${changed} rewritten`);
    if (reused > 0) parts.push(`${reused} already present`);
    lines.push(`${m.platform ?? 'image'}: ${m.output.digest} (${parts.join(', ')})`);
  }
  lines.push(`${verb} ${report.source} -> ${report.destination} in ${formatDuration(report.durationMs)}`);
  lines.push(`digest: ${report.root.digest}`);
  return `${lines.join('\n')}\n`;
}

/** Left-aligned columns two spaces apart, the first row a header (ctr's table style). */
export function formatTable(rows: readonly (readonly string[])[]): string {
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((row) => row[c]!.length)));
  return rows.map((row) => `${row.map((cell, c) => cell.padEnd(widths[c]!)).join('  ').trimEnd()}\n`).join('');
}
