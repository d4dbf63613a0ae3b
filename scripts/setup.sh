#!/usr/bin/env bash
# One-command set-up on a fresh machine: archlab, its dependencies and the test tools.
# torch is pinned to the CPU wheel first (on these machines it is cached on disk; with it in
# place the torch *range* in pyproject.toml pulls nothing more). Elsewhere, install the torch
# build you want (CUDA or CPU) first and skip that line with ARCHLAB_SKIP_TORCH=1.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ "${ARCHLAB_SKIP_TORCH:-0}" != 1 ]; then
  "$PY" -m pip install --quiet "torch==2.13.0"
fi
"$PY" -m pip install --quiet -e ".[dev,ray]"
# Optional system packages: Chromium (the report's browser test) and Fashion-MNIST.
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && [ "${ARCHLAB_SKIP_APT:-0}" != 1 ]; then
  (apt-get update -qq && apt-get install -y -qq chromium dataset-fashion-mnist >/dev/null) \
    || echo "setup: apt-get install of chromium/dataset-fashion-mnist failed; their tests will skip" >&2
fi
echo "archlab is set up: try 'archlab run zoo:quickstart'"
