// The mount table as this process sees it, and unmounting: one reader of /proc/self/mountinfo
// for everything that must never delete through a mount or leave one behind.
import { readFileSync, realpathSync } from 'node:fs';
import { EsgzError } from '../errors.js';

/** Mount points of this mount namespace (field 5 of /proc/self/mountinfo, octal escapes decoded). */
export function mountPoints(): string[] {
  let table: string;
  try {
    table = readFileSync('/proc/self/mountinfo', 'utf8');
  } catch {
    return [];
  }
  return (
    table
      .split('\n')
      .map((line) => line.split(' ')[4])
      .filter((p): p is string => p !== undefined)
      // mountinfo escapes space, tab, newline and backslash as octal.
      .map((p) => p.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8))))
  );
}

/** Mount points at or under `dir` (symlinks in `dir` resolved), deepest first. */
export function mountsUnder(dir: string): string[] {
  let real = dir;
  try {
    real = realpathSync(dir);
  } catch {
    // Gone or unreadable: compare the path as given.
  }
  return mountPoints()
    .filter((p) => p === real || p.startsWith(`${real}/`))
    .sort((a, b) => b.length - a.length);
}

/** True when `path` itself is a mount point. */
export function isMounted(path: string): boolean {
  return mountPoints().includes(path);
}

const UNMOUNT_ATTEMPTS = 10;

/** Unmounts `target`, retrying while it is busy, lazily as a last resort. */
export async function unmount(target: string): Promise<void> {
  // Loaded here: execa costs start-up time for commands that never unmount.
  const { execa } = await import('execa');
  let lastError = '';
  for (let attempt = 0; attempt < UNMOUNT_ATTEMPTS; attempt++) {
    const result = await execa('umount', [target], { reject: false, stdin: 'ignore' });
    if (result.exitCode === 0) return;
    lastError = String(result.stderr).trim();
    if (/not mounted|no mount point/i.test(lastError)) return;
    await new Promise((r) => setTimeout(r, 100 * (attempt + 1)));
  }
  const lazy = await execa('umount', ['-l', target], { reject: false, stdin: 'ignore' });
  if (lazy.exitCode !== 0) {
    throw new EsgzError('RUNTIME', `cannot unmount ${target}: ${lastError}`);
  }
}
