#!/usr/bin/env bash
# Throughput of DPO and FPA-DPO at Qwen2.5-1.5B's shape (random weights, nothing downloaded):
# step time, tokens/s, peak GPU memory, MFU. `--tiny`: a CPU smoke check of the script.
# `scripts/gpu_check.sh lm-head [args]`: the output layer alone, chunked log-probs vs fused
# linear–cross-entropy kernels (Liger, Cut Cross-Entropy), MFU: scripts/gpu_lm_head_check.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = lm-head ]; then shift; exec bash scripts/gpu_lm_head_check.sh "$@"; fi
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}" exec "$PY" scripts/gpu_check.py "$@"
