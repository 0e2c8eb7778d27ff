// A throwaway Debian `docker-registry` (CNCF distribution) on 127.0.0.1 for the benchmarks.
// The test harness has its own (test/harness/registry.ts) tied to vitest's inject(); this one is
// plain Node so `npm run bench` needs no test runner.
import { spawn } from 'node:child_process';
import { mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export async function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

export async function startBenchRegistry() {
  const dir = mkdtempSync(join(tmpdir(), 'esgz-bench-registry-'));
  const port = await freePort();
  const address = `127.0.0.1:${port}`;
  const config = {
    version: 0.1,
    log: { level: 'warn', accesslog: { disabled: true } },
    storage: { filesystem: { rootdirectory: join(dir, 'storage') }, delete: { enabled: true } },
    http: { addr: address, secret: 'esgz-bench' },
  };
  writeFileSync(join(dir, 'config.yml'), JSON.stringify(config));
  const logFd = openSync(join(dir, 'registry.log'), 'a');
  const child = spawn('/usr/bin/docker-registry', ['serve', join(dir, 'config.yml')], { stdio: ['ignore', logFd, logFd] });
  let exited = false;
  child.on('exit', () => (exited = true));
  const killOnExit = () => child.kill('SIGKILL');
  process.once('exit', killOnExit);

  const stop = async () => {
    process.removeListener('exit', killOnExit);
    if (!exited) {
      child.kill('SIGTERM');
      await new Promise((resolve) => {
        const timer = setTimeout(() => {
          child.kill('SIGKILL');
          resolve();
        }, 5000);
        child.once('exit', () => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    rmSync(dir, { recursive: true, force: true });
  };

  const deadline = Date.now() + 20_000;
  for (;;) {
    if (exited) throw new Error(`docker-registry exited at start-up; see ${join(dir, 'registry.log')}`);
    try {
      const response = await fetch(`http://${address}/v2/`);
      if (response.status === 200) break;
    } catch {
      /* not listening yet */
    }
    if (Date.now() > deadline) {
      await stop();
      throw new Error('docker-registry did not answer /v2/ within 20 s');
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return { address, dir, stop };
}
