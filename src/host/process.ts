// Which process owns a lock, a pin or a temp dir: its pid and start time, since pids get reused
// and the pair does not.
import { readFileSync } from 'node:fs';

/** Start time of a process (field 22 of /proc/PID/stat, clock ticks since boot), or undefined when it is gone. */
export function processStartTime(pid: number): string | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // Counted after the ")" that ends the command name (which may hold spaces and parentheses).
  return text.slice(text.lastIndexOf(')') + 2).split(' ')[19];
}

/** `pid start`, or undefined when the process is gone. */
export function processIdentity(pid: number = process.pid): string | undefined {
  const start = processStartTime(pid);
  return start === undefined ? undefined : `${pid} ${start}`;
}

/** True when the process an identity names (`pid start`, or a bare pid from older records) still runs. */
export function identityAlive(identity: string): boolean {
  const [pid, start] = identity.trim().split(' ');
  if (!pid || !/^\d+$/.test(pid)) return false;
  const current = processStartTime(Number(pid));
  return current !== undefined && (start === undefined || current === start);
}
