"""Stage `eval`: held-out pass@1 (mean over k samples at a set temperature), results as JSON."""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import DictConfig

from fpa.evaluation.heldout import evaluate_problems
from fpa.generation.hf import HFGenerator
from fpa.models.loading import load_model, load_tokenizer
from fpa.stages.cache import cached_stage
from fpa.stages.runtime import make_prompt, make_task, plain


def _evaluate(cfg: DictConfig, model_path: str, out: Path) -> dict:
    e = cfg.eval
    task = make_task(cfg)
    tok = load_tokenizer(model_path)
    model = load_model(model_path, cfg.model.dtype, frozen=True)
    gen = HFGenerator(model, tok, batch_size=e.batch_size, max_new_tokens=cfg.generate.max_new_tokens)
    res = evaluate_problems(gen, task, task.problems("test", e.n_problems, seed=cfg.data_seed), make_prompt(cfg),
                            k=e.k, temperature=e.temperature, top_p=e.top_p, seed=e.seed, name=task.name)
    summary = {**res.summary(), "temperature": e.temperature, "seed": e.seed, "model": model_path}
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval.json").write_text(json.dumps(summary, indent=2))
    with open(out / "samples.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in res.samples)
    return summary


def evaluate_model(cfg: DictConfig, model_path: str, out: Path | None = None, ident: dict | None = None) -> dict:
    """Evaluate into ``out``; with ``ident`` (a model's cache identity) the result is cached instead."""
    if ident is None:
        return _evaluate(cfg, model_path, out)
    key = {"model": ident, "task": plain(cfg.task), "prompt": plain(cfg.model.prompt), "eval": plain(cfg.eval),
           "max_new_tokens": cfg.generate.max_new_tokens, "seed": cfg.data_seed}
    path, _ = cached_stage(cfg.paths.cache_dir, "eval", key, lambda d: _evaluate(cfg, model_path, d))
    return json.loads((path / "eval.json").read_text())
