#!/usr/bin/env node
// One entry point for both `esgz` and its `ctr-remote` alias.
import { Config, flush, run } from '@oclif/core';
import { commandTable, normalizeArgv } from '../dist/cli/argv.js';
import { handleFatal } from '../dist/cli/errors.js';

try {
  const config = await Config.load(import.meta.url);
  // ctr's spellings (urfave/cli) rewritten into oclif's: see src/cli/argv.ts.
  const { argv, debug } = normalizeArgv(process.argv.slice(2), commandTable(config), process.env);
  if (debug) process.env.DEBUG = ['esgz', process.env.DEBUG].filter(Boolean).join(',');
  await run(argv, config);
  await flush();
} catch (err) {
  handleFatal(err);
}
