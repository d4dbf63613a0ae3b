#!/usr/bin/env bash
# One-command set-up on a fresh machine: archlab, its dependencies and the test tools.
# torch is pinned to the CPU wheel first (on these machines it is cached on disk; with it in
# place the torch *range* in pyproject.toml pulls nothing more). Elsewhere, install the torch
# build you want (CUDA or CPU) first and skip that line with ARCHLAB_SKIP_TORCH=1.
# Each step says what it does before it starts and how long it took when it ends (apt's
# Chromium alone can take minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
STEPS=3
STEP=0
STARTED=$SECONDS

# step "what it does" command...: run one step, announced first, timed after.
step() {
  local what=$1 began=$SECONDS
  shift
  STEP=$((STEP + 1))
  echo "setup [$STEP/$STEPS] $what ..."
  "$@"
  echo "setup [$STEP/$STEPS] done in $((SECONDS - began)) s"
}

skip() {
  STEP=$((STEP + 1))
  echo "setup [$STEP/$STEPS] skipped: $1"
}

apt_packages() {
  echo "setup:   apt-get update"
  apt-get update -qq
  echo "setup:   apt-get install chromium dataset-fashion-mnist (the slow part: minutes)"
  apt-get install -y -qq chromium dataset-fashion-mnist >/dev/null
}

optional_apt() {
  apt_packages || echo "setup: apt-get install of chromium/dataset-fashion-mnist failed; their" \
    "tests will skip" >&2
}

if [ "${ARCHLAB_SKIP_TORCH:-0}" != 1 ]; then
  step "pip: torch==2.13.0 (CPU wheel)" "$PY" -m pip install --quiet "torch==2.13.0"
else
  skip "torch (ARCHLAB_SKIP_TORCH=1: the torch already installed is used)"
fi
step "pip: archlab and its dependencies (-e .[dev,ray,notebook,tracking])" "$PY" -m pip install --quiet -e ".[dev,ray,notebook,tracking]"
# Optional system packages: Chromium (the report's browser test) and Fashion-MNIST.
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && [ "${ARCHLAB_SKIP_APT:-0}" != 1 ]; then
  step "apt: Chromium (report browser test) and Debian's Fashion-MNIST" optional_apt
else
  skip "apt packages (needs root and apt-get; ARCHLAB_SKIP_APT=1 skips them): their tests skip"
fi
echo "archlab is set up in $((SECONDS - STARTED)) s: try 'archlab run zoo:quickstart'"
