// Suite-wide setup: services the integration tests share.
// The registry: tests reach it with `registryAddress()` from test/harness/registry.ts (or `inject('registry')`).
import type { TestProject } from 'vitest/node';
import { startRegistry } from './registry.js';

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const registry = await startRegistry();
  project.provide('registry', registry.address);
  return async () => {
    await registry.stop();
  };
}
