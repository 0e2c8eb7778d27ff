// Shared plumbing for the benchmark scripts: repository paths, the TypeScript fixtures/harnesses
// compiled once for plain Node, timing with peak RSS, statistics and table formatting.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import { readFile, unlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const benchCache = join(repoRoot, 'bench', '.cache');
export const resultsDir = join(repoRoot, 'bench', 'results');
// ESGZ_BIN points the bench at another build of the CLI (e.g. a snapshot while others edit dist/).
export const esgzBin = process.env.ESGZ_BIN ?? join(repoRoot, 'bin', 'run.js');

/** The test fixtures and harnesses the bench shares with the tests (TypeScript; compiled here). */
const SHARED_TS = ['test/fixtures/debian.ts', 'test/fixtures/huge-layers.ts', 'test/harness/containerd.ts', 'test/harness/fault-proxy.ts'];

/**
 * Compiles the shared TypeScript helpers into bench/.cache/ts (Node 20 cannot run .ts) and
 * imports one of them. tsc is a dev dependency; compiling the three files takes ~2 s.
 */
let compiled = false;
export async function importShared(relPath) {
  const outDir = join(benchCache, 'ts');
  if (!compiled) {
    mkdirSync(outDir, { recursive: true });
    const tsc = join(repoRoot, 'node_modules', '.bin', 'tsc');
    const result = spawnSync(
      tsc,
      [
        '--outDir', outDir, '--rootDir', repoRoot, '--module', 'nodenext', '--moduleResolution', 'nodenext',
        '--target', 'es2022', '--skipLibCheck', '--types', 'node', '--noCheck',
        ...SHARED_TS.map((p) => join(repoRoot, p)),
      ],
      { encoding: 'utf8' },
    );
    if (result.status !== 0) throw new Error(`compiling ${SHARED_TS.join(', ')} failed:\n${result.stdout}${result.stderr}`);
    compiled = true;
  }
  return import(join(outDir, relPath.replace(/\.ts$/, '.js')));
}

/** Jiffies the machine spent idle and in total since boot (first line of /proc/stat). */
function cpuJiffies() {
  const fields = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  return { idle: fields[3] + (fields[4] ?? 0), total: fields.reduce((a, b) => a + b, 0) };
}

/**
 * Waits until the machine is quiet before a timed run: dirty pages written back (`sync`) and the
 * CPUs at least 90% idle over 250 ms, for at most 10 s. The previous run's aftermath (writeback
 * of its output, a daemon's clean-up) would otherwise land in whichever tool runs next.
 */
export async function settle() {
  spawnSync('sync');
  const deadline = performance.now() + 10_000;
  while (performance.now() < deadline) {
    const before = cpuJiffies();
    await new Promise((resolve) => setTimeout(resolve, 250));
    const after = cpuJiffies();
    const total = after.total - before.total;
    if (total > 0 && (after.idle - before.idle) / total >= 0.9) return;
  }
}

/**
 * Runs a command under GNU time, returns wall seconds (our clock, sub-ms), CPU seconds (user +
 * system, less sensitive than wall time to other load on a shared machine) and peak RSS in bytes
 * (the largest of the process and its waited-for children). Never throws: `ok` says whether it
 * exited 0, `error` holds the last stderr lines when it did not.
 */
export async function measure(command, args, options = {}) {
  const timeFile = join(tmpdir(), `esgz-bench-time-${process.pid}-${Math.random().toString(36).slice(2)}`);
  const started = performance.now();
  const result = await runProcess('/usr/bin/time', ['-f', '%U %S %M', '-o', timeFile, command, ...args], options);
  const seconds = (performance.now() - started) / 1000;
  let rssBytes;
  let cpuSeconds;
  try {
    // GNU time may print "Command exited with non-zero status N" first; the format line is last.
    const lines = (await readFile(timeFile, 'utf8')).trim().split('\n');
    const [user, system, rssKiB] = lines[lines.length - 1].split(' ').map(Number);
    rssBytes = rssKiB * 1024;
    cpuSeconds = user + system;
    await unlink(timeFile);
  } catch {
    rssBytes = undefined;
  }
  return { ok: result.code === 0, seconds, cpuSeconds, rssBytes, stdout: result.stdout, error: result.code === 0 ? undefined : lastLines(result.stderr || result.stdout, 2) };
}

/** Runs several commands at once (the all-cores floor); wall time of the whole group. */
export async function measureParallel(commands, options = {}) {
  const started = performance.now();
  const results = await Promise.all(commands.map(([command, args]) => runProcess(command, args, options)));
  const seconds = (performance.now() - started) / 1000;
  const failed = results.find((r) => r.code !== 0);
  return { ok: !failed, seconds, error: failed ? lastLines(failed.stderr, 2) : undefined };
}

export function runProcess(command, args, options = {}) {
  return new Promise((resolve) => {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...options.env }, cwd: options.cwd });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c) => {
      stdout = (stdout + c.toString()).slice(-200_000);
    });
    child.stderr.on('data', (c) => {
      stderr = (stderr + c.toString()).slice(-20_000);
      if (options.echo) process.stderr.write(c);
    });
    const timer = options.timeoutMs ? setTimeout(() => child.kill('SIGKILL'), options.timeoutMs) : undefined;
    child.on('error', (err) => {
      clearTimeout(timer);
      resolve({ code: -1, stdout, stderr: `${command}: ${err.message}` });
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? (signal ? 128 : -1), stdout, stderr: signal ? `${stderr}\nkilled by ${signal}` : stderr });
    });
  });
}

/** Runs a command that must succeed (setup steps); throws with its stderr otherwise. */
export async function mustRun(command, args, options = {}) {
  const result = await runProcess(command, args, options);
  if (result.code !== 0) throw new Error(`${command} ${args.join(' ')} failed (exit ${result.code}): ${lastLines(result.stderr || result.stdout, 5)}`);
  return result.stdout;
}

function lastLines(text, n) {
  return (text ?? '').trim().split('\n').filter(Boolean).slice(-n).join(' | ').slice(0, 300);
}

/** Runs `fn` `runs` times (after `prepare` each time, untimed); median, min, max of the samples. */
export async function repeat(runs, fn, prepare) {
  const samples = [];
  for (let i = 0; i < runs; i++) {
    if (prepare) await prepare(i);
    const sample = await fn(i);
    samples.push(sample);
    if (!sample.ok) break;
  }
  return summarize(samples);
}

export function summarize(samples) {
  const failed = samples.find((s) => !s.ok);
  if (failed) return { ok: false, error: failed.error, runs: samples.length };
  const times = samples.map((s) => s.seconds).sort((a, b) => a - b);
  const rss = samples.map((s) => s.rssBytes).filter((v) => v !== undefined);
  const cpu = samples.map((s) => s.cpuSeconds).filter((v) => v !== undefined).sort((a, b) => a - b);
  const sizes = samples.map((s) => s.outputBytes).filter((v) => v !== undefined);
  return {
    ok: true,
    runs: samples.length,
    median: median(times),
    min: times[0],
    max: times[times.length - 1],
    cpuSeconds: cpu.length ? median(cpu) : undefined,
    rssBytes: rss.length ? Math.max(...rss) : undefined,
    outputBytes: sizes.length ? sizes[sizes.length - 1] : undefined,
    extra: samples[samples.length - 1].extra,
    samples: samples.map((s) => ({ seconds: s.seconds, cpuSeconds: s.cpuSeconds })),
  };
}

export function median(sorted) {
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

export const MB = 1_000_000;
export const MiB = 1 << 20;
export const fmtSeconds = (s) => (s === undefined ? '' : s < 10 ? s.toFixed(2) : s.toFixed(1));
export const fmtMB = (b) => (b === undefined ? '' : (b / MB).toFixed(2));
export const fmtMiB = (b) => (b === undefined ? '' : (b / MiB).toFixed(0));

/** "median (min-max)" or the reason there is no number. */
export function fmtTiming(r) {
  if (!r) return '-';
  if (r.notBuilt) return 'n/a (not built)';
  if (r.skipped) return `n/a (${r.skipped})`;
  if (!r.ok) return `failed: ${r.error ?? 'unknown'}`.slice(0, 60);
  return r.runs > 1 ? `${fmtSeconds(r.median)} (${fmtSeconds(r.min)}-${fmtSeconds(r.max)})` : fmtSeconds(r.median);
}

/** Plain-text table with left-aligned first column and right-aligned others. */
export function formatTable(header, rows) {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => String(r[i] ?? '').length)));
  const line = (cells) => cells.map((c, i) => (i === 0 ? String(c ?? '').padEnd(widths[i]) : String(c ?? '').padStart(widths[i]))).join('  ');
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}

export function fileSize(path) {
  return existsSync(path) ? statSync(path).size : undefined;
}

/** Sum of layer sizes of the image tagged `tag` in an OCI layout (what a registry would store). */
export function ociLayoutImageSize(layoutDir, tag) {
  const index = JSON.parse(readFileSync(join(layoutDir, 'index.json'), 'utf8'));
  const found = tag ? index.manifests.find((m) => m.annotations?.['org.opencontainers.image.ref.name'] === tag) : index.manifests[0];
  if (!found) return undefined;
  const blob = (digest) => readFileSync(join(layoutDir, 'blobs', ...digest.split(':')), 'utf8');
  let manifest = JSON.parse(blob(found.digest));
  if (manifest.manifests) manifest = JSON.parse(blob(manifest.manifests[0].digest));
  return manifest.layers.reduce((sum, layer) => sum + layer.size, 0);
}

/** Whether `esgz ARGS --help` works in the built CLI, i.e. the command has landed. */
const commandCache = new Map();
export async function esgzHas(commandWords) {
  const key = commandWords.join(' ');
  if (!commandCache.has(key)) {
    const result = await runProcess(process.execPath, [esgzBin, ...commandWords, '--help']);
    commandCache.set(key, result.code === 0);
  }
  return commandCache.get(key);
}

/** Whether the built CLI's help for `commandWords` mentions `flag` (a flag that has landed). */
export async function esgzHasFlag(commandWords, flag) {
  const result = await runProcess(process.execPath, [esgzBin, ...commandWords, '--help']);
  return result.code === 0 && result.stdout.includes(flag);
}

export function log(line) {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${line}\n`);
}
