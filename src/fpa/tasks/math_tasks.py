"""Verifiable math tasks: a problem source, the answer extractor and the math-verify checker.

:class:`MathTask` serves every real source in :mod:`fpa.tasks.sources` (the MATH and GSM8K training
sets and the benchmark test sets), loaded from the hub id or a local file in the same schema::

    MathTask(source="gsm8k")                                  # openai/gsm8k from the hub
    MathTask(source="gsm8k", path="data/gsm8k_train.jsonl")   # a local copy, same fields

Splits: ``train`` / ``dev`` / ``test`` map to the source's own splits (``Schema.splits``). Where
``train`` and ``dev`` share one source split, ``dev`` is a ``dev_share`` slice of it chosen by a hash
of the question, so the two are disjoint and stable whatever ``n`` and ``seed``. Benchmarks have
only ``test``.

Verification (:func:`verify_answer`): extract the final answer (``\\boxed{}``, ``#### x``, "the answer
is x"; see :mod:`fpa.tasks.answers`) and compare it with the gold answer, exactly for plain numbers
and with math-verify otherwise, under a time limit. A check that times out or fails scores 0 and
is counted in the task's ``stats``. Problems may list equivalent gold answers in
``metadata["alternatives"]``; any one matching is correct.
"""

from __future__ import annotations

import hashlib
import random
import threading
from dataclasses import dataclass, field

from fpa.tasks.answers import extract_final_answer
from fpa.tasks.base import Problem, Verdict
from fpa.tasks.equivalence import VerificationStats, answers_match
from fpa.tasks.sources import SCHEMAS, ParsedRow, load_rows, parse_rows

SPLITS = ("train", "dev", "test")
_BARE_MAX_CHARS = 40


def hash_bucket(text: str, salt: str = "") -> float:
    """A stable number in [0, 1) from ``text``: the same question lands in the same bucket everywhere."""
    return int(hashlib.sha1(f"{salt}{text}".encode()).hexdigest()[:8], 16) / 0x100000000


def bare_answer(completion: str) -> str | None:
    """A completion that is only a short answer ("42", "-3/4"): its last non-blank line, else None."""
    lines = [ln.strip() for ln in completion.strip().splitlines() if ln.strip()]
    if not lines or len(lines[-1]) > _BARE_MAX_CHARS:
        return None
    return lines[-1].rstrip(".").strip() or None


def verify_answer(problem: Problem, completion: str, timeout_s: float = 5.0, *, allow_bare: bool = False,
                  stats: VerificationStats | None = None) -> Verdict:
    """Outcome-only verdict: the extracted final answer equals the gold one (or an alternative)."""
    extracted = extract_final_answer(completion)
    if extracted is None and allow_bare:
        extracted = bare_answer(completion)
    golds = [problem.answer, *problem.metadata.get("alternatives", [])] if problem.metadata else [problem.answer]
    correct = False
    if extracted is not None:
        for gold in golds:
            if answers_match(extracted, str(gold), timeout_s, stats=stats).correct:
                correct = True
                break
    else:
        answers_match(None, problem.answer, timeout_s, stats=stats)  # counted as checked, no answer
    return Verdict(reward=float(correct), outcome=correct, process=None, extracted=extracted)


@dataclass
class MathTask:
    """A real math source (``source`` is a key of :data:`fpa.tasks.sources.SCHEMAS`) with answer verification.

    ``path``: hub id, local directory, or local ``.jsonl``/``.json``/``.parquet`` file in the source's
    schema (a file stands for every split asked of it); None: the source's hub id. ``splits``
    overrides which source split serves each of ours.
    """

    source: str = "gsm8k"
    path: str | None = None
    config: str | None = None  # hub config; None: the schema's
    splits: dict[str, str] | None = None
    name: str = ""
    dev_share: float = 0.05  # of a source split shared by train and dev
    timeout_s: float = 5.0  # per answer check
    allow_bare: bool = False  # with no boxed / #### / "answer is", read a short last line as the answer
    skip_invalid: bool = False  # skip malformed rows of a local file (counted in n_skipped) instead of failing
    stats: VerificationStats = field(default_factory=VerificationStats, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.source not in SCHEMAS:
            raise ValueError(f"math task: unknown source {self.source!r}; expected one of {sorted(SCHEMAS)}")
        if not 0 < self.dev_share < 1:
            raise ValueError(f"math task: dev_share must be in (0, 1), got {self.dev_share}")
        from fpa.models.spec import check_input_path

        check_input_path("path", self.path, "data file")
        self.schema = SCHEMAS[self.source]
        self.name = self.name or self.source
        self._splits = dict(self.splits) if self.splits else dict(self.schema.splits)
        self._cache: dict[str, list[ParsedRow]] = {}
        self._lock = threading.Lock()
        self.n_skipped: dict[str, int] = {}  # per source split: rows without a readable gold answer

    @property
    def location(self) -> str:
        return self.path or self.schema.hub_id

    def _rows(self, source_split: str) -> list[ParsedRow]:
        with self._lock:
            if source_split not in self._cache:
                # The schema's hub config applies to its hub id; a local copy or another id takes ``config``.
                config = self.config if self.config is not None else (self.schema.config if self.path is None
                                                                       else None)
                loaded = load_rows(self.location, config, source_split)
                rows, skipped = parse_rows(self.schema, loaded, self.skip_invalid)
                self._cache[source_split] = rows
                self.n_skipped[source_split] = skipped
            return self._cache[source_split]

    def split_rows(self, split: str) -> list[ParsedRow]:
        """Every row of ``split`` in source order (dev carved out of train where they share a source split)."""
        if split not in self._splits:
            raise ValueError(f"{self.name}: no {split!r} split; this source has {sorted(self._splits)}")
        source_split = self._splits[split]
        rows = self._rows(source_split)
        sharing = [s for s in ("train", "dev") if self._splits.get(s) == source_split]
        if split in ("train", "dev") and len(sharing) == 2:
            in_dev = [hash_bucket(r.question, "fpa-dev:") < self.dev_share for r in rows]
            rows = [r for r, d in zip(rows, in_dev) if d == (split == "dev")]
        return rows

    def problems(self, split: str, n: int | None = None, seed: int = 0) -> list[Problem]:
        """``n`` problems of ``split`` (a seeded sample, the shorter list a prefix of the longer); all in
        source order when ``n`` is None or <= 0."""
        rows = self.split_rows(split)
        if n is not None and n > 0:
            if n > len(rows):
                raise ValueError(f"{self.name}: asked for {n} {split} problems but {self.location} has {len(rows)}")
            order = list(range(len(rows)))
            random.Random(f"{self.name}:{seed}:{split}").shuffle(order)
            rows = [rows[i] for i in order[:n]]
        return [Problem(id=f"{self.name}/{split}/{r.id}", question=r.question, answer=r.answer, solution=r.solution,
                        source=self.name, split=split, metadata=dict(r.metadata)) for r in rows]

    def verify(self, problem: Problem, completion: str) -> Verdict:
        return verify_answer(problem, completion, self.timeout_s, allow_bare=self.allow_bare, stats=self.stats)
