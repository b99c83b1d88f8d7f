#!/usr/bin/env bash
# Create .venv (if needed) and install harmcore with everything the default run and the
# tests need. Idempotent: does nothing when the install files have not changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
VENV=${VENV:-.venv}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
stamp="$VENV/.harmcore-install"
want=$(cat pyproject.toml requirements/*.txt scripts/install.sh | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
"$VENV/bin/python" -m pip install -q -U pip
if ! command -v nvidia-smi >/dev/null 2>&1; then
  # CPU machine: pin the CPU wheel (a plain `torch` would pull a multi-GB CUDA build).
  "$VENV/bin/python" -m pip install -q "torch==2.13.0"
fi
"$VENV/bin/python" -m pip install -q -e ".[dev]"
"$VENV/bin/python" -m pip install -q --no-deps -r requirements/embedded.txt
echo "$want" > "$stamp"
