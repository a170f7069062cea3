"""Chunked against naive completion log-probs: peak memory and time of forward + backward.

Rows of final hidden states ``[N, H]`` and an output layer ``[V, H]`` (both trainable) → the
per-token log-prob of each target, then ``backward``:

- ``naive``: the same three outputs as the chunked call (policy with gradient, reference, λ=1
  future) from full ``[N, V]`` logits by autograd (``fpa.logprobs.naive_completion_outputs``): the
  like-for-like baseline, and the one every ratio is taken against.
- ``naive policy-only``: ``log_softmax(hidden @ Wᵀ)[target]`` alone (``naive_token_logprobs``), the
  baseline of the earlier report (it skips the reference and future work the chunked call does).
- ``chunked c=K``: ``fpa.logprobs.chunked_token_logprobs`` with at most K-row chunks (the rows are
  also bounded by the vocabulary: ``fpa.logprobs.chunk_rows``), with the reference's hidden states
  and output layer, exactly as a training step calls it.

    PYTHONPATH=src .venv/bin/python benchmarks/logprob_memory.py                       # all sizes
    PYTHONPATH=src .venv/bin/python benchmarks/logprob_memory.py --vocab 152064 --lengths 2048
    PYTHONPATH=src .venv/bin/python benchmarks/logprob_memory.py --breakdown --vocab 32000 --lengths 2048
    PYTHONPATH=src .venv/bin/python benchmarks/logprob_memory.py --quick

``--breakdown`` also profiles one chunked forward + backward (``torch.profiler``) and prints the time
of each labelled phase (``fpa.logprobs.*``: matmul, log-softmax, gather, future, backward recompute,
backward matmuls).

Every (vocab, length, variant) runs in a fresh subprocess (``--quick``: in process): Δpeak = peak
RSS during forward + backward − RSS after the inputs are built. Configurations whose estimated
peak exceeds ``--max-gb`` (default 16) or the memory available now are skipped, with the reason.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

VOCABS = [32000, 152064]  # Llama-2/Mistral, Qwen2.5
LENGTHS = [1024, 2048, 4096]
VARIANTS = ["naive", "naive policy-only", "chunked c=1024", "chunked c=256"]


def _chunk(variant: str) -> int:
    return int(variant.split("c=")[1]) if "c=" in variant else 1024


def estimate_gb(variant: str, vocab: int, n: int, hidden: int) -> float:
    """A conservative estimate of the run's peak (inputs, gradients and the logits it materialises)."""
    from fpa.logprobs import chunk_rows

    params = 4 * (2 * vocab * hidden + 2 * n * hidden) * 2  # policy + reference inputs, and their gradients
    if variant == "naive":
        logits = 6 * n * vocab * 4  # + the reference's and the future's logits and log-softmax
    elif variant.startswith("naive"):
        logits = 4 * n * vocab * 4  # logits, log-softmax, its gradient, the logits' gradient
    else:
        logits = 3 * chunk_rows(_chunk(variant), vocab, n) * vocab * 4
    return (params + logits + 4 * vocab * hidden) / 2**30  # + fp32 grad accumulator of the output layer


def run_one(variant: str, vocab: int, n: int, hidden: int, seed: int = 0) -> dict:
    import torch

    from fpa.logprobs import chunked_token_logprobs, naive_completion_outputs, naive_token_logprobs

    g = torch.Generator().manual_seed(seed)
    h = torch.randn(n, hidden, generator=g).requires_grad_()
    w = (torch.randn(vocab, hidden, generator=g) * hidden ** -0.5).requires_grad_()
    targets = torch.randint(0, vocab, (n,), generator=g)
    ref_h = h.detach() + 0.1 * torch.randn(n, hidden, generator=g)
    ref_w = w.detach() + 0.01 * torch.randn(vocab, hidden, generator=g)
    with C.PeakRSS() as m:
        t0 = time.perf_counter()
        if variant == "naive":
            pol, ref, fut = naive_completion_outputs(h, w, targets, ref_h, ref_w, 1.0)
        elif variant == "naive policy-only":
            pol = naive_token_logprobs(h, w, targets)
        else:
            pol, ref, fut = chunked_token_logprobs(h, w, targets, ref_h, ref_w, lam=1.0, chunk_size=_chunk(variant))
        t1 = time.perf_counter()
        pol.sum().backward()
        t2 = time.perf_counter()
    return {"fwd_s": t1 - t0, "bwd_s": t2 - t1, "time_s": t2 - t0, "delta_mb": m.delta_mb, "peak_mb": m.peak_mb,
            "method": C.PeakRSS.method}


def child(spec: dict) -> None:
    C.set_threads(spec["threads"])
    C.report_child(run_one(spec["variant"], spec["vocab"], spec["n"], spec["hidden"]))


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--vocab", type=int, nargs="+", default=VOCABS)
    p.add_argument("--lengths", type=int, nargs="+", default=LENGTHS, help="tokens (batch 1)")
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--variants", nargs="+", default=VARIANTS, help=f"from {VARIANTS} (any 'chunked c=K')")
    p.add_argument("--max-gb", type=float, default=16.0)
    p.add_argument("--breakdown", action="store_true", help="profile one chunked fwd+bwd per size: time per phase")
    p.add_argument("--breakdown-chunk", type=int, default=256, help="chunk_size of the profiled run")
    args = C.parse_args(p, argv, child)
    if args is None:
        return ""
    if args.quick:
        args.vocab, args.lengths, args.hidden = [512, 2048], [64, 128], 32
        args.variants = ["naive", "naive policy-only", "chunked c=32"]
        args.breakdown_chunk = 32
    return C.run_with_threads(run, args, collect_peak=True)


def run(args) -> str:
    rows, skipped, results = [], [], {}
    for vocab in args.vocab:
        for n in args.lengths:
            for variant in args.variants:
                est = estimate_gb(variant, vocab, n, args.hidden)
                avail = C.mem_available_mb() / 1024 - 2.0
                if est > min(args.max_gb, avail):
                    why = (f"estimated peak {est:.1f} GB > --max-gb {args.max_gb:g}" if est > args.max_gb else
                           f"estimated peak {est:.1f} GB > available memory − 2 GB ({avail:.1f} GB)")
                    skipped.append(f"- skipped {variant} at V={vocab}, N={n}: {why}")
                    print(skipped[-1], flush=True)
                    continue
                if args.quick:
                    r = run_one(variant, vocab, n, args.hidden)
                else:
                    r = C.run_child(Path(__file__), {"variant": variant, "vocab": vocab, "n": n,
                                                     "hidden": args.hidden, "threads": args.threads})
                results[(vocab, n, variant)] = r
                naive = results.get((vocab, n, "naive"))
                mem_ratio = (f"{r['delta_mb'] / naive['delta_mb']:.3f}" if naive['delta_mb'] >= 1 else "n/a (<1 MB)") \
                    if naive and variant != "naive" else ""
                time_ratio = f"{r['time_s'] / naive['time_s']:.2f}" if naive and variant != "naive" else ""
                rows.append([vocab, n, variant, r["delta_mb"], mem_ratio, r["fwd_s"], r["bwd_s"], r["time_s"],
                             time_ratio])
                print(f"  V={vocab} N={n} {variant}: Δpeak {r['delta_mb']:.0f} MB, {r['time_s']:.2f} s", flush=True)
    note = (f"Machine: {C.machine()}; hidden {args.hidden}, batch 1, fp32. "
            "Δpeak = peak RSS during forward+backward − RSS with the inputs built "
            f"({'in process' if args.quick else 'fresh subprocess per cell'}, VmHWM reset). "
            "Every variant but 'naive policy-only' computes the policy (with gradient), reference and λ=1 future "
            "log-probs; ratios are against 'naive' (the same three outputs from full logits). "
            "Targets (issue 17): chunked time ≤ 1.3 × naive, Δpeak ≤ 1/8 of naive's at V=152064, N=2048.")
    if skipped:
        note += "\n" + "\n".join(skipped)
    growth = []
    for vocab in args.vocab:
        for variant in args.variants:
            pts = [(n, results[(vocab, n, variant)]) for n in args.lengths if (vocab, n, variant) in results]
            if len(pts) >= 2:
                (n0, a), (n1, b) = pts[0], pts[-1]
                growth.append([vocab, variant, f"{n0}→{n1}",
                               f"{b['delta_mb'] / a['delta_mb']:.2f}×" if a["delta_mb"] >= 1 else "n/a (<1 MB)",
                               f"{b['time_s'] / a['time_s']:.2f}×"])
    out = C.table("Log-probs, forward + backward: chunked vs naive",
                  ["vocab", "tokens", "variant", "Δpeak MB", "mem / naive", "fwd s", "bwd s", "total s",
                   "time / naive"], rows, note=note)
    if growth:
        out += C.table("Growth with length (same vocab, longest ÷ shortest)",
                       ["vocab", "variant", "tokens", "Δpeak growth", "time growth"], growth)
    if args.breakdown:
        out += breakdown(args)
    return out


PHASES = ["matmul", "log_softmax", "gather", "future", "backward_recompute", "backward_matmul"]


def breakdown(args) -> str:
    """Profile one chunked forward + backward per (vocab, length): self-inclusive time of each labelled phase."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from fpa.logprobs import chunk_rows, chunked_token_logprobs

    rows = []
    for vocab in args.vocab:
        for n in args.lengths:
            g = torch.Generator().manual_seed(0)
            h = torch.randn(n, args.hidden, generator=g).requires_grad_()
            w = (torch.randn(vocab, args.hidden, generator=g) * args.hidden ** -0.5).requires_grad_()
            t = torch.randint(0, vocab, (n,), generator=g)
            rh, rw = h.detach() + 0.1 * torch.randn(n, args.hidden, generator=g), w.detach() * 1.01

            def once():
                pol, _, _ = chunked_token_logprobs(h, w, t, rh, rw, lam=1.0, chunk_size=args.breakdown_chunk)
                pol.sum().backward()

            once()  # warm-up
            walls = []
            for _ in range(2):
                t0 = time.perf_counter()
                once()
                walls.append(time.perf_counter() - t0)
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                once()
            wall = 1e3 * min(walls)
            spent = {e.key: e.cpu_time_total / 1e3 for e in prof.key_averages()}
            row = [vocab, n, chunk_rows(args.breakdown_chunk, vocab, n), f"{wall:.1f}"]
            for phase in PHASES:
                ms = spent.get(f"fpa.logprobs.{phase}", 0.0)
                row.append(f"{ms:.1f} ({100 * ms / wall:.0f}%)")
            rows.append(row)
    return C.table("Where a chunked forward + backward spends its time (torch.profiler, one run after a warm-up)",
                   ["vocab", "tokens", "chunk rows", "wall ms (unprofiled)", *[f"{p} ms" for p in PHASES]], rows,
                   note=f"λ=1 with reference, chunk_size={args.breakdown_chunk}. 'matmul' counts every logits "
                        "product, the backward recompute's included; 'backward_recompute' = its logits product + "
                        "exp/scale; 'backward_matmul' = the grad_h and grad_W products. Profiling adds overhead, so "
                        "shares (of the unprofiled wall time) are indicative; times include nested labels.")


if __name__ == "__main__":
    main()
