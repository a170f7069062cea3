"""Stage `eval`: a benchmark suite on a saved model with the configured generation backend.

The one evaluation path of the end of ``fpa-train`` (reference and policy) and ``fpa-eval``; the
in-training callback runs the same :func:`~fpa.evaluation.runner.evaluate_suite` on the live policy.
Writes ``results.json`` (the suite's metrics and settings) and ``samples/<benchmark>.jsonl``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fpa.config.keys import stage_key
from fpa.evaluation.runner import evaluate_suite, write_samples
from fpa.evaluation.suite import Suite
from fpa.generation.backends import load_backend
from fpa.generation.trajectories import SamplingSettings
from fpa.models.loading import load_tokenizer
from fpa.prompting import PromptFormat
from fpa.stages.cache import cached_stage

VERSION = "2"


def headline(report: dict[str, Any]) -> dict[str, Any]:
    """The summary ``results.json`` keeps per model: the suite's first benchmark, plus the whole suite."""
    name = next(iter(report["benchmarks"]))
    metrics = report["benchmarks"][name]["metrics"]
    return {"benchmark": name, "pass@1": metrics["pass@1"], "pass@1_se": report["benchmarks"][name].get("pass1_se"),
            "process": metrics.get("process"),
            "n_problems": report["benchmarks"][name]["n_problems"], "k": report["settings"]["k"],
            "average": report["average"], "suite": report}


def evaluate_to(model_path: str, suite: Suite, prompt: PromptFormat, generate: SamplingSettings, out: Path, *,
                dtype: str = "float32", tokenizer: str | None = None, trust_remote_code: bool = False,
                progress: bool = True, save_samples: bool = True):
    """Run ``suite`` on ``model_path``; write ``results.json`` (+ samples) into ``out``; return the SuiteResult."""
    tok = load_tokenizer(tokenizer or model_path, trust_remote_code)
    options = dict(generate.engine)
    if generate.backend == "hf":
        options.setdefault("trust_remote_code", trust_remote_code)
    sampler = load_backend(generate.backend, model_path, tok, dtype=dtype, batch_size=suite.batch_size,
                           max_new_tokens=suite.max_new_tokens, progress=progress, **options)
    result = evaluate_suite(sampler, list(suite.benchmarks.values()), prompt, suite.settings(), suite=suite.name)
    out.mkdir(parents=True, exist_ok=True)
    report = result.to_dict()
    if save_samples:
        for name, path in write_samples(result, out / "samples").items():
            report["benchmarks"][name]["samples_file"] = str(Path(path).relative_to(out))
    report["model"] = {"path": str(model_path), "backend": generate.backend, "dtype": dtype,
                       "batch_size": suite.batch_size, "engine": dict(generate.engine)}
    report["prompt"] = {"template": prompt.template, "use_chat_template": prompt.use_chat_template,
                        "system": prompt.system}
    (out / "results.json").write_text(json.dumps(report, indent=2, default=str))
    return result, report


def eval_inputs(model_key: str, suite: Suite, prompt: PromptFormat, generate: SamplingSettings, dtype: str) -> dict:
    """What a cached evaluation depends on: the model, the suite, the prompt and the backend."""
    return {"model": model_key, "suite": suite, "prompt": prompt, "backend": generate.backend,
            "engine": generate.engine, "dtype": dtype}


def evaluate_model(model_path: str, suite: Suite, prompt: PromptFormat, generate: SamplingSettings, out: Path | None,
                   *, dtype: str = "float32", key: str | None = None, cache_dir: str | Path | None = None,
                   info: dict | None = None) -> dict[str, Any]:
    """Evaluate into ``out``; with ``key`` (a model's cache key) the result is cached under ``cache_dir`` instead.

    The summary's ``dir`` is where the evaluation's results.json and samples are (for paired comparisons).
    ``info``, if given, receives ``cached``: whether the evaluation came from the cache.
    """
    info = {} if info is None else info
    info["cached"] = False
    if key is None:
        return {**headline(evaluate_to(model_path, suite, prompt, generate, out, dtype=dtype)[1]), "dir": str(out)}
    inputs = eval_inputs(key, suite, prompt, generate, dtype)
    path, info["cached"] = cached_stage(cache_dir, "eval", stage_key("eval", VERSION, **inputs), inputs,
                           lambda d: evaluate_to(model_path, suite, prompt, generate, d, dtype=dtype))
    return {**headline(json.loads((path / "results.json").read_text())), "dir": str(path)}
