"""Generation throughput of the ``hf`` backend (transformers ``generate``, KV cache) on the tiny model.

The embedded tiny model (conf/model/tiny.yaml sizes, randomly initialised, char tokenizer) samples
``max_new_tokens`` tokens (temperature 1) for arithmetic-style prompts at several batch sizes.
tokens/s counts the completion tokens the backend returns (up to and including EOS), as
``HFGenerator.tokens_per_second`` does. Batch sizes alternate round by round (median of rounds).

    PYTHONPATH=src .venv/bin/python benchmarks/generation_throughput.py
    PYTHONPATH=src .venv/bin/python benchmarks/generation_throughput.py --batch-sizes 1 8 64 256 --rounds 3
    PYTHONPATH=src .venv/bin/python benchmarks/generation_throughput.py --quick
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402


def prompts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [f"{rng.randint(10, 999)}+{rng.randint(10, 999)}=\n" for _ in range(n)]


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 64, 256])
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--min-prompts", type=int, default=8, help="prompts per round at least (several small batches)")
    args = C.parse_args(p, argv)
    if args.quick:
        args.batch_sizes, args.max_new_tokens, args.rounds, args.min_prompts = [1, 8], 8, 1, 2
    C.quiet()
    return C.run_with_threads(run, args, collect_peak=None)


def run(args) -> str:
    import torch

    from fpa.generation.backends import load_backend
    from fpa.models.loading import load_tokenizer
    from fpa.models.tiny import build_tiny_model

    torch.manual_seed(0)
    size = ({"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64, "max_positions": 64}
            if args.quick else {})
    path = build_tiny_model(C.tmpdir("gen"), **size)
    tok = load_tokenizer(str(path))
    backends = {bs: load_backend("hf", str(path), tok, batch_size=bs, max_new_tokens=args.max_new_tokens,
                                 progress=False, device="cpu") for bs in args.batch_sizes}
    work = {bs: prompts(max(bs, args.min_prompts)) for bs in args.batch_sizes}

    def job(bs: int):
        def go() -> dict:
            t0 = time.perf_counter()
            out = backends[bs].sample(work[bs], n=1, temperature=1.0, top_p=1.0, seed=0)
            dt = time.perf_counter() - t0
            toks = sum(s.n_tokens + (s.finish_reason == "stop") for s in out)
            return {"tok_s": toks / dt, "tokens": toks}
        return go

    rounds = C.interleaved({bs: job(bs) for bs in args.batch_sizes}, warmup=1, repeats=args.rounds)
    base = C.seg(rounds[args.batch_sizes[0]], "tok_s")
    rows = []
    for bs in args.batch_sizes:
        r = rounds[bs]
        tps = C.seg(r, "tok_s")
        rows.append([bs, len(work[bs]), C.median(x["tokens"] for x in r), C.seg(r), tps, f"{tps / base:.1f}×"])
    n_params = sum(p.numel() for p in backends[args.batch_sizes[0]].model.parameters())
    return C.table("hf backend generation throughput (tiny model)",
                   ["batch size", "prompts", "new tokens", "seconds", "tokens/s", f"vs batch {args.batch_sizes[0]}"],
                   rows, note=f"Machine: {C.machine()}. Model: tiny Llama, {n_params / 1e6:.2f}M parameters, char vocab "
                              f"{len(tok)}; max_new_tokens={args.max_new_tokens}, temperature 1, fp32, "
                              f"median of {args.rounds} interleaved rounds after a warm-up.")


if __name__ == "__main__":
    main()
