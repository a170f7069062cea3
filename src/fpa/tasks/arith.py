"""Embedded task `arith`: procedurally generated multi-step arithmetic with a written scratchpad.

A problem is a chain such as ``17+25-8+40``. Its worked solution writes one line per step,
each line reusing the previous result, and ends with a GSM8K-style final line::

    17+25=42
    42-8=34
    34+40=74
    #### 74

With ``style="boxed"`` (for pretrained chat models) the steps are spaced and the answer is boxed,
``17 + 25 = 42`` ... ``\\boxed{74}``, and the verifier extracts the final answer the way the math
tasks do (math-verify); the process cannot be judged then.

Correct and incorrect samples differ in a few digits and share every other token, which is
the "gradient entanglement" regime FPA targets. The verifier reports both the outcome (final
answer right) and the process (every step right), since a small model often reaches the right
answer through compensating mistakes.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass

from fpa.tasks.base import Problem, Verdict

_OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}
_STEP = re.compile(r"^(-?\d+)([+\-*])(\d+)=(-?\d+)$")
_FINAL = re.compile(r"^####\s*(-?\d+)\s*$")
SPLITS = ("train", "dev", "test")


def split_of(question: str, dev_share: float = 0.05, test_share: float = 0.10) -> str:
    """Deterministic split by content hash, so train/dev/test are disjoint by construction."""
    bucket = int(hashlib.sha1(question.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    if bucket < test_share:
        return "test"
    if bucket < test_share + dev_share:
        return "dev"
    return "train"


STYLES = ("scratchpad", "boxed")


def worked_solution(terms: list[int], ops: list[str], style: str = "scratchpad") -> tuple[str, int]:
    lines, acc = [], terms[0]
    for op, t in zip(ops, terms[1:]):
        new = _OPS[op](acc, t)
        lines.append(f"{acc}{op}{t}={new}" if style == "scratchpad" else f"{acc} {op} {t} = {new}")
        acc = new
    lines.append(f"#### {acc}" if style == "scratchpad" else f"\\boxed{{{acc}}}")
    return "\n".join(lines), acc


@dataclass
class ArithTask:
    """Multi-step arithmetic. Difficulty knobs: ``n_terms`` (steps + 1), ``max_operand``, ``ops``."""

    n_terms: int = 4
    min_operand: int = 1
    max_operand: int = 99
    ops: str = "+-"
    reward: str = "outcome"  # "outcome": right final answer; "process": and every step right
    style: str = "scratchpad"  # "scratchpad": 17+25=42 ... #### 74; "boxed": 17 + 25 = 42 ... \\boxed{74}
    name: str = "arith"

    def __post_init__(self) -> None:
        if self.n_terms < 2:
            raise ValueError(f"arith: n_terms must be >= 2, got {self.n_terms}")
        if self.reward not in ("outcome", "process"):
            raise ValueError(f"arith: reward must be 'outcome' or 'process', got {self.reward!r}")
        if self.style not in STYLES:
            raise ValueError(f"arith: style must be one of {', '.join(STYLES)}, got {self.style!r}")
        if self.style == "boxed" and self.reward == "process":
            raise ValueError("arith: reward 'process' needs style 'scratchpad' (a boxed answer's steps are not checked)")
        if bad := set(self.ops) - set(_OPS):
            raise ValueError(f"arith: unsupported ops {sorted(bad)}; choose from {sorted(_OPS)}")

    @property
    def tag(self) -> str:
        return f"arith-{self.n_terms}x{self.max_operand}{self.ops}"

    def problems(self, split: str, n: int, seed: int = 0) -> list[Problem]:
        """``n`` distinct problems of ``split``, the same list for the same (split, n, seed)."""
        if split not in SPLITS:
            raise ValueError(f"arith: unknown split {split!r}; expected one of {SPLITS}")
        rng = random.Random(f"{self.tag}:{seed}:{split}")
        seen: set[str] = set()
        out: list[Problem] = []
        for _ in range(200 * n + 1000):
            if len(out) == n:
                break
            terms = [rng.randint(self.min_operand, self.max_operand) for _ in range(self.n_terms)]
            ops = [rng.choice(self.ops) for _ in range(self.n_terms - 1)]
            question = str(terms[0]) + "".join(f"{o}{t}" for o, t in zip(ops, terms[1:]))
            if question in seen or split_of(question) != split:
                continue
            seen.add(question)
            solution, answer = worked_solution(terms, ops, self.style)
            out.append(Problem(id=f"{self.tag}/{split}/{len(out)}", question=question, answer=str(answer),
                               solution=solution, source=self.tag, split=split,
                               metadata={"terms": terms, "ops": ops}))
        if len(out) < n:
            raise ValueError(f"arith: only {len(out)} distinct {split} problems exist for {self.tag}, asked {n}")
        return out

    def verify(self, problem: Problem, completion: str) -> Verdict:
        if self.style == "boxed":
            from fpa.tasks.math_tasks import verify_answer

            return verify_answer(problem, completion)
        return verify_arith(problem, completion, self.reward)


def verify_arith(problem: Problem, completion: str, reward: str = "outcome") -> Verdict:
    """Outcome: the ``#### x`` line equals the answer. Process: every step line is the right step."""
    lines = [ln.strip() for ln in completion.strip().splitlines() if ln.strip()]
    extracted = None
    if lines and (m := _FINAL.match(lines[-1])):
        extracted = m.group(1)
        lines = lines[:-1]
    outcome = extracted is not None and int(extracted) == int(problem.answer)
    terms, ops = problem.metadata["terms"], problem.metadata["ops"]
    process = extracted is not None and len(lines) == len(ops)
    acc = terms[0]
    for i, line in enumerate(lines if process else []):
        m = _STEP.match(line)
        if not m:
            process = False
            break
        left, op, right, result = int(m.group(1)), m.group(2), int(m.group(3)), int(m.group(4))
        expected = _OPS[ops[i]](acc, terms[i + 1])
        if (left, op, right, result) != (acc, ops[i], terms[i + 1], expected):
            process = False
            break
        acc = expected
    process = process and outcome
    correct = outcome and (process or reward == "outcome")
    return Verdict(reward=float(correct), outcome=outcome, process=process, extracted=extracted)
