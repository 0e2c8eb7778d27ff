// The one place transfer reports become output: a JSON document for `--json` (stable field
// names, for scripts) or a few human lines on stdout.
import type { TransferReport } from '../image/pipeline.js';
import { shortDigest } from '../oci/digest.js';
import type { OptimizeReport } from '../optimizer/optimize-image.js';
import { invokedAsCtrRemote } from './invocation.js';
import { formatBytes, formatDuration } from './progress.js';

export function writeJson(value: unknown, stream: NodeJS.WritableStream = process.stdout): void {
  stream.write(`${JSON.stringify(value, null, 2)}\n`);
}

/**
 * The result of a copy, convert or optimize without `--json`. Under `esgz`: the human summary on
 * stdout. Under `ctr-remote`: stdout carries only what ctr-remote prints (the TOC image's name
 * after "extra image:" when there is one, then the digest, so `DIGEST=$(ctr-remote ...)` works),
 * and the summary goes to stderr.
 */
export function writeSummary(summary: string, result: { digest: string; tocImage?: { reference: string } }): void {
  if (!invokedAsCtrRemote()) {
    process.stdout.write(summary);
    return;
  }
  process.stderr.write(summary);
  if (result.tocImage) process.stdout.write(`extra image: ${result.tocImage.reference}\n`);
  process.stdout.write(`${result.digest}\n`);
}

/** esgz's own report lines: stdout under `esgz`, stderr under `ctr-remote` (whose command prints none). */
export function writeReport(text: string): void {
  (invokedAsCtrRemote() ? process.stderr : process.stdout).write(text);
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

/** What a convert or optimize adds to the transfer's document: the layer format, the TOC image, the gzip backend. */
export interface ConversionFacts {
  format: string;
  /** The image holding the TOCs (`--estargz-external-toc`). */
  tocImage?: { reference: string; digest: string };
  backend?: string;
}

/** The `--json` document of a convert: the transfer's, plus the conversion's facts. */
export function conversionJson(
  report: TransferReport,
  command: string,
  facts: ConversionFacts,
): Record<string, unknown> {
  return {
    ...transferJson(report, command),
    format: facts.format,
    ...(facts.tocImage ? { tocImage: facts.tocImage } : {}),
    ...(facts.backend !== undefined ? { backend: facts.backend } : {}),
  };
}

/**
 * The `--json` document of an optimize: a convert's document (same names, same types), plus what
 * only optimize knows: `profile` (the workload run and its trace, per layer), the platforms
 * converted without a run, the record file written, and the time of each stage.
 */
export function optimizeJson(report: OptimizeReport, format: string): Record<string, unknown> {
  return {
    ...conversionJson(report.transfer, 'image optimize', {
      format,
      ...(report.tocImage ? { tocImage: report.tocImage } : {}),
    }),
    ...(report.profiled ? { profile: report.profiled } : {}),
    platformsNotProfiled: report.notProfiled,
    ...(report.recordOut ? { recordFile: report.recordOut } : {}),
    timings: report.timings,
  };
}

/** Human summary of an optimize: the workload run and its trace, then the transfer's summary. */
export function optimizeText(report: OptimizeReport): string {
  const lines: string[] = [];
  const p = report.profiled;
  if (p) {
    const stop = p.stopReason === 'exited' ? `exited with code ${p.exitCode}` : `stopped (${p.stopReason})`;
    lines.push(`workload: ${JSON.stringify(p.args)} ${stop} after ${formatDuration(p.durationMs)} (${p.rootfsMode})`);
    const coverage = `${(p.prefetchCoverage * 100).toFixed(1)}%`;
    lines.push(`files traced: ${p.filesTraced} (${formatBytes(p.bytesTraced)}), prefetch coverage ${coverage}`);
    if (p.runtimeFiles.length > 0) {
      const more = p.runtimeFiles.length > 5 ? `, … (${p.runtimeFiles.length} in all)` : '';
      const shown = p.runtimeFiles.slice(0, 5).join(', ') + more;
      const why = "read by the runtime before the workload started (prioritized after the workload's files)";
      lines.push(`  ${why}: ${shown}`);
    }
    for (const l of p.layers) {
      const landmark = l.landmarkOffset !== undefined ? `, landmark at ${l.landmarkOffset}` : '';
      const out = l.outputDigest ? ` -> ${shortDigest(l.outputDigest)} ${formatBytes(l.outputSize ?? 0)}` : '';
      const prioritized = `${l.prioritizedFiles} prioritized file(s), ${formatBytes(l.prioritizedBytes)}`;
      lines.push(`  layer ${l.index}: ${prioritized}${landmark}${out}`);
    }
  }
  if (report.recordOut) lines.push(`record: ${report.recordOut}`);
  if (report.tocImage) lines.push(`extra image: ${report.tocImage.reference} (${report.tocImage.digest})`);
  const t = report.timings;
  const profiled = t.profileMs !== undefined ? `profile ${formatDuration(t.profileMs)}, ` : '';
  lines.push(`time: ${profiled}convert ${formatDuration(t.convertMs ?? 0)}`);
  return `${lines.join('\n')}\n${transferText(report.transfer, 'optimized')}`;
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
  return rows
    .map(
      (row) =>
        `${row
          .map((cell, c) => cell.padEnd(widths[c]!))
          .join('  ')
          .trimEnd()}\n`,
    )
    .join('');
}
