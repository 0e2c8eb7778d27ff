#!/usr/bin/env node
// One entry point for both `esgz` and its `ctr-remote` alias.
import { flush, run } from '@oclif/core';
import { handleFatal } from '../dist/cli/errors.js';

try {
  await run(process.argv.slice(2), import.meta.url);
  await flush();
} catch (err) {
  handleFatal(err);
}
