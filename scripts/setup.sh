#!/usr/bin/env bash
# One command for a fresh Debian 12 machine (as root): system packages, npm packages,
# native pieces, build, then the sample job. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
npm run sample
