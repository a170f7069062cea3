#!/usr/bin/env bash
# GPU plan (issue 17): the output layer's forward + backward on a lent GPU machine — the chunked
# log-probs against fused linear–cross-entropy kernels (Liger-Kernel, Cut Cross-Entropy) and naive
# full logits: time, peak GPU memory, MFU, accuracy against fp32 (benchmarks/gpu_lm_head.py).
#
#   scripts/gpu_check.sh lm-head           # the same as scripts/gpu_lm_head_check.sh
#   scripts/gpu_lm_head_check.sh --quick   # the Python part on CPU, toy size (a smoke check)
#
# Works offline. liger-kernel (>= 0.8.2) and cut-cross-entropy are optional: where they are not
# installed their variants are reported as skipped. To bring them to a machine without network,
# download their wheels beforehand (`pip download --no-deps liger-kernel cut-cross-entropy -d wheels`;
# both are pure Python on Triton, which comes with torch) and set WHEELS=wheels: the script runs
# `pip install --no-index --no-deps wheels/*.whl` first (into /tmp/site, put on PYTHONPATH).
# Extra arguments go to benchmarks/gpu_lm_head.py. Everything is bounded by GPU_CHECK_LIMIT_S
# (default 450 s, under 8 minutes). With OUT set, the table and the log are written to $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
LIMIT=${GPU_CHECK_LIMIT_S:-450}
if [ -n "${WHEELS:-}" ]; then
  "$PY" -m pip install -q --no-index --no-deps --target /tmp/site "$WHEELS"/*.whl \
    && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH} || echo "installing $WHEELS/*.whl failed: going on without"
fi
echo "== GPUs"; nvidia-smi -L 2>&1 || echo "nvidia-smi: not available"
echo "== versions"
"$PY" -c 'import torch; print("torch", torch.__version__, "| CUDA", torch.version.cuda, "| GPU available:", torch.cuda.is_available())'
ARGS=(--budget-s "$((LIMIT - 150))")
LOG=/dev/null
if [ -n "${OUT:-}" ]; then
  mkdir -p "$OUT"; ARGS+=(--out "$OUT/gpu_lm_head.md"); LOG=$OUT/gpu_lm_head.log
fi
echo "== benchmarks/gpu_lm_head.py (at most ${LIMIT} s)"
PYTHONUNBUFFERED=1 PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}" timeout -k 10 "$LIMIT" \
  "$PY" benchmarks/gpu_lm_head.py "${ARGS[@]}" "$@" 2>&1 | tee "$LOG"
rc=$?
[ "$rc" = 124 ] && echo "gpu_lm_head.py stopped at the ${LIMIT} s bound: rerun with fewer --vocabs/--tokens/--hiddens"
exit "$rc"
