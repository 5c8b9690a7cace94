#!/usr/bin/env bash
# Create .venv with edgepack and its packing + test extras. Idempotent and quick when nothing changed.
# torch is installed first and pinned: an unpinned torch resolves to a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
# The browser device (Chromium + pinned npm packages): its tests skip with a one-line reason where this fails.
./scripts/setup_web.sh || echo "setup.sh: scripts/setup_web.sh failed: the browser tests will skip (no Chromium or npm packages)" >&2
stamp=.venv/.edgepack-setup
if [ -f "$stamp" ] && [ "$stamp" -nt pyproject.toml ] && [ "$stamp" -nt scripts/setup.sh ]; then
  exit 0
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install -q --disable-pip-version-check "torch==2.13.0"
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[pack,executorch,search,dev]"
.venv/bin/python -c "import torch, sys; sys.exit(0 if torch.__version__.startswith('2.13.0') else 'torch is ' + torch.__version__ + ', expected 2.13.0')"
touch "$stamp"
