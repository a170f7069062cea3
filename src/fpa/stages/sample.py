"""Stage `generate`: K samples per training problem from the reference, verified, stored with `datasets`."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path

from omegaconf import DictConfig

from fpa.data.records import save_trajectories
from fpa.generation.hf import HFGenerator
from fpa.models.loading import load_model, load_tokenizer
from fpa.stages.cache import cached_stage
from fpa.stages.runtime import make_prompt, make_task, plain


def rl_problems(cfg: DictConfig, task):
    """Training problems for offline RL: the train split after the ones the warm start used."""
    skip = cfg.sft.n_problems if cfg.sft.enabled else 0
    return task.problems("train", skip + cfg.generate.n_problems, seed=cfg.seed)[skip:]


def trajectory_stats(records: list[dict]) -> dict:
    per_problem = defaultdict(list)
    for r in records:
        per_problem[r["problem_id"]].append(r["reward"])
    mixed = sum(1 for v in per_problem.values() if 0 < sum(x > 0.5 for x in v) < len(v))
    return {"n_trajectories": len(records), "n_problems": len(per_problem),
            "accuracy": sum(r["reward"] for r in records) / max(len(records), 1),
            "process_accuracy": sum(bool(r["process"]) for r in records) / max(len(records), 1),
            "share_problems_with_pairs": mixed / max(len(per_problem), 1)}


def generate_trajectories(cfg: DictConfig, model_path: str, model_ident: dict) -> tuple[Path, dict]:
    """(trajectory file, cache identity)."""
    g = cfg.generate
    ident = {"model": model_ident, "task": plain(cfg.task), "prompt": plain(cfg.model.prompt), "generate": plain(g),
             "sft_n": cfg.sft.n_problems if cfg.sft.enabled else 0, "seed": cfg.seed}

    def build(out: Path) -> None:
        start = time.perf_counter()
        task, prompt, tok = make_task(cfg), make_prompt(cfg), load_tokenizer(model_path)
        model = load_model(model_path, cfg.model.dtype, frozen=True)
        problems = rl_problems(cfg, task)
        gen = HFGenerator(model, tok, batch_size=g.batch_size, max_new_tokens=g.max_new_tokens)
        prompts = [prompt(p.question, tok) for p in problems]
        samples = gen.sample(prompts, n=g.k, temperature=g.temperature, top_p=g.top_p, seed=g.seed,
                             desc="generate trajectories")
        generator = {"model": model_path, "temperature": g.temperature, "top_p": g.top_p, "seed": g.seed,
                     "max_new_tokens": g.max_new_tokens, "backend": "hf"}
        records = []
        for s in samples:
            p = problems[s.prompt_index]
            v = task.verify(p, s.completion)
            records.append({"problem_id": p.id, "sample_index": s.sample_index, "prompt": prompts[s.prompt_index],
                            "completion": s.completion, "reward": v.reward, "outcome": v.outcome,
                            "process": v.process, "extracted_answer": v.extracted, "answer": p.answer,
                            "finish_reason": s.finish_reason, "n_tokens": s.n_tokens, "generator": generator})
        save_trajectories(records, out / "trajectories.parquet")
        stats = {**trajectory_stats(records), "tokens_per_s": gen.tokens_per_second,
                 "wall_s": time.perf_counter() - start}
        (out / "stats.json").write_text(json.dumps(stats, indent=2))

    path, _ = cached_stage(cfg.paths.cache_dir, "trajectories", ident, build)
    return path / "trajectories.parquet", ident
