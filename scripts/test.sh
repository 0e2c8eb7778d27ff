#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs what is missing, builds, checks types and
# lint (src/ and test/, with the import-boundary rule), then runs vitest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
npm run --silent typecheck
npm run --silent lint
npx vitest run "$@"
