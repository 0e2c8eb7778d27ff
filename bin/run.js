#!/usr/bin/env node
// One entry point for both `esgz` and its `ctr-remote` alias.
import { execute } from '@oclif/core';
import { handleFatal } from '../dist/cli/errors.js';

await execute({ dir: import.meta.url }).catch(handleFatal);
