#!/usr/bin/env bash
# Create .venv and install the project with the right torch build, idempotently.
#   - a machine with an NVIDIA GPU gets PyPI's default (CUDA) torch;
#   - a machine without one gets torch==2.13.0 (on this project's CPU machines pip takes the CPU
#     build from a file on disk; elsewhere set FPA_TORCH_INDEX to a CPU wheel index to avoid CUDA);
#   - FPA_TORCH_SPEC overrides the requirement, e.g. FPA_TORCH_SPEC='torch==2.14.1'.
# Torch is installed first, so the project's own `torch>=2.4` requirement is already met.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
VPY=.venv/bin/python
if ! "$VPY" -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    spec=${FPA_TORCH_SPEC:-torch}
  else
    spec=${FPA_TORCH_SPEC:-torch==2.13.0}
  fi
  echo "install.sh: installing $spec"
  "$VPY" -m pip install -q ${FPA_TORCH_INDEX:+--index-url "$FPA_TORCH_INDEX"} "$spec"
fi
# Reinstall the project only when its requirements changed since the last install.
stamp=.venv/.fpa-installed
want=$(sha1sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  "$VPY" -m pip install -q -e ".[dev]"
  echo "$want" > "$stamp"
fi
