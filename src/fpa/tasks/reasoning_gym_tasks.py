"""Procedurally generated task families from the ``reasoning-gym`` package, verified offline.

    ReasoningGymTask(family="gsm_symbolic")                          # GSM8K-style templates, fresh numbers
    ReasoningGymTask(family="chain_sum", config={"min_terms": 3, "max_terms": 5, "max_digits": 2})
    ReasoningGymTask(family="basic_arithmetic", config={"max_terms": 4})

Any family whose answers are numbers works; ``config`` goes to ``reasoning_gym.create_dataset``.
Splits are disjoint by construction: problems are generated from a seed derived from
(family, config, seed, split, round) and kept only if a hash of the question falls in that split's
bucket (10% test, 5% dev, the rest train), so no question is in two splits.

Verification is local: ``verifier="math"`` (default) extracts the final answer (``\\boxed{}``,
``#### x``, "the answer is x", or a bare short reply, since the family prompts ask for the bare
result) and compares it with the gold answer like every math task; ``verifier="native"`` uses the
family's own ``score_answer`` (correct only at score 1.0; gsm_symbolic gives 0.01 to a wrong
answer, which is not a reward here).
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from typing import Any

from omegaconf import OmegaConf

from fpa.tasks.answers import extract_final_answer
from fpa.tasks.base import Problem, Verdict
from fpa.tasks.equivalence import VerificationStats
from fpa.tasks.math_tasks import bare_answer, hash_bucket, verify_answer

SPLITS = ("train", "dev", "test")
_SHARES = {"test": (0.0, 0.10), "dev": (0.10, 0.15), "train": (0.15, 1.0)}


def _import_reasoning_gym():
    try:
        import reasoning_gym
    except ImportError as e:  # pragma: no cover - a dependency of the project
        raise ImportError("reasoning-gym tasks need the `reasoning-gym` package: pip install reasoning-gym") from e
    return reasoning_gym


def split_of_question(question: str) -> str:
    bucket = hash_bucket(question, "fpa-rg:")
    return next(s for s, (lo, hi) in _SHARES.items() if lo <= bucket < hi)


def _plain(value: Any) -> Any:
    """JSON-safe copy of a reasoning-gym metadata dict (it may hold tuples, sets or numpy scalars)."""
    return json.loads(json.dumps(value, default=str))


@dataclass
class ReasoningGymTask:
    family: str = "gsm_symbolic"
    config: dict[str, Any] = field(default_factory=dict)  # reasoning_gym.create_dataset options for the family
    name: str = ""  # default: the family name
    verifier: str = "math"  # "math" | "native"
    timeout_s: float = 5.0
    chunk: int = 512  # problems generated per round
    stats: VerificationStats = field(default_factory=VerificationStats, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.verifier not in ("math", "native"):
            raise ValueError(f"reasoning-gym task: verifier must be 'math' or 'native', got {self.verifier!r}")
        if OmegaConf.is_config(self.config):  # from Hydra: plain containers for reasoning-gym's validation
            self.config = OmegaConf.to_container(self.config, resolve=True)
        self.config = dict(self.config or {})
        for reserved in ("seed", "size"):
            if reserved in self.config:
                raise ValueError(f"reasoning-gym task: set `{reserved}` through problems(), not config")
        rg = _import_reasoning_gym()
        from reasoning_gym.factory import DATASETS

        if self.family not in DATASETS:
            raise ValueError(f"reasoning-gym task: unknown family {self.family!r}")
        self.name = self.name or self.family
        self._rg = rg
        self._scorer = None
        self._lock = threading.Lock()
        # Fail now on a bad family config, not in the middle of a run.
        rg.create_dataset(self.family, size=1, seed=0, **self.config)

    def _round_seed(self, seed: int, split: str, round_: int) -> int:
        key = json.dumps([self.family, self.config, seed, split, round_], sort_keys=True, default=str)
        return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16)

    def problems(self, split: str, n: int, seed: int = 0) -> list[Problem]:
        """``n`` distinct problems of ``split``, the same list for the same (split, n, seed, config)."""
        if split not in SPLITS:
            raise ValueError(f"{self.name}: unknown split {split!r}; expected one of {SPLITS}")
        if n is None or n < 1:
            raise ValueError(f"{self.name}: procedural tasks need n >= 1 problems, got {n}")
        out: list[Problem] = []
        seen: set[str] = set()
        for round_ in range(max(20, 40 * n // self.chunk + 20)):
            ds = self._rg.create_dataset(self.family, size=self.chunk, seed=self._round_seed(seed, split, round_),
                                         **self.config)
            for entry in ds:
                q = entry["question"]
                if q in seen or split_of_question(q) != split:
                    continue
                seen.add(q)
                out.append(self._problem(entry, split, len(out)))
                if len(out) == n:
                    return out
        raise ValueError(f"{self.name}: only {len(out)} distinct {split} problems found for config {self.config}, "
                         f"asked {n}")

    def _problem(self, entry: dict[str, Any], split: str, index: int) -> Problem:
        meta = _plain(entry.get("metadata") or {})
        answer = str(entry["answer"]).strip()
        cot = meta.get("answer_cot") if isinstance(meta.get("answer_cot"), str) else None
        solution = f"{cot.strip()}\n#### {answer}" if cot else f"#### {answer}"
        return Problem(id=f"{self.name}/{split}/{index}", question=entry["question"], answer=answer, solution=solution,
                       source=self.name, split=split, metadata={"family": self.family, "rg": meta})

    def verify(self, problem: Problem, completion: str) -> Verdict:
        if self.verifier == "math":
            return verify_answer(problem, completion, self.timeout_s, allow_bare=True, stats=self.stats)
        extracted = extract_final_answer(completion) or bare_answer(completion)
        with self._lock:
            if self._scorer is None:
                self._scorer = self._rg.create_dataset(self.family, size=1, seed=0, **self.config)
        entry = {"question": problem.question, "answer": problem.answer, "metadata": problem.metadata.get("rg", {})}
        try:
            correct = extracted is not None and float(self._scorer.score_answer(extracted, entry)) >= 1.0
        except Exception:  # noqa: BLE001 - a scorer crash on odd output is a wrong answer
            correct = False
        return Verdict(reward=float(correct), outcome=correct, process=None, extracted=extracted)
