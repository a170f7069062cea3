"""CHAMP (Mao et al., 2024): 270 competition problems shipped inside the ``champ-dataset`` PyPI package.

The package carries its data as ``champ_dataset/dataset_files/v0.json`` and reads it with
``champ_dataset.load("v0")``; nothing is downloaded. Each problem has ``text``, a ``category``
(Number-Theory, Inequality, Polynomial, Sequence, Combinatorics), step-by-step ``solution`` and
a ``raw_answer`` whose math spans are marked with ``@@...@@`` (``answer`` is the same text unmarked).

CHAMP's answers were graded by a language model in the paper. Here only answers a verifier can
check are used:

- ``answers="numeric"`` (default): the 79 problems whose answer is a plain integer;
- ``answers="expression"``: those, plus answers that are one marked expression (``2^(n-1)``) or a
  few marked forms joined by "or equivalently" (``C(10, 5)``, ``252``), checked with math-verify;
  any of the equivalent forms counts.

Free-text answers ("No", "The limit does not exist") and multi-part answers are left out.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field

from fpa.tasks.base import Problem, Verdict
from fpa.tasks.equivalence import VerificationStats
from fpa.tasks.math_tasks import verify_answer

_MARKED = re.compile(r"@@(.*?)@@", re.DOTALL)
_INTEGER = re.compile(r"^[+-]?\d+$")
_EQUIVALENTLY = re.compile(r"^\s*,?\s*or\s+equivalently,?\s*$", re.IGNORECASE)
CATEGORIES = ("Combinatorics", "Inequality", "Number-Theory", "Polynomial", "Sequence")


def checkable_answers(raw_answer: str, mode: str) -> list[str] | None:
    """The equivalent gold forms of a CHAMP answer, or None if ``mode`` does not take it."""
    raw = raw_answer.strip()
    if _INTEGER.match(raw.replace("@@", "")):
        return [raw.replace("@@", "")]
    if mode != "expression":
        return None
    spans = _MARKED.findall(raw)
    if not spans:
        return None
    rest = _MARKED.split(raw)  # text, span, text, span, ..., text
    outside = rest[0::2]
    if outside[0].strip() or outside[-1].strip():
        return None
    if not all(_EQUIVALENTLY.match(sep) for sep in outside[1:-1]):
        return None
    return [s.strip() for s in spans if s.strip()] or None


@functools.lru_cache(maxsize=2)
def _champ_rows(version: str) -> tuple[tuple[str, str, str, str, str], ...]:
    """(id, text, category, raw answer, solution) per problem, parsed once per process (the file is 70 MB)."""
    try:
        import champ_dataset
    except ImportError as e:  # pragma: no cover - a dependency of the project
        raise ImportError("the champ benchmark needs the `champ-dataset` package: pip install champ-dataset") from e
    data = champ_dataset.load(version)
    rows = []
    for pid, p in data.problems.items():
        steps = getattr(p.solution, "steps", None) or []
        solution = "\n".join(s.text for s in steps if getattr(s, "text", None))
        rows.append((pid, p.text.strip(), p.category, p.raw_answer, solution))
    return tuple(rows)


@dataclass
class ChampTask:
    answers: str = "numeric"  # numeric | expression
    categories: list[str] | None = None  # None: all five
    version: str = "v0"
    name: str = "champ"
    timeout_s: float = 5.0
    stats: VerificationStats = field(default_factory=VerificationStats, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.answers not in ("numeric", "expression"):
            raise ValueError(f"champ: answers must be 'numeric' or 'expression', got {self.answers!r}")
        if self.categories is not None:
            bad = set(self.categories) - set(CATEGORIES)
            if bad:
                raise ValueError(f"champ: unknown categories {sorted(bad)}; expected some of {CATEGORIES}")
        self._all: list[Problem] | None = None

    def _load(self) -> list[Problem]:
        if self._all is None:
            out = []
            for pid, text, category, raw_answer, solution in _champ_rows(self.version):
                if self.categories is not None and category not in self.categories:
                    continue
                golds = checkable_answers(raw_answer, self.answers)
                if golds is None:
                    continue
                out.append(Problem(id=f"{self.name}/test/{pid}", question=text, answer=golds[0], solution=solution,
                                   source=self.name, split="test",
                                   metadata={"category": category, "raw_answer": raw_answer,
                                             "alternatives": golds[1:]}))
            self._all = out
        return self._all

    def problems(self, split: str = "test", n: int | None = None, seed: int = 0) -> list[Problem]:
        """CHAMP is evaluation-only: ``split`` must be "test". ``n`` None or <= 0: all, in CHAMP's order;
        otherwise a seeded sample of ``n``."""
        if split != "test":
            raise ValueError(f"champ: evaluation only, no {split!r} split (use 'test')")
        problems = self._load()
        if n is None or n <= 0:
            return list(problems)
        if n > len(problems):
            raise ValueError(f"champ: asked for {n} problems but {len(problems)} have checkable answers "
                             f"(answers={self.answers!r})")
        import random

        order = list(range(len(problems)))
        random.Random(f"{self.name}:{seed}:test").shuffle(order)
        return [problems[i] for i in order[:n]]

    def verify(self, problem: Problem, completion: str) -> Verdict:
        return verify_answer(problem, completion, self.timeout_s, stats=self.stats)
