"""FPA-DPO (λ=1) against DPO (λ=0) in this project: training-step time and peak memory, same model and data.

Both variants are ``OfflineRLModule`` with the DPO objective and a loaded reference; they differ only
in ``FuturePolicy.lam``, so the difference is the future policy's log-softmax (one more log-softmax pass
per log-prob chunk) and the second coefficient evaluation. A step is what Lightning's automatic
optimisation runs: ``training_step`` → ``backward`` → ``AdamW.step`` → ``zero_grad`` → scheduler.

    PYTHONPATH=src .venv/bin/python benchmarks/fpa_overhead.py            # tiny + ~60M/32k model
    PYTHONPATH=src .venv/bin/python benchmarks/fpa_overhead.py --configs tiny --repeats 11
    PYTHONPATH=src .venv/bin/python benchmarks/fpa_overhead.py --quick    # toy sizes, seconds

Time: both modules live in one process and alternate step by step (median over rounds, paired
ratio). Memory: each variant in a fresh subprocess (``--quick``: in process), after one warm-up
step (so AdamW's state exists): Δpeak = peak RSS during the measured steps − RSS before them,
and the process's total peak RSS.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

CONFIGS = {
    # conf/model/tiny.yaml sizes, a data.batch_size=32 batch of arith-sized pairs
    "tiny": {"model": {"vocab_size": None, "hidden": 128, "layers": 4, "heads": 4, "intermediate": 384,
                       "max_positions": 256, "tie": True},
             "pairs": 32, "prompt": 24, "chosen": 64, "rejected": 48, "steps_per_round": 4},
    # ~60M parameters, vocab 32k, one pair of 512-token rows
    "mid": {"model": {"vocab_size": 32000, "hidden": 512, "layers": 8, "heads": 8, "intermediate": 1536,
                      "max_positions": 1024, "tie": False},
            "pairs": 1, "prompt": 128, "chosen": 384, "rejected": 320, "steps_per_round": 1},
    # SmolLM2-135M-Instruct (converted from the shipped GGUF), 4 pairs of ~80-token rows as in experiment=smollm
    "smollm": {"model": "smollm", "pairs": 4, "prompt": 48, "chosen": 40, "rejected": 32, "steps_per_round": 1},
}
QUICK = {
    "tiny": {"model": {"vocab_size": None, "hidden": 32, "layers": 1, "heads": 2, "intermediate": 64,
                       "max_positions": 64, "tie": True},
             "pairs": 4, "prompt": 8, "chosen": 16, "rejected": 12, "steps_per_round": 1},
    "mid": {"model": {"vocab_size": 2048, "hidden": 32, "layers": 1, "heads": 2, "intermediate": 64,
                      "max_positions": 128, "tie": False},
            "pairs": 1, "prompt": 16, "chosen": 48, "rejected": 40, "steps_per_round": 1},
}
VARIANTS = {"DPO (λ=0)": 0.0, "FPA-DPO (λ=1)": 1.0}


def make_batch(cfg: dict, path: Path):
    from fpa.data.collate import Collator
    from fpa.models.loading import load_tokenizer

    tok = load_tokenizer(str(path))
    examples = C.synthetic_pairs(cfg["pairs"], cfg["prompt"], cfg["chosen"], cfg["rejected"], len(tok),
                                 eos_id=tok.eos_token_id)
    return Collator("pairs", tok.pad_token_id)(examples)


def make_stepper(path: Path, lam: float, batch, chunk_size: int, steps: int, precomputed: bool = False):
    """A callable running ``steps`` optimizer steps of a fresh module; returns its segment times.

    ``precomputed``: the module loads no reference and reads the batch's ``reference_logprobs`` (λ=0 only).
    """
    import time

    from fpa.fpa import FuturePolicy
    from fpa.module import OfflineRLModule
    from fpa.optim import AdamW
    from fpa.objectives.dpo import DPO

    module = OfflineRLModule(str(path), DPO(beta=0.1), FuturePolicy(lam=lam), reference_path=str(path),
                             optimizer=AdamW(lr=1e-5), chunk_size=chunk_size, precomputed_reference=precomputed)
    assert (module.reference is None) == precomputed
    module.train()
    conf = module.configure_optimizers()
    opt, sched = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    count = [0]

    def run() -> dict:
        seg = {"fwd": 0.0, "bwd": 0.0, "opt": 0.0}
        for _ in range(steps):
            t0 = time.perf_counter()
            loss = module.training_step(batch, count[0])
            t1 = time.perf_counter()
            loss.backward()
            t2 = time.perf_counter()
            opt.step()
            opt.zero_grad(set_to_none=True)
            sched.step()
            t3 = time.perf_counter()
            seg["fwd"] += t1 - t0
            seg["bwd"] += t2 - t1
            seg["opt"] += t3 - t2
            count[0] += 1
        return seg

    return run


def measure_memory(path: Path, lam: float, batch, chunk_size: int, steps: int = 2) -> dict:
    run = make_stepper(path, lam, batch, chunk_size, 1)
    run()  # warm-up: AdamW state allocated, one-time buffers created
    with C.PeakRSS() as m:
        for _ in range(steps):
            run()
    return {"delta_mb": m.delta_mb, "peak_mb": m.peak_mb, "base_mb": m.base_mb, "method": C.PeakRSS.method}


def child(spec: dict) -> None:
    C.quiet()
    import torch

    C.set_threads(spec["threads"])
    torch.manual_seed(0)
    cfg = spec["cfg"]
    batch = make_batch(cfg, Path(spec["path"]))
    C.report_child(measure_memory(Path(spec["path"]), spec["lam"], batch, spec["chunk_size"]))


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--configs", nargs="+", default=["tiny", "mid"], choices=sorted(CONFIGS))
    p.add_argument("--repeats", type=int, default=None, help="measured rounds (default: tiny 11, mid 5)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--chunk-size", type=int, default=1024)
    p.add_argument("--seq", type=int, default=None, help="mid: total row length (prompt 1/4, completions the rest)")
    p.add_argument("--no-memory", action="store_true")
    p.add_argument("--no-time", action="store_true")
    p.add_argument("--no-breakdown", action="store_true")
    args = C.parse_args(p, argv, child)
    if args is None:
        return ""
    C.quiet()
    return C.run_with_threads(run, args, collect_peak=True)


def run(args) -> str:
    import torch

    torch.manual_seed(0)
    out = []
    time_rows, mem_rows, breakdown_rows, step_ms = [], [], [], {}
    for name in args.configs:
        cfg = dict((QUICK if args.quick else CONFIGS)[name])
        if args.seq and name == "mid" and not args.quick:
            prompt = args.seq // 4
            cfg.update(prompt=prompt, chosen=args.seq - prompt, rejected=(args.seq - prompt) * 5 // 6)
        path = C.model_for(cfg["model"], f"overhead-{name}")
        batch = make_batch(cfg, path)
        tokens = C.batch_tokens(batch)
        steps = cfg["steps_per_round"]
        repeats = args.repeats or (3 if args.quick else (11 if name == "tiny" else 5))
        variants = list(VARIANTS.items())
        label = f"{name} ({C.n_params(path) / 1e6:.1f}M, V={_vocab(path)}, {tuple(batch['input_ids'].shape)})"
        fns = {} if args.no_time else {v: make_stepper(path, lam, batch, args.chunk_size, steps)
                                       for v, lam in variants}
        rounds = C.interleaved(fns, warmup=args.warmup, repeats=repeats)
        base = rounds.get(variants[0][0])
        for i, (v, lam) in enumerate([] if args.no_time else variants):
            r = rounds[v]
            dpo = rounds[variants[i - 1][0]] if lam else None  # the DPO variant of the same implementation
            time_rows.append([label, v, 1e3 * C.seg(r) / steps, 1e3 * C.seg(r, "fwd") / steps,
                              1e3 * C.seg(r, "bwd") / steps, 1e3 * C.seg(r, "opt") / steps,
                              1e3 * C.seg(r, "cpu") / steps, tokens * steps / C.seg(r),
                              C.ratio_text(r, dpo) if lam else "", C.ratio_text(r, dpo, "cpu") if lam else "",
                              f"{C.paired_ratio(r, base, 'cpu'):.3f}" if i else ""])
        if not args.no_time:
            step_ms[name] = 1e3 * C.seg(rounds[variants[0][0]]) / steps
        if not args.no_breakdown:
            breakdown_rows += breakdown(path, batch, args, label, step_ms.get(name))
        del fns
        if not args.no_memory:
            mems = {}
            for v, lam in variants:
                if args.quick:
                    mems[v] = measure_memory(path, lam, batch, args.chunk_size)
                else:
                    mems[v] = C.run_child(Path(__file__), {"cfg": cfg, "path": str(path), "lam": lam,
                                                           "chunk_size": args.chunk_size, "threads": args.threads})
            for i, (v, lam) in enumerate(variants):
                m = mems[v]
                d = mems[variants[i - 1][0]] if lam else None
                mem_rows.append([label, v, m["delta_mb"], m["peak_mb"],
                                 _ratio(m["delta_mb"], d["delta_mb"]) if lam else "",
                                 f"{m['peak_mb'] / d['peak_mb']:.3f}" if lam else ""])
    if time_rows:
        out.append(C.table("FPA-DPO vs DPO: step time (median over interleaved rounds)",
                           ["config (params, vocab, batch shape)", "variant", "step ms", "fwd ms", "bwd ms", "opt ms",
                            "CPU ms", "tokens/s", "FPA/DPO wall", "FPA/DPO CPU", "CPU vs row 1"], time_rows,
                           note=f"Machine: {C.machine()}. fwd = training_step (both forwards, loss, FPA "
                                "coefficients, diagnostics); opt = AdamW step + zero_grad + scheduler (wall ms). CPU ms = "
                                "process CPU time per step. FPA/DPO: median [quartiles] of per-round ratios against "
                                "the DPO row above it, on wall and on CPU time. Target: FPA/DPO ≤ 1.05."))
    if breakdown_rows:
        out.append(C.table("Where FPA's extra time goes (the parts that differ, timed alone)",
                           ["config", "implementation", "part", "λ=0 ms", "λ=1 ms", "extra ms (paired)",
                            "extra CPU ms", "extra / DPO step"], breakdown_rows,
                           note="lm-head forward = chunked_token_logprobs on the step's own hidden states (policy, "
                                "reference, future); its backward does not depend on λ. coefficients = "
                                "FuturePolicy(objective, inputs). Interleaved, median of paired differences."))
    if mem_rows:
        out.append(C.table("FPA-DPO vs DPO: peak memory (RSS)",
                           ["config", "variant", "Δpeak MB", "total peak MB", "Δ ratio", "total ratio"], mem_rows,
                           note=f"Δpeak = peak RSS over 2 steps − RSS before them (after a warm-up step); "
                                f"{'in process' if args.quick else 'one fresh subprocess per variant'}; "
                                f"peak via {C.PeakRSS.method if args.quick else 'VmHWM reset'}. Target: ratio ≤ 1.05."))
    return "\n".join(out)


def breakdown(path: Path, batch, args, label: str, step_ms: float | None) -> list[list]:
    """Time only what λ changes: the log-prob forward (future log-softmax) and the coefficients."""
    import dataclasses

    import torch

    import fpa.logprobs
    from fpa.fpa import FuturePolicy
    from fpa.module import OfflineRLModule
    from fpa.objectives.dpo import DPO

    module = OfflineRLModule(str(path), DPO(beta=0.1), FuturePolicy(lam=1.0), reference_path=str(path),
                             chunk_size=args.chunk_size)
    captured = {}
    original = fpa.logprobs.chunked_token_logprobs

    def record(*a, **kw):
        captured.update(args=a, kwargs=kw)
        return original(*a, **kw)

    fpa.logprobs.chunked_token_logprobs = record
    try:
        x = module.objective_inputs(batch)
    finally:
        fpa.logprobs.chunked_token_logprobs = original
    h, w, t, rh, rw = (v.detach() if isinstance(v, torch.Tensor) else v for v in captured["args"][:5])
    x = dataclasses.replace(x, policy=x.policy.detach().requires_grad_())
    fns = {}
    impls = [("chunked", original)]
    for name, fn in impls:
        for lam in (0.0, 1.0):
            fns[(name, "lm-head forward", lam)] = (lambda fn=fn, lam=lam:
                                                   fn(h, w, t, rh, rw, lam=lam, chunk_size=args.chunk_size))
    for lam in (0.0, 1.0):
        fp = FuturePolicy(lam=lam)
        fns[("any", "coefficients", lam)] = lambda fp=fp: fp(module.objective, x)
    reps = 3 if args.quick else 9
    with torch.no_grad():
        rounds = C.interleaved({k: v for k, v in fns.items() if k[1] != "coefficients"}, warmup=1, repeats=reps)
    rounds.update(C.interleaved({k: v for k, v in fns.items() if k[1] == "coefficients"}, warmup=2,
                                repeats=3 * reps))
    rows = []
    for name, part in [(n, "lm-head forward") for n, _ in impls] + [("any", "coefficients")]:
        a, b = rounds[(name, part, 0.0)], rounds[(name, part, 1.0)]
        extra = C.median(1e3 * (y["total"] - x_["total"]) for x_, y in zip(a, b))
        extra_cpu = C.median(1e3 * (y["cpu"] - x_["cpu"]) for x_, y in zip(a, b))
        rows.append([label, name, part, 1e3 * C.seg(a), 1e3 * C.seg(b), extra, extra_cpu,
                     f"{100 * extra / step_ms:.1f}%" if step_ms else ""])
    return rows


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.3f}" if b >= 1.0 else "n/a (<1 MB)"


def _vocab(path: Path) -> int:
    return json.loads((Path(path) / "config.json").read_text())["vocab_size"]


if __name__ == "__main__":
    main()
