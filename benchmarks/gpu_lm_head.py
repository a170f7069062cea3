"""The output layer on GPU: the chunked log-probs against fused linear–cross-entropy kernels (issue 17).

Rows of final hidden states ``[N, H]`` and a trainable output layer ``[V, H]`` (bf16), plus a frozen
reference's, → per-token policy (with gradient), reference and λ-future log-probs, then backward
of ``Σ g·policy`` (g random). Variants:

- ``chunked`` (a): ``fpa.logprobs.chunked_token_logprobs`` with the reference: every ratio is against it.
- ``liger`` (b), ``cce`` (c), ``cce exact``: ``fpa.fused_lm_head.kernel_token_logprobs`` with the Liger /
  Cut Cross-Entropy kernel (three calls; the future as one product over the concatenated [N, 2H] x
  [V, 2H]). ``cce`` uses CCE's default gradient filter (approximate), ``cce exact`` ``filter_eps=None``.
- ``naive`` (d): full fp32 ``[N, V]`` logits by autograd; skipped where the estimate does not fit.
- ``chunked_kernel``: ``kernel_token_logprobs`` with the pure-torch chunked kernel (``--quick``).

Time: CUDA events around forward + backward, after warm-up, median over rounds that alternate
the variants' order. Peak: ``torch.cuda.max_memory_allocated`` minus the memory allocated before
the step (inputs excluded, the layer's gradient included), reset per variant and case.

FLOPs counted (the same for every variant, so MFU ratios are time ratios): the logits products
only, forward 2·N·V·H for the policy, 2·N·V·H for the reference and 4·N·V·H for the future as a
product over 2H, backward 4·N·V·H for the policy (dhidden and dweight): **12·N·V·H**. Not counted:
recomputation of logits in backward (all but naive), the softmax, the [V, 2H] concatenation.
MFU = counted FLOPs / time / ``--peak-tflops`` (default 989: H100 SXM dense bf16, no sparsity;
H200 the same, H100 PCIe 756).

    python benchmarks/gpu_lm_head.py                 # on a CUDA machine, the full grid
    python benchmarks/gpu_lm_head.py --quick         # CPU, toy size, chunked vs chunked_kernel
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

VOCABS, TOKENS, HIDDENS = [32000, 152064], [2048, 8192], [896, 1536]
VARIANTS = ["chunked", "liger", "cce", "cce exact", "naive"]
QUICK_VARIANTS = ["chunked", "chunked_kernel"]
TITLE = "Output layer forward + backward: chunked vs fused linear–cross-entropy kernels"


def model_flops(n: int, v: int, h: int) -> int:
    return 12 * n * v * h


def naive_outputs(h, w, t, rh, rw, lam):
    """Full logits upcast to fp32 (as a transformers loss does), by autograd."""
    import torch

    logits = (h @ w.T).float()
    policy = torch.log_softmax(logits, -1).gather(1, t[:, None]).squeeze(1)
    with torch.no_grad():
        ref_logits = (rh @ rw.T).float()
        reference = torch.log_softmax(ref_logits, -1).gather(1, t[:, None]).squeeze(1)
        future = torch.log_softmax(ref_logits.lerp_(logits.detach(), 1 + lam), -1).gather(1, t[:, None]).squeeze(1)
    return policy, reference, future


def naive_gb(n: int, v: int) -> float:
    return 26 * n * v / 2**30  # bf16 + fp32 logits, log-softmax, their gradients, the no-grad reference/future


def build(variant: str, chunk_size: int):
    """variant → fn(h, w, t, rh, rw, lam) → (policy, reference, future); raises ImportError if unavailable."""
    from fpa import fused_lm_head as FL
    from fpa.logprobs import chunked_token_logprobs

    if variant == "chunked":
        return lambda h, w, t, rh, rw, lam: chunked_token_logprobs(h, w, t, rh, rw, lam=lam, chunk_size=chunk_size)
    if variant == "naive":
        return naive_outputs
    kernel = {"chunked_kernel": lambda: FL.chunked_kernel(chunk_size), "liger": FL.liger_fused_kernel,
              "cce": FL.cce_kernel, "cce exact": lambda: FL.cce_kernel(filter_eps=None)}[variant]()
    return lambda h, w, t, rh, rw, lam: FL.kernel_token_logprobs(kernel, h, w, t, rh, rw, lam=lam)


def make_inputs(n: int, v: int, hdim: int, dtype, device, seed: int = 0):
    import torch

    g = torch.Generator(device=device).manual_seed(seed)

    def rand(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, device=device) * scale).to(dtype)

    w = rand(v, hdim, scale=hdim ** -0.5)
    h = rand(n, hdim)
    return {"h": h.requires_grad_(), "w": w.requires_grad_(), "rh": (h.detach() + rand(n, hdim, scale=0.1)),
            "rw": (w.detach() + rand(v, hdim, scale=0.01 * hdim ** -0.5)),
            "t": torch.randint(0, v, (n,), generator=g, device=device),
            "go": torch.randn(n, generator=g, device=device)}


def step(fn, x, lam):
    x["h"].grad = x["w"].grad = None
    pol, ref, fut = fn(x["h"], x["w"], x["t"], x["rh"], x["rw"], lam)
    (pol * x["go"].to(pol.dtype)).sum().backward()
    return pol.detach(), ref, fut


def timed(fn, x, lam, cuda: bool) -> float:
    """Milliseconds of one forward + backward."""
    import torch

    if cuda:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        step(fn, x, lam)
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end)
    t0 = time.perf_counter()
    step(fn, x, lam)
    return (time.perf_counter() - t0) * 1e3


def measure_peak(fn, x, lam, cuda: bool):
    """(Δpeak GB or None on CPU, outputs, grads) of one step."""
    import torch

    if cuda:
        x["h"].grad = x["w"].grad = None
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    outs = step(fn, x, lam)
    peak = None
    if cuda:
        torch.cuda.synchronize()
        peak = (torch.cuda.max_memory_allocated() - base) / 2**30
    return peak, [o.float() for o in outs], [x["h"].grad.float().clone(), x["w"].grad.float().clone()]


def fp32_truth(x, lam, chunk_size):
    """Outputs and gradients of the chunked path on fp32 copies of the inputs: the accuracy reference."""
    from fpa.logprobs import chunked_token_logprobs

    x32 = {k: t.detach().float() if t.is_floating_point() else t for k, t in x.items()}
    x32["h"].requires_grad_()
    x32["w"].requires_grad_()
    outs = step(lambda h, w, t, rh, rw, lam: chunked_token_logprobs(h, w, t, rh, rw, lam=lam, chunk_size=chunk_size),
                x32, lam)
    return [o.float() for o in outs], [x32["h"].grad, x32["w"].grad]


def _why(err: Exception) -> str:
    """One table-safe line: the exception's type and the start of its message."""
    first = (str(err).splitlines() or [""])[0][:120].replace("|", "/")
    return f"{type(err).__name__}: {first}"


def rel_err(a, b) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def run_case(n, v, hdim, variants, fns, args, device, dtype, skipped):
    """One (N, V, H) case → table rows (all variants)."""
    import torch

    cuda = device == "cuda"
    x = make_inputs(n, v, hdim, dtype, device)
    live, results = {}, {}
    base = fp32_truth(x, args.lam, args.chunk_size)
    for name in variants:
        if name not in fns:
            continue
        if name == "naive" and cuda:
            free = torch.cuda.mem_get_info()[0] / 2**30
            if naive_gb(n, v) > 0.8 * free:
                results[name] = f"skipped: estimated {naive_gb(n, v):.1f} GB > 80 % of {free:.1f} GB free"
                continue
        try:
            for _ in range(args.warmup):
                step(fns[name], x, args.lam)
            peak, outs, grads = measure_peak(fns[name], x, args.lam, cuda)
        except Exception as err:  # noqa: BLE001  (an OOM or a kernel that fails here is a result, not a crash)
            if cuda:
                torch.cuda.empty_cache()
            results[name] = f"error: {_why(err)}"
            if not isinstance(err, torch.cuda.OutOfMemoryError) and name != "naive":
                skipped[name] = results[name]
                fns.pop(name)
            continue
        dlogp = max(float((o - b).abs().max()) for o, b in zip(outs, base[0]))
        results[name] = {"peak": peak, "dlogp": dlogp, "gh": rel_err(grads[0], base[1][0]),
                         "gw": rel_err(grads[1], base[1][1]), "ms": []}
        live[name] = fns[name]
        del outs, grads
    order = list(live)
    for r in range(args.repeats):
        for name in (order if r % 2 == 0 else order[::-1]):
            if name in live:
                try:
                    results[name]["ms"].append(timed(live[name], x, args.lam, cuda))
                except Exception as err:  # noqa: BLE001
                    results[name] = f"error while timing: {_why(err)}"
                    live.pop(name)
    del x
    if cuda:
        torch.cuda.empty_cache()
    ref = results.get(variants[0]) if isinstance(results.get(variants[0]), dict) else None
    flops = model_flops(n, v, hdim)
    rows = []
    for name in variants:
        res = results.get(name)
        if res is None:
            continue
        if isinstance(res, str):
            rows.append([v, n, hdim, name, res, "", "", "", "", "", "", ""])
            continue
        ms = statistics.median(res["ms"])
        tflops = flops / (ms / 1e3) / 1e12
        mfu = 100 * tflops / args.peak_tflops
        peak = "n/a (CPU)" if res["peak"] is None else f"{res['peak']:.2f}"
        mem_ratio = ("" if res["peak"] is None or ref is None or not ref["peak"]
                     else f"{res['peak'] / ref['peak']:.2f}")
        time_ratio = "" if ref is None else f"{ms / statistics.median(ref['ms']):.2f}"
        rows.append([v, n, hdim, name, f"{ms:.2f}", time_ratio, peak, mem_ratio, f"{tflops:.3g}", f"{mfu:.3g}",
                     f"{res['dlogp']:.1e}",
                     f"{res['gh']:.1e} / {res['gw']:.1e}"])
    return rows


def versions() -> str:
    import importlib.metadata as md

    import torch

    parts = [f"torch {torch.__version__}", f"CUDA {torch.version.cuda}"]
    if torch.cuda.is_available():
        parts.insert(0, torch.cuda.get_device_name())
    for dist in ("triton", "liger-kernel", "cut-cross-entropy"):
        try:
            parts.append(f"{dist} {md.version(dist)}")
        except md.PackageNotFoundError:
            parts.append(f"{dist} not installed")
    return ", ".join(parts)


def run(args) -> str:
    import torch

    cuda = not args.quick and torch.cuda.is_available()
    if not args.quick and not cuda:
        raise SystemExit("gpu_lm_head.py needs a CUDA device (use --quick for the CPU smoke run)")
    device, dtype = ("cuda", torch.bfloat16) if cuda else ("cpu", torch.float32)
    if args.quick:
        vocabs, tokens, hiddens, variants = [512], [96], [32], args.variants or QUICK_VARIANTS
        args.repeats, args.warmup = min(args.repeats, 3), min(args.warmup, 1)
    else:
        vocabs, tokens, hiddens, variants = args.vocabs, args.tokens, args.hiddens, args.variants or VARIANTS
    fns, skipped = {}, {}
    for name in variants:
        try:
            fns[name] = build(name, args.chunk_size)
        except ImportError as err:
            skipped[name] = f"skipped: {err}"
    t0, rows, not_run = time.perf_counter(), [], []
    cases = sorted(((n, v, h) for v in vocabs for n in tokens for h in hiddens), key=lambda c: c[0] * c[1] * c[2])
    for n, v, h in cases:
        if time.perf_counter() - t0 > args.budget_s:
            not_run.append(f"V={v} N={n} H={h}")
            continue
        case_rows = run_case(n, v, h, variants, fns, args, device, dtype, skipped)
        print(f"[gpu_lm_head] V={v} N={n} H={h} done at {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
        rows += case_rows
    note = [f"{'CPU float32, toy size (--quick)' if args.quick else 'bf16 inputs'}; λ={args.lam}; "
            f"chunk_size={args.chunk_size}; {args.warmup} warm-up + {args.repeats} timed rounds (median); "
            f"{versions()}.",
            f"ms: one forward + backward. peak GB: max_memory_allocated − allocated before the step. "
            f"TFLOP/s and MFU count 12·N·V·H (logits products only) against --peak-tflops {args.peak_tflops:g}"
            f"{' (meaningless on CPU)' if not cuda else ''}. "
            f"Accuracy against the chunked path on fp32 copies of the inputs: max abs Δlogp over "
            f"policy/reference/future; grad rel err ‖Δ‖/‖·‖ of d hidden / d weight."]
    note += [f"{name}: {why}" for name, why in skipped.items()]
    if not_run:
        note.append(f"not run (--budget-s {args.budget_s:g} spent): " + "; ".join(not_run))
    header = ["V", "N", "H", "variant", "ms", "time / (a)", "peak GB", "mem / (a)", "TFLOP/s", "MFU %",
              "max abs Δlogp vs fp32", "grad rel err vs fp32 (h / W)"]
    text = C.table(TITLE, header, rows, note="\n".join(note))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
    return text


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--vocabs", type=int, nargs="+", default=VOCABS)
    p.add_argument("--tokens", type=int, nargs="+", default=TOKENS)
    p.add_argument("--hiddens", type=int, nargs="+", default=HIDDENS)
    p.add_argument("--variants", nargs="+", choices=VARIANTS + ["chunked_kernel"], help="first = the baseline (a)")
    p.add_argument("--lam", type=float, default=1.0)
    p.add_argument("--chunk-size", type=int, default=1024, help="rows per chunk of the chunked path (project default)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--peak-tflops", type=float, default=989.0,
                   help="peak dense bf16 TFLOP/s for MFU (default: H100 SXM, 989)")
    p.add_argument("--budget-s", type=float, default=360, help="start no new case after this many seconds")
    p.add_argument("--out", help="also write the table to this file")
    args = C.parse_args(p, argv)
    return C.run_with_threads(run, args)


if __name__ == "__main__":
    main()
