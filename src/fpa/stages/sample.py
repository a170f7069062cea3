"""Stage `generate`: K samples per training problem from the reference, verified, stored as Parquet shards.

fpa-train and fpa-generate both come through :func:`generate_to`, so they write the same
resumable shard directory (see :mod:`fpa.generation.trajectories`). Within fpa-train the set
lives at ``<cache_dir>/trajectories/<key>``: a run killed mid-stage resumes it shard by shard.
"""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import DictConfig

from fpa.generation.backends import load_backend
from fpa.generation.trajectories import SamplingSettings, write_trajectory_set
from fpa.models.loading import load_tokenizer
from fpa.stages.cache import config_key
from fpa.stages.runtime import make_prompt, make_task, plain


def rl_problems(cfg: DictConfig, task, skip: int | None = None):
    """Training problems for offline RL: by default the train split after the ones the warm start used."""
    if skip is None:
        skip = cfg.sft.n_problems if cfg.sft.enabled else 0
    return task.problems("train", skip + cfg.generate.n_problems, seed=cfg.data_seed)[skip:]


def trajectory_identity(cfg: DictConfig, model_ident: dict, skip: int | None = None) -> dict:
    """What the trajectories depend on; its hash names the cache directory."""
    return {"model": model_ident, "task": plain(cfg.task), "prompt": plain(cfg.model.prompt),
            "sampling": SamplingSettings.from_config(cfg.generate).identity(),
            "n_problems": cfg.generate.n_problems,
            "sft_n": (cfg.sft.n_problems if cfg.sft.enabled else 0) if skip is None else skip, "seed": cfg.data_seed}


def generate_to(cfg: DictConfig, model_path: str, ident: dict, out: Path, skip: int | None = None,
                progress: bool = True) -> dict:
    """Write (or finish) the trajectory set of ``model_path`` into ``out``; returns its stats report."""
    g = cfg.generate
    settings = SamplingSettings.from_config(g)
    task, prompt, tok = make_task(cfg), make_prompt(cfg), load_tokenizer(model_path)
    problems = rl_problems(cfg, task, skip)
    prompts = [prompt(p.question, tok) for p in problems]
    options = plain(g.get(settings.backend)) or {}  # backend-specific engine options, e.g. generate.vllm

    def load_generator():
        return load_backend(settings.backend, model_path, tok, dtype=cfg.model.dtype, batch_size=settings.batch_size,
                            max_new_tokens=settings.max_new_tokens, progress=progress, **options)

    return write_trajectory_set(out, problems=problems, prompts=prompts, task=task, load_generator=load_generator,
                                settings=settings, model_name=str(model_path), identity=ident, progress=progress)


def generate_trajectories(cfg: DictConfig, model_path: str, model_ident: dict) -> tuple[Path, dict]:
    """(trajectory shard directory, cache identity)."""
    ident = trajectory_identity(cfg, model_ident)
    out = Path(cfg.paths.cache_dir) / "trajectories" / config_key(ident)
    if not (out / "stage.json").exists():
        generate_to(cfg, model_path, ident, out)
        # The marker every cached stage has (fpa.stages.cache); the manifest alone also says "complete".
        (out / "stage.json").write_text(json.dumps({"stage": "trajectories", "config": ident}, indent=2,
                                                   default=str))
    return out, ident
