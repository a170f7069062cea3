"""The benchmark registry: a benchmark is a name, a problem source (a task), an answer format and the
task's verifier. Suites group benchmarks; a suite config (``conf/benchmark/*.yaml``) names them.

Registered benchmarks (``REGISTRY``):

=================  =========================================================  ===========
name               problems                                                   format
=================  =========================================================  ===========
math500            MATH500, HuggingFaceH4/MATH-500 (test)                      boxed
gsm8k              GSM8K test, openai/gsm8k (main, test)                       boxed
aime24             AIME 2024 I+II, HuggingFaceH4/aime_2024 (train)             boxed
aime25             AIME 2025 I+II, math-ai/aime25 (test)                       boxed
amc23              AMC 2023, math-ai/amc23 (test)                              boxed
minerva_math       Minerva Math (OCWCourses), math-ai/minervamath (test)       boxed
olympiadbench      OlympiadBench OE_TO_maths_en_COMP, Hothan/OlympiadBench     boxed
arith              embedded multi-step arithmetic, held-out test split         arith
gsm_symbolic       reasoning-gym gsm_symbolic, held-out test split             boxed
chain_sum          reasoning-gym chain_sum, held-out test split                boxed
basic_arithmetic   reasoning-gym basic_arithmetic, held-out test split         boxed
champ              CHAMP (champ-dataset package), checkable answers             boxed
=================  =========================================================  ===========

The hub sources (see :mod:`fpa.tasks.sources` for their fields) each take ``path=`` a local copy in
the same schema. Suites: ``math7`` (the paper's seven) and ``embedded`` (offline: arith at several
lengths, gsm_symbolic, CHAMP).

A suite entry in config is ``name: {options}``: options that are :class:`Benchmark` fields
(``answer_format``, ``instruction``, ``split``, ``n_problems``, ``problem_seed``, ``max_new_tokens``)
set the benchmark, ``base: <registered name>`` reuses a registered benchmark under a new name
(``arith_8: {base: arith, n_terms: 8}``), and every other option goes to the task (``path``,
``n_terms``, ``config``, ...). An entry with ``_target_`` is instantiated as is.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Callable

from fpa.tasks.base import Problem

log = logging.getLogger(__name__)

# The instruction appended to each question by answer format (unless the suite or benchmark sets one).
ANSWER_FORMATS: dict[str, str] = {
    "boxed": "Please reason step by step, and put your final answer within \\boxed{}.",
    "gsm8k": "Please reason step by step, and end with a line of the form \"#### <answer>\".",
    "arith": "",  # the embedded tiny model's own scratchpad format ends with "#### x"
    "bare": "",
}


@dataclass
class Benchmark:
    name: str
    task: Any  # fpa.tasks.base.Task: problems(split, n, seed) and verify(problem, completion)
    answer_format: str = "boxed"  # a key of ANSWER_FORMATS: what the verifier reads, and the default instruction
    instruction: str | None = None  # appended to each question; None: the suite's, else the format's default
    split: str = "test"
    n_problems: int | None = None  # None: every problem of the split (procedural tasks need a number)
    problem_seed: int = 0  # which problems, when n_problems samples a subset
    max_new_tokens: int | None = None  # None: the suite's
    description: str = ""

    def __post_init__(self) -> None:
        if self.answer_format not in ANSWER_FORMATS:
            raise ValueError(f"benchmark {self.name}: unknown answer_format {self.answer_format!r}; "
                             f"expected one of {sorted(ANSWER_FORMATS)}")
        self._problems: list[Problem] | None = None
        self._lock = threading.Lock()

    def problems(self) -> list[Problem]:
        """The benchmark's problems, loaded once and kept (the callback evaluates many times).

        ``n_problems`` is a cap: a fixed set with fewer problems (AIME's 30 under a suite-wide 64)
        gives all of them.
        """
        with self._lock:
            if self._problems is None:
                n = self.n_problems if self.n_problems and self.n_problems > 0 else None
                try:
                    self._problems = self.task.problems(self.split, n, seed=self.problem_seed)
                except ValueError:
                    if n is None:
                        raise
                    everything = self._all_problems()
                    if everything is None or len(everything) >= n:
                        raise
                    log.info("benchmark %s: %d problems, fewer than n_problems=%d; using all", self.name,
                             len(everything), n)
                    self._problems = everything
            return self._problems

    def _all_problems(self) -> list[Problem] | None:
        """Every problem of the split, for tasks that can list them (fixed sets); None for generators."""
        try:
            return self.task.problems(self.split, None, seed=self.problem_seed)
        except (TypeError, ValueError):
            return None

    def instruction_text(self, suite_instruction: str | None = None) -> str:
        if self.instruction is not None:
            return self.instruction
        if suite_instruction is not None:
            return suite_instruction
        return ANSWER_FORMATS[self.answer_format]

    def question_text(self, question: str, suite_instruction: str | None = None) -> str:
        instruction = self.instruction_text(suite_instruction)
        return f"{question}\n{instruction}" if instruction else question

    def verify(self, problem: Problem, completion: str):
        return self.task.verify(problem, completion)


@dataclass(frozen=True)
class Registered:
    make_task: Callable[..., Any]
    task_args: dict[str, Any] = field(default_factory=dict)
    answer_format: str = "boxed"
    n_problems: int | None = None
    description: str = ""


def _math_task(**kw):
    from fpa.tasks.math_tasks import MathTask
    return MathTask(**kw)


def _arith_task(**kw):
    from fpa.tasks.arith import ArithTask
    return ArithTask(**kw)


def _rg_task(**kw):
    from fpa.tasks.reasoning_gym_tasks import ReasoningGymTask
    return ReasoningGymTask(**kw)


def _champ_task(**kw):
    from fpa.tasks.champ import ChampTask
    return ChampTask(**kw)


REGISTRY: dict[str, Registered] = {
    "math500": Registered(_math_task, {"source": "math500"}, description="MATH500 (HuggingFaceH4/MATH-500)"),
    "gsm8k": Registered(_math_task, {"source": "gsm8k"}, description="GSM8K test (openai/gsm8k)"),
    "aime24": Registered(_math_task, {"source": "aime24"}, description="AIME 2024 (HuggingFaceH4/aime_2024)"),
    "aime25": Registered(_math_task, {"source": "aime25"}, description="AIME 2025 (math-ai/aime25)"),
    "amc23": Registered(_math_task, {"source": "amc23"}, description="AMC 2023 (math-ai/amc23)"),
    "minerva_math": Registered(_math_task, {"source": "minerva", "name": "minerva_math"},
                               description="Minerva Math (math-ai/minervamath)"),
    "olympiadbench": Registered(_math_task, {"source": "olympiadbench"},
                                description="OlympiadBench OE_TO_maths_en_COMP (Hothan/OlympiadBench)"),
    "arith": Registered(_arith_task, {}, "arith", 128, "embedded arithmetic, held-out test split"),
    "gsm_symbolic": Registered(_rg_task, {"family": "gsm_symbolic"}, n_problems=128,
                               description="reasoning-gym gsm_symbolic, held-out test split"),
    "chain_sum": Registered(_rg_task, {"family": "chain_sum"}, n_problems=128,
                            description="reasoning-gym chain_sum, held-out test split"),
    "basic_arithmetic": Registered(_rg_task, {"family": "basic_arithmetic"}, n_problems=128,
                                   description="reasoning-gym basic_arithmetic, held-out test split"),
    "champ": Registered(_champ_task, {}, description="CHAMP competition problems (champ-dataset package)"),
}

SUITES: dict[str, tuple[str, ...]] = {
    "math7": ("math500", "gsm8k", "aime24", "aime25", "amc23", "minerva_math", "olympiadbench"),
    "embedded": ("arith", "gsm_symbolic", "champ"),
}

_BENCH_FIELDS = {f.name for f in fields(Benchmark)} - {"name", "task"}


def register(name: str, entry: Registered) -> None:
    """Add a benchmark to the registry (a plugin's one line); names are unique."""
    if name in REGISTRY:
        raise ValueError(f"benchmark {name!r} is already registered")
    REGISTRY[name] = entry


def build_benchmark(name: str, options: Mapping[str, Any] | None = None,
                    default_n_problems: int | None = None) -> Benchmark:
    """A benchmark from its registered name (or ``base``) and options (see the module docstring).

    ``default_n_problems`` (a suite's) caps problems where the entry does not set ``n_problems``.
    """
    opts = dict(options or {})
    if "_target_" in opts:
        from hydra.utils import instantiate

        bench = instantiate(opts, _convert_="all")
        if not isinstance(bench, Benchmark):
            raise TypeError(f"benchmark {name!r}: _target_ built a {type(bench).__name__}, not a Benchmark")
        return bench
    base = opts.pop("base", name)
    if base not in REGISTRY:
        raise ValueError(f"unknown benchmark {base!r}; registered: {sorted(REGISTRY)}")
    entry = REGISTRY[base]
    bench_opts = {k: opts.pop(k) for k in list(opts) if k in _BENCH_FIELDS}
    bench_opts.setdefault("answer_format", entry.answer_format)
    bench_opts.setdefault("description", entry.description)
    if bench_opts.get("n_problems") is None:
        bench_opts["n_problems"] = default_n_problems if default_n_problems is not None else entry.n_problems
    return Benchmark(name=name, task=entry.make_task(**{**entry.task_args, **opts}), **bench_opts)


def build_suite(benchmarks: Mapping[str, Any] | list[str] | tuple[str, ...] | str,
                default_n_problems: int | None = None) -> list[Benchmark]:
    """Benchmarks from a suite name, a list of names, or a mapping name -> options (None for defaults)."""
    if isinstance(benchmarks, str):
        if benchmarks not in SUITES:
            raise ValueError(f"unknown suite {benchmarks!r}; expected one of {sorted(SUITES)}")
        benchmarks = SUITES[benchmarks]
    if not isinstance(benchmarks, Mapping):
        benchmarks = {name: None for name in benchmarks}
    if not benchmarks:
        raise ValueError("a benchmark suite needs at least one benchmark")
    return [build_benchmark(str(name), opts, default_n_problems) for name, opts in benchmarks.items()]
