"""Held-out pass@1: k samples per problem at a set temperature, verified, averaged."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fpa.generation.hf import HFGenerator
from fpa.prompting import PromptFormat
from fpa.tasks.base import Problem


@dataclass
class EvalResult:
    name: str
    pass1: float  # mean over problems of the fraction of correct samples
    outcome: float  # share of samples with the right final answer
    process: float | None  # share of samples with every step right
    n_problems: int
    k: int
    samples: list[dict[str, Any]]

    def summary(self) -> dict[str, Any]:
        return {"benchmark": self.name, "pass@1": self.pass1, "outcome": self.outcome, "process": self.process,
                "n_problems": self.n_problems, "k": self.k}


def evaluate_problems(generator: HFGenerator, task, problems: list[Problem], prompt: PromptFormat, k: int = 4,
                      temperature: float = 0.6, top_p: float = 1.0, seed: int = 0, name: str = "") -> EvalResult:
    prompts = [prompt(p.question, generator.tokenizer) for p in problems]
    samples = generator.sample(prompts, n=k, temperature=temperature, top_p=top_p, seed=seed,
                               desc=f"eval {name}".strip())
    per_problem = [0.0] * len(problems)
    rows, n_outcome, n_process, process_known = [], 0, 0, True
    for s in samples:
        prob = problems[s.prompt_index]
        v = task.verify(prob, s.completion)
        per_problem[s.prompt_index] += v.reward / k
        n_outcome += v.outcome
        process_known &= v.process is not None
        n_process += bool(v.process)
        rows.append({"problem_id": prob.id, "sample": s.sample_index, "completion": s.completion,
                     "reward": v.reward, "outcome": v.outcome, "process": v.process, "extracted": v.extracted})
    n = max(len(samples), 1)
    return EvalResult(name=name or task.name, pass1=sum(per_problem) / max(len(problems), 1),
                      outcome=n_outcome / n, process=n_process / n if process_known else None,
                      n_problems=len(problems), k=k, samples=rows)
