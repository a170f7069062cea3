#!/usr/bin/env bash
# Throughput of DPO and FPA-DPO at Qwen2.5-1.5B's shape (random weights, nothing downloaded):
# step time, tokens/s, peak GPU memory, MFU. `--tiny`: a CPU smoke check of the script.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}" exec "$PY" scripts/gpu_check.py "$@"
