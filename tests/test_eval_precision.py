"""The standard error beside each evaluation score: the metric against numpy, across ranks, and in a suite."""

from __future__ import annotations

import json

import numpy as np
import pytest
from omegaconf import OmegaConf

from fpa.config.build import build
from fpa.config.conf_dir import CONF_DIR
from fpa.evaluation.metrics import MeanStandardError
from fpa.evaluation.runner import EvalSettings, evaluate_suite
from fpa.generation.hf import Sample
from fpa.prompting import PromptFormat


def test_standard_error_against_numpy_and_merged_like_one_process():
    rng = np.random.default_rng(0)
    v = rng.random(37)
    whole = MeanStandardError()
    whole.update(v.tolist())
    assert whole.compute().item() == pytest.approx(v.std(ddof=1) / np.sqrt(len(v)), rel=1e-12)
    a, b = MeanStandardError(), MeanStandardError()
    a.update(v[:20].tolist())
    b.update(v[20:].tolist())
    a.merge_state(b)  # what the sum reduction over ranks does
    assert a.compute().item() == pytest.approx(whole.compute().item(), rel=1e-12)
    one = MeanStandardError()
    one.update([0.5])
    assert np.isnan(one.compute().item())


class _Sampler:
    """Problem i gets (i mod 5) right samples out of k (the right one is the problem's solution)."""

    tokenizer = None

    def __init__(self, problems):
        self.by_prompt = {p.question: p for p in problems}

    def sample(self, prompts, n, temperature, top_p, seed, desc):
        out = []
        for i, prompt in enumerate(prompts):
            p = self.by_prompt[prompt.strip()]
            out += [Sample(i, j, p.solution if j < i % 5 else "no answer", "stop", 3) for j in range(n)]
        return out


def test_a_suite_reports_the_standard_error_of_pass1_over_problems():
    node = OmegaConf.merge(OmegaConf.load(CONF_DIR / "benchmarks" / "arith.yaml"),
                           {"task": {"n_terms": 2, "max_operand": 9}, "name": "arith", "n_problems": 12})
    bench = build(node, "benchmarks.arith")
    problems = bench.problems()
    settings = EvalSettings(k=4, pass_at=[1], maj_at=[], instruction="")
    result = evaluate_suite(_Sampler(problems), [bench], PromptFormat(), settings, suite="t").benchmarks["arith"]
    per_problem = np.array([min(i % 5, 4) / 4 for i in range(len(problems))])
    assert result.metrics["pass@1"] == pytest.approx(per_problem.mean())
    assert result.pass1_se == pytest.approx(per_problem.std(ddof=1) / np.sqrt(len(per_problem)), rel=1e-12)
    assert json.loads(json.dumps(result.summary()))["pass1_se"] == pytest.approx(result.pass1_se)
