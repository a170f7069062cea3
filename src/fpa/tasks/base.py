"""Records shared by every task: a problem and the verifier's verdict on one completion."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol


@dataclass
class Problem:
    id: str
    question: str
    answer: str
    solution: str = ""
    source: str = ""
    split: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Verdict:
    reward: float  # what training uses: 1.0 correct, 0.0 not
    outcome: bool  # final answer right
    process: bool | None = None  # every intermediate step right (None: the task cannot tell)
    extracted: str | None = None  # the final answer as parsed from the completion


class Task(Protocol):
    name: str

    def problems(self, split: str, n: int, seed: int = 0) -> list[Problem]: ...

    def verify(self, problem: Problem, completion: str) -> Verdict: ...
