"""DPO with the reference forward in every step, DPO with the reference precomputed, and FPA-DPO: step times.

``train.precompute_reference`` (auto for DPO at λ=0) computes the reference's token log-probs once and
trains without the reference model; FPA needs the reference's full logits at every step, so FPA-DPO
always runs the reference forward. FPA-DPO against both DPO variants is the honest measure of FPA's
cost: against in-step DPO it is the future log-softmax alone, against precomputed DPO it includes
the reference forward that FPA cannot skip.

    PYTHONPATH=src .venv/bin/python benchmarks/ref_precompute.py --configs tiny     # ~4 min on 1 thread
    PYTHONPATH=src .venv/bin/python benchmarks/ref_precompute.py --configs mid --repeats 3
    PYTHONPATH=src .venv/bin/python benchmarks/ref_precompute.py --quick            # toy sizes, seconds

All three are ``OfflineRLModule`` with the DPO objective (β 0.1) on the same batch and model sizes as
``fpa_overhead.py``; they alternate step by step in one process (median over interleaved rounds, paired
ratios). A step = ``training_step`` → ``backward`` → ``AdamW.step`` → ``zero_grad`` → scheduler. The
precompute itself (the reference forward without gradient over the batch's examples, through
``fpa.stages.reference_logprobs.score``) is timed apart (median of 3 after a warm-up): it is paid once per
training set (and cached), not per step.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
from fpa_overhead import CONFIGS, QUICK, make_stepper  # noqa: E402  (the same sizes and steps as the FPA-overhead figures)

DPO, DPO_PRE, FPA = "DPO (reference forward)", "DPO (precomputed reference)", "FPA-DPO (λ=1)"


def examples_and_batches(cfg: dict, path: Path, chunk_size: int, repeats: int = 3):
    """(batch without, batch with the reference log-probs, (wall, CPU) seconds of the precompute: medians after a warm-up)."""
    import torch

    from fpa.data.collate import Collator
    from fpa.data.reference import KEY
    from fpa.models.loading import load_model, load_tokenizer
    from fpa.stages.reference_logprobs import score

    tok = load_tokenizer(str(path))
    examples = C.synthetic_pairs(cfg["pairs"], cfg["prompt"], cfg["chosen"], cfg["rejected"], len(tok),
                                 eos_id=tok.eos_token_id)
    collate = Collator("pairs", tok.pad_token_id)
    plain = collate(examples)
    reference = load_model(str(path), frozen=True)
    wall, cpu = [], []
    for _ in range(1 + repeats):  # a warm-up call, then the median of ``repeats``
        t0, c0 = time.perf_counter(), time.process_time()
        values, offsets = score(reference, examples, "pairs", tok.pad_token_id, chunk_size=chunk_size)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    seconds = (C.median(wall[1:]), C.median(cpu[1:]))
    for k, ex in enumerate(examples):
        ex[KEY] = values[offsets[k]:offsets[k + 1]]
    served = collate(examples)
    assert torch.equal(served["input_ids"], plain["input_ids"])
    return plain, served, seconds


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--configs", nargs="+", default=["tiny"], choices=sorted(CONFIGS))
    p.add_argument("--repeats", type=int, default=None, help="measured rounds (default: tiny 11, mid 5)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--chunk-size", type=int, default=1024)
    args = C.parse_args(p, argv)
    C.quiet()
    return C.run_with_threads(run, args)


def run(args) -> str:
    import torch

    torch.manual_seed(0)
    rows, ratio_rows = [], []
    for name in args.configs:
        cfg = dict((QUICK if args.quick else CONFIGS)[name])
        path = C.build_model(C.tmpdir(f"refpre-{name}"), **cfg["model"])
        plain, served, pre_s = examples_and_batches(cfg, path, args.chunk_size, 1 if args.quick else 3)
        steps = cfg["steps_per_round"]
        repeats = args.repeats or (3 if args.quick else (11 if name == "tiny" else 5))
        fns = {DPO: make_stepper(path, 0.0, plain, args.chunk_size, steps),
               DPO_PRE: make_stepper(path, 0.0, served, args.chunk_size, steps, precomputed=True),
               FPA: make_stepper(path, 1.0, plain, args.chunk_size, steps)}
        rounds = C.interleaved(fns, warmup=args.warmup, repeats=repeats)
        label = f"{name} ({C.n_params(path) / 1e6:.1f}M, {tuple(plain['input_ids'].shape)})"
        tokens = C.batch_tokens(plain)
        for v, r in rounds.items():
            rows.append([label, v, 1e3 * C.seg(r) / steps, 1e3 * C.seg(r, "fwd") / steps,
                         1e3 * C.seg(r, "bwd") / steps, 1e3 * C.seg(r, "opt") / steps,
                         1e3 * C.seg(r, "cpu") / steps, tokens * steps / C.seg(r)])
        for a, b in ((FPA, DPO), (FPA, DPO_PRE), (DPO_PRE, DPO)):
            ratio_rows.append([label, f"{a} / {b}", C.ratio_text(rounds[a], rounds[b]),
                               C.ratio_text(rounds[a], rounds[b], "cpu")])
        ratio_rows.append([label, "precompute, once per training set (ms per batch)", f"{1e3 * pre_s[0]:.0f}",
                           f"{1e3 * pre_s[1]:.0f}"])
        del fns
    out = [C.table("DPO (reference forward) vs DPO (precomputed reference) vs FPA-DPO: step time",
                   ["config (params, batch shape)", "variant", "step ms", "fwd ms", "bwd ms", "opt ms", "CPU ms",
                    "tokens/s"], rows,
                   note=f"Machine: {C.machine()}. Median over interleaved rounds. fwd = training_step (forwards, "
                        "loss, FPA coefficients, diagnostics); opt = AdamW step + zero_grad + scheduler."),
           C.table("Ratios (median [quartiles] of per-round ratios)", ["config", "ratio", "wall", "CPU"], ratio_rows,
                   note="The precompute row: the reference forward without gradient over the batch's examples "
                        "(fpa.stages.reference_logprobs.score), timed outside the rounds (median of 3 after a warm-up).")]
    return "\n".join(out)


if __name__ == "__main__":
    main()
