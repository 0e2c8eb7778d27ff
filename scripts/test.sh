#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs what is missing, builds, runs vitest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
npx vitest run "$@"
