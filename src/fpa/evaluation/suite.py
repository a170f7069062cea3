"""The ``benchmark`` node: a suite of benchmarks and how they are sampled and scored.

One suite serves every evaluation: the in-training callback (a subset of its problems, on the live
policy), the end-of-run evaluation of the reference and the policy, and ``fpa-eval``. The first
benchmark is the suite's headline (``pass@1`` in ``results.json``; Optuna's objective).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from fpa import checks
from fpa.evaluation.benchmarks import Benchmark
from fpa.evaluation.runner import EvalSettings


@dataclass
class Suite(EvalSettings):
    name: str = ""
    benchmarks: dict[str, Benchmark] = field(default_factory=dict)
    batch_size: int = 64  # sequences per generate call

    def __post_init__(self) -> None:
        super().__post_init__()
        checks.number("batch_size", self.batch_size, 1, integer=True)
        if not self.benchmarks:
            raise ValueError("benchmarks: a suite needs at least one benchmark")
        for key, bench in self.benchmarks.items():
            if not isinstance(bench, Benchmark):
                raise ValueError(f"benchmarks.{key}: not a Benchmark node (_target_: fpa.evaluation.benchmarks."
                                 f"Benchmark), got {type(bench).__name__}")
            bench.name = bench.name or str(key)
            if bench.n_problems is None and self.n_problems is not None:
                bench.n_problems = self.n_problems

    @property
    def headline(self) -> str:
        return next(iter(self.benchmarks))

    def subset(self, n_problems: int | None) -> Suite:
        """The same suite with at most ``n_problems`` problems per benchmark (the callback's curves)."""
        if n_problems is None:
            return self
        benches = {k: replace(b, n_problems=min(n_problems, b.n_problems or n_problems))
                   for k, b in self.benchmarks.items()}
        return replace(self, benchmarks=benches)
