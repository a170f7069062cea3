"""AdamW step time on CPU: torch's default (a for-loop on CPU) vs foreach vs fused (the project's default).

On CPU torch's defaults pick the per-parameter for-loop implementation (foreach is the default only
for CUDA tensors). ``fpa.optim.AdamW`` (``optimizer.fused: null``) takes the fused kernel wherever every
parameter allows it (issue 17), as TRL does (transformers' ``adamw_torch_fused``). Same parameters and
gradients, steps interleaved, median of rounds.

    PYTHONPATH=src .venv/bin/python benchmarks/optimizer_step.py            # the ~60M model of the other scripts
    PYTHONPATH=src .venv/bin/python benchmarks/optimizer_step.py --quick
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

SIZES = {"tiny": dict(vocab=100, hidden=128, layers=4, heads=4, intermediate=384, tie=True),
         "mid": dict(vocab=32000, hidden=512, layers=8, heads=8, intermediate=1536, tie=False)}


def params_of(size: dict):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.for_model("llama", vocab_size=size["vocab"], hidden_size=size["hidden"],
                               intermediate_size=size["intermediate"], num_hidden_layers=size["layers"],
                               num_attention_heads=size["heads"], num_key_value_heads=size["heads"],
                               tie_word_embeddings=size["tie"])
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(cfg)


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=["tiny", "mid"], choices=sorted(SIZES))
    p.add_argument("--repeats", type=int, default=9)
    args = C.parse_args(p, argv)
    C.quiet()
    return C.run_with_threads(run, args, collect_peak=None)


def run(args) -> str:
    import torch

    sizes = {"toy": dict(vocab=64, hidden=16, layers=1, heads=2, intermediate=32, tie=True)} if args.quick else \
        {m: SIZES[m] for m in args.models}
    rows = []
    for name, size in sizes.items():
        variants = {"AdamW() — torch's default on CPU (for-loop)": {}, "AdamW(foreach=True)": {"foreach": True},
                    "AdamW(fused=True) — the project's default, and TRL's": {"fused": True}}
        models, opts = {}, {}
        for v, kw in variants.items():
            m = params_of(size)
            for q in m.parameters():
                q.grad = torch.randn_like(q) * 1e-3
            models[v], opts[v] = m, torch.optim.AdamW(m.parameters(), lr=1e-5, weight_decay=0.0, **kw)
        n = sum(q.numel() for q in models[next(iter(variants))].parameters())
        rounds = C.interleaved({v: opts[v].step for v in variants}, warmup=1, repeats=3 if args.quick else args.repeats)
        base = rounds[next(iter(variants))]
        for v in variants:
            rows.append([f"{name} ({n / 1e6:.1f}M params, {len(list(models[v].parameters()))} tensors)", v,
                         1e3 * C.seg(rounds[v]), C.ratio_text(rounds[v], base)])
    return C.table("AdamW step on CPU", ["model", "optimizer", "step ms", "vs torch's default (paired)"], rows,
                   note=f"Machine: {C.machine()}. Median of interleaved rounds after a warm-up step.")


if __name__ == "__main__":
    main()
