"""A benchmark: a name, a problem source (a task), an answer format and the task's verifier.

Each benchmark is one YAML file in ``conf/benchmarks/`` (``_target_: fpa.evaluation.benchmarks.Benchmark``
with a nested task node), and a suite (``conf/benchmark/<suite>.yaml``, a
:class:`~fpa.evaluation.suite.Suite`) selects them in its defaults list, e.g.
``- /benchmarks@benchmarks.math500: math500``. Shipped: the paper's seven (math500, gsm8k, aime24,
aime25, amc23, minerva_math, olympiadbench: hub ids, or ``task.path=`` a local copy in the same
schema, see :mod:`fpa.tasks.sources`) and offline ones (arith, gsm_symbolic, chain_sum,
basic_arithmetic, champ). A second entry of the same benchmark under a new key with other task
settings is a new benchmark (``arith_8``: arith with ``task.n_terms: 8``).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

from fpa.tasks.base import Problem

log = logging.getLogger(__name__)

# The instruction appended to each question by answer format (unless the suite or benchmark sets one).
ANSWER_FORMATS: dict[str, str] = {
    "boxed": "Please reason step by step, and put your final answer within \\boxed{}.",
    "gsm8k": "Please reason step by step, and end with a line of the form \"#### <answer>\".",
    "arith": "",  # the embedded tiny model's own scratchpad format ends with "#### x"
    "bare": "",
}

# What a model's prompt format contains when it already asks for an answer format; the format's
# default instruction is then not appended a second time (an explicit instruction still is).
ANSWER_MARKERS: dict[str, str] = {"boxed": "\\boxed", "gsm8k": "####"}


@dataclass
class Benchmark:
    name: str = ""  # a suite names it after its key
    task: Any = None  # fpa.tasks.base.Task: problems(split, n, seed) and verify(problem, completion)
    answer_format: str = "boxed"  # a key of ANSWER_FORMATS: what the verifier reads, and the default instruction
    instruction: str | None = None  # appended to each question; None: the suite's, else the format's default
    split: str = "test"
    n_problems: int | None = None  # None: every problem of the split (procedural tasks need a number)
    problem_seed: int = 0  # which problems, when n_problems samples a subset
    max_new_tokens: int | None = None  # None: the suite's
    description: str = ""

    def __post_init__(self) -> None:
        if self.task is None or not callable(getattr(self.task, "verify", None)):
            raise ValueError(f"task: benchmark {self.name or '?'} needs a task node (problems + verify), got {self.task!r}")
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

    def instruction_text(self, suite_instruction: str | None = None, prompt=None) -> str:
        """The benchmark's, else the suite's, else the answer format's default instruction.

        The default is left out when ``prompt`` (the model's :class:`~fpa.prompting.PromptFormat`)
        already asks for that format (its system prompt or template holds ``\\boxed`` / ``####``),
        so the instruction is given once.
        """
        if self.instruction is not None:
            return self.instruction
        if suite_instruction is not None:
            return suite_instruction
        marker = ANSWER_MARKERS.get(self.answer_format)
        if prompt is not None and marker and marker in f"{prompt.system or ''}\n{prompt.template}":
            return ""
        return ANSWER_FORMATS[self.answer_format]

    def question_text(self, question: str, suite_instruction: str | None = None, prompt=None) -> str:
        instruction = self.instruction_text(suite_instruction, prompt)
        return f"{question}\n{instruction}" if instruction else question

    def verify(self, problem: Problem, completion: str):
        return self.task.verify(problem, completion)
