"""Run a benchmark suite with any sampler; the one code path behind the eval callback and ``fpa-eval``.

A sampler is anything with ``tokenizer`` and ``sample(prompts, n, temperature, top_p, seed, desc)``
returning :class:`fpa.generation.hf.Sample` rows (the ``hf`` and ``vllm`` backends). Per benchmark:
k samples per problem at the suite's temperature, each verified by the benchmark's task, then
aggregated by :class:`~fpa.evaluation.metrics.BenchmarkAccuracy`:

- ``pass@1``: the mean over problems of the fraction of correct samples;
- ``pass@k``: the unbiased estimator, for each k in ``pass_at``;
- ``maj@k``: whether the most common final answer among the first k samples is correct;
- ``process``: for tasks that judge every step (arith), the share of samples with every step right.

Answers vote by value: plain numbers as exact fractions (``0.5`` and ``1/2`` together), anything
else by its normalised text. The average row is the unweighted mean over benchmarks.

Multi-process: with ``world_size > 1`` each rank takes every ``world_size``-th problem and the
metric's sum states are reduced across ranks by torchmetrics when computed, so every rank gets
the single-process numbers. All ranks must evaluate the same suite in the same order.
"""

from __future__ import annotations

import json
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from fpa import checks
from fpa.evaluation.benchmarks import Benchmark
from fpa.evaluation.metrics import BenchmarkAccuracy, MeanStandardError, SampleShare
from fpa.prompting import PromptFormat
from fpa.tasks.answers import normalize_number
from fpa.tasks.equivalence import plain_number


@dataclass
class EvalSettings:
    """How a suite is sampled and scored; the ``benchmark`` config node carries these keys."""

    k: int = 4  # samples per problem
    temperature: float = 0.6
    top_p: float = 1.0
    seed: int = 1234  # sampling seed, the same for every benchmark (recorded)
    max_new_tokens: int = 1024  # a benchmark's own max_new_tokens wins
    pass_at: list[int] | None = None  # None: [1, k]
    maj_at: list[int] | None = None  # None: [k]
    n_problems: int | None = None  # cap for benchmarks that do not set their own; None: theirs
    instruction: str | None = None  # None: each benchmark's answer-format default; "": none
    verify_workers: int = 4  # threads checking answers (the checks themselves run in worker processes)

    def __post_init__(self) -> None:
        checks.number("k", self.k, 1, integer=True)
        checks.number("temperature", self.temperature, 0)
        checks.number("top_p", self.top_p, 0, 1, strict=True)
        checks.number("max_new_tokens", self.max_new_tokens, 1, integer=True)
        checks.number("n_problems", self.n_problems, 1, integer=True, optional=True)
        checks.number("verify_workers", self.verify_workers, 1, integer=True)
        self.pass_at = sorted({1, *(int(x) for x in (self.pass_at if self.pass_at is not None else [self.k]))})
        self.maj_at = sorted({int(x) for x in (self.maj_at if self.maj_at is not None else [self.k])})
        too_big = [x for x in (*self.pass_at, *self.maj_at) if x > self.k or x < 1]
        if too_big:
            raise ValueError(f"pass_at: pass_at / maj_at values must be in [1, k={self.k}], got {too_big}")

    def settings(self) -> EvalSettings:
        """The sampling and scoring settings alone (a :class:`~fpa.evaluation.suite.Suite` adds benchmarks)."""
        return EvalSettings(**{f.name: getattr(self, f.name) for f in fields(EvalSettings)})

    def as_dict(self) -> dict[str, Any]:
        return asdict(self.settings())


def vote_key(answer: str | None):
    """The class an extracted answer votes for in maj@k: exact value for numbers, normalised text otherwise."""
    if answer is None:
        return None
    number = plain_number(answer)
    if number is not None:
        return number
    return "".join(normalize_number(answer).split())


@dataclass
class BenchmarkResult:
    name: str
    metrics: dict[str, float]  # pass@1, pass@k, maj@k, process where judged (reduced over ranks)
    n_problems: int
    n_samples: int
    verification: dict[str, int]  # this rank's checks: n_checked, n_timeout, n_error
    seconds: float
    tokens_per_second: float
    settings: dict[str, Any]  # what produced these numbers: seed, k, temperature, ..., instruction
    samples: list[dict[str, Any]] = field(default_factory=list)  # this rank's samples
    # standard error of pass@1 over problems (reduced over ranks); None with fewer than 2 problems
    pass1_se: float | None = None

    def summary(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("samples")
        return out


@dataclass
class SuiteResult:
    suite: str
    benchmarks: dict[str, BenchmarkResult]
    settings: dict[str, Any]

    @property
    def average(self) -> dict[str, float]:
        """Unweighted mean over benchmarks of pass@k and maj@k (benchmarks with no problems are left out)."""
        keys = sorted({k for b in self.benchmarks.values() for k in b.metrics if "@" in k})
        out = {}
        for key in keys:
            vals = [b.metrics[key] for b in self.benchmarks.values()
                    if key in b.metrics and not math.isnan(b.metrics[key])]
            out[key] = sum(vals) / len(vals) if vals else float("nan")
        return out

    def flat_metrics(self, prefix: str = "eval") -> dict[str, float]:
        """``{prefix}/{benchmark}/{metric}`` and ``{prefix}/avg/{metric}``: what loggers get."""
        out = {f"{prefix}/{name}/{k}": v for name, b in self.benchmarks.items() for k, v in b.metrics.items()}
        out.update({f"{prefix}/avg/{k}": v for k, v in self.average.items()})
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"suite": self.suite, "settings": self.settings, "average": self.average,
                "benchmarks": {name: b.summary() for name, b in self.benchmarks.items()}}

    def markdown(self, title: str | None = None) -> str:
        metric_keys = sorted({k for b in self.benchmarks.values() for k in b.metrics}, key=_metric_order)
        head = ["benchmark", "problems", *metric_keys, "unverified", "pass@1 se"]
        lines = [f"### {title}", ""] if title else []
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for name, b in self.benchmarks.items():
            unverified = b.verification.get("n_timeout", 0) + b.verification.get("n_error", 0)
            lines.append("| " + " | ".join([name, str(b.n_problems), *(_fmt(b.metrics.get(k)) for k in metric_keys),
                                            str(unverified), _fmt(b.pass1_se)]) + " |")
        avg = self.average
        lines.append("| " + " | ".join(["**average**", "", *(_fmt(avg.get(k)) for k in metric_keys), "", ""])
                     + " |")
        s = self.settings
        lines += ["", f"k={s.get('k')} samples per problem, temperature {s.get('temperature')}, "
                      f"top-p {s.get('top_p')}, seed {s.get('seed')}; pass@1 is the mean over samples; "
                      "average is unweighted over benchmarks; pass@1 se: its standard error over problems."]
        return "\n".join(lines) + "\n"


def _metric_order(key: str) -> tuple[int, int]:
    kind, _, k = key.partition("@")
    return ({"pass": 0, "maj": 1}.get(kind, 2), int(k) if k.isdigit() else 0)


def _fmt(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.3f}"


def evaluate_benchmark(sampler, bench: Benchmark, prompt: PromptFormat, settings: EvalSettings, *,
                       rank: int = 0, world_size: int = 1, device: torch.device | str | None = None,
                       progress_desc: str | None = None) -> BenchmarkResult:
    """Sample, verify and score one benchmark (this rank's share of its problems; metrics over all ranks)."""
    start = time.perf_counter()
    problems = bench.problems()[rank::world_size]
    instruction = bench.instruction_text(settings.instruction, prompt)
    prompts = [prompt(bench.question_text(p.question, settings.instruction, prompt), sampler.tokenizer)
               for p in problems]
    max_new = bench.max_new_tokens or settings.max_new_tokens
    previous = getattr(sampler, "max_new_tokens", None)
    if previous is not None:
        sampler.max_new_tokens = max_new
    try:
        samples = sampler.sample(prompts, n=settings.k, temperature=settings.temperature, top_p=settings.top_p,
                                 seed=settings.seed, desc=progress_desc or f"eval {bench.name}") if prompts else []
    finally:
        if previous is not None:
            sampler.max_new_tokens = previous
    stats = getattr(bench.task, "stats", None)
    before = stats.as_dict() if stats is not None else None
    with ThreadPoolExecutor(max_workers=max(1, settings.verify_workers)) as pool:
        verdicts = list(pool.map(lambda s: bench.verify(problems[s.prompt_index], s.completion), samples))
    verification = {"n_checked": len(samples), "n_timeout": 0, "n_error": 0}
    if stats is not None:
        after = stats.as_dict()
        verification = {k: after[k] - before[k] for k in after}

    per_problem: list[list[tuple[int, bool, Any]]] = [[] for _ in problems]
    rows = []
    for s, v in sorted(zip(samples, verdicts), key=lambda sv: (sv[0].prompt_index, sv[0].sample_index)):
        p = problems[s.prompt_index]
        per_problem[s.prompt_index].append((s.sample_index, bool(v.reward > 0), vote_key(v.extracted)))
        rows.append({"problem_id": p.id, "sample": s.sample_index, "prompt": prompts[s.prompt_index],
                     "answer": p.answer, "completion": s.completion, "extracted": v.extracted,
                     "correct": bool(v.reward > 0), "reward": v.reward, "outcome": v.outcome, "process": v.process,
                     "finish_reason": s.finish_reason, "n_tokens": s.n_tokens})
    correct, answers = [], []
    for group in per_problem:
        group.sort(key=lambda t: t[0])
        if len(group) != settings.k:
            raise RuntimeError(f"{bench.name}: the sampler returned {len(group)} samples for a problem, "
                               f"expected k={settings.k}")
        correct.append([c for _, c, _ in group])
        answers.append([a for _, _, a in group])

    metric = BenchmarkAccuracy(ks=settings.pass_at, maj_ks=settings.maj_at)
    process = SampleShare()
    spread = MeanStandardError()
    if device is not None:
        metric, process, spread = metric.to(device), process.to(device), spread.to(device)
    metric.update(correct, answers if settings.maj_at else None)
    process.update([v.process for v in verdicts])
    spread.update([sum(c) / len(c) for c in correct])  # per-problem pass@1
    se = float(spread.compute().item())
    computed = metric.compute()  # reduces over ranks when torch.distributed is initialised
    n_problems = int(computed.pop("n_problems").item())
    n_samples = int(computed.pop("n_samples").item())
    metrics = {k: float(v.item()) for k, v in computed.items()}
    process_share = float(process.compute().item())
    if not math.isnan(process_share):  # tasks that judge every step (arith)
        metrics["process"] = process_share
    seconds = time.perf_counter() - start
    n_tokens = sum(s.n_tokens for s in samples)
    return BenchmarkResult(
        name=bench.name, metrics=metrics, n_problems=n_problems, n_samples=n_samples, verification=verification,
        seconds=round(seconds, 3), tokens_per_second=round(getattr(sampler, "tokens_per_second", 0.0)
                                                             or n_tokens / max(seconds, 1e-9), 1),
        settings={"seed": settings.seed, "k": settings.k, "temperature": settings.temperature,
                  "top_p": settings.top_p, "max_new_tokens": max_new, "instruction": instruction,
                  "split": bench.split, "n_problems": bench.n_problems, "problem_seed": bench.problem_seed,
                  "answer_format": bench.answer_format,
                  "task": getattr(bench.task, "name", type(bench.task).__name__)},
        samples=rows, pass1_se=None if math.isnan(se) else se)


def evaluate_suite(sampler, benchmarks: list[Benchmark], prompt: PromptFormat, settings: EvalSettings, *,
                   suite: str = "", rank: int = 0, world_size: int = 1,
                   device: torch.device | str | None = None) -> SuiteResult:
    results = {}
    for bench in benchmarks:
        if bench.name in results:
            raise ValueError(f"benchmark {bench.name!r} appears twice in the suite")
        results[bench.name] = evaluate_benchmark(sampler, bench, prompt, settings, rank=rank, world_size=world_size,
                                                 device=device)
    return SuiteResult(suite=suite, benchmarks=results, settings=settings.as_dict())


def write_samples(result: SuiteResult, out_dir: str | Path, suffix: str = "") -> dict[str, str]:
    """One JSONL file per benchmark (completion, extracted answer, verdict); returns name -> path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, b in result.benchmarks.items():
        path = out_dir / f"{name}{suffix}.jsonl"
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            for row in b.samples:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        tmp.replace(path)
        paths[name] = str(path)
    return paths
