// Per-blob progress bars on stderr, drawn only when stderr is a terminal (so logs, pipes and
// `--json` consumers never see escape codes). A small ANSI renderer: it redraws the block of
// active bars in place at most ~8 times a second and prints one line per finished blob.
import type { TransferProgress } from '../image/pipeline.js';

interface Bar {
  label: string;
  total: number | undefined;
  done: number;
  startedAt: number;
}

const REDRAW_MS = 125;
const BAR_WIDTH = 24;

export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${unit === 0 ? value.toFixed(0) : value.toFixed(1)} ${units[unit]}`;
}

export function formatDuration(ms: number): string {
  return ms < 1000 ? `${ms} ms` : `${(ms / 1000).toFixed(1)} s`;
}

/** A no-op when `stream` is not a TTY; otherwise live bars. Call `stop()` before printing results. */
export class ProgressBars implements TransferProgress {
  private readonly bars = new Map<string, Bar>();
  private drawnLines = 0;
  private timer: NodeJS.Timeout | undefined;
  private readonly enabled: boolean;

  constructor(
    private readonly stream: NodeJS.WriteStream = process.stderr,
    enabled?: boolean,
  ) {
    this.enabled = enabled ?? (stream.isTTY === true && process.env.TERM !== 'dumb');
  }

  start(id: string, label: string, total: number | undefined): void {
    if (!this.enabled) return;
    this.bars.set(id, { label, total, done: 0, startedAt: Date.now() });
    this.schedule();
  }

  update(id: string, bytes: number): void {
    const bar = this.bars.get(id);
    if (!bar) return;
    bar.done = bytes;
    this.schedule();
  }

  finish(id: string, note?: string): void {
    const bar = this.bars.get(id);
    if (!bar) return;
    this.bars.delete(id);
    this.clear();
    const size = bar.total ?? bar.done;
    this.stream.write(
      `${bar.label}  ${note ?? 'done'}  ${formatBytes(size)} in ${formatDuration(Date.now() - bar.startedAt)}\n`,
    );
    this.draw();
  }

  /** Removes the live bars (call before writing the final summary or an error). */
  stop(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.clear();
    this.bars.clear();
  }

  private schedule(): void {
    if (this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.draw();
    }, REDRAW_MS);
    this.timer.unref();
  }

  private clear(): void {
    if (!this.enabled || this.drawnLines === 0) return;
    // Move up over the block and erase to the end of the screen.
    this.stream.write(`\x1b[${this.drawnLines}F\x1b[J`);
    this.drawnLines = 0;
  }

  private draw(): void {
    if (!this.enabled) return;
    this.clear();
    const width = Math.max(40, (this.stream.columns ?? 80) - 1);
    const lines = [...this.bars.values()].map((bar) => renderBar(bar, width));
    if (lines.length > 0) this.stream.write(`${lines.join('\n')}\n`);
    this.drawnLines = lines.length;
  }
}

function renderBar(bar: Bar, width: number): string {
  const seconds = Math.max(0.001, (Date.now() - bar.startedAt) / 1000);
  const rate = `${formatBytes(bar.done / seconds)}/s`;
  const amount =
    bar.total !== undefined ? `${formatBytes(bar.done)} / ${formatBytes(bar.total)}` : formatBytes(bar.done);
  const fraction = bar.total ? Math.min(1, bar.done / bar.total) : 0;
  const filled = Math.round(fraction * BAR_WIDTH);
  const gauge = bar.total !== undefined ? `[${'='.repeat(filled)}${' '.repeat(BAR_WIDTH - filled)}]` : '';
  const line = `${bar.label} ${gauge} ${amount}  ${rate}`;
  return line.length > width ? line.slice(0, width) : line;
}
