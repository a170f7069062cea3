"""Stage `generate`: K samples per training problem from the reference, verified, stored as Parquet shards.

fpa-train and fpa-generate both come through :func:`generate_to`, so they write the same
resumable shard directory (see :mod:`fpa.generation.trajectories`). Within fpa-train the set
lives at ``<cache_dir>/trajectories/<key>``: a run killed mid-stage resumes it shard by shard.
Writing holds ``<key>.lock`` (:mod:`fpa.stages.locks`), so a second process never resumes into a
set a live process is writing: it waits, then reuses the finished set. In a multi-process run only
rank 0 writes; the other ranks wait for the finished set.
"""

from __future__ import annotations

import time
from pathlib import Path

from fpa.config.keys import stage_key
from fpa.data.shards import ShardDirectory
from fpa.generation.backends import load_backend
from fpa.generation.trajectories import SamplingSettings, write_trajectory_set
from fpa.models.loading import load_tokenizer
from fpa.prompting import PromptFormat
from fpa.stages import locks
from fpa.stages.cache import write_marker

VERSION = "2"  # 2: records carry the sampled token ids (schema version 2)


def rl_problems(task, generate: SamplingSettings, skip: int, data_seed: int):
    """Training problems for offline RL: the train split after the ``skip`` the warm start used."""
    return task.problems("train", skip + generate.n_problems, seed=data_seed)[skip:]


def trajectory_inputs(model_key: str, task, prompt: PromptFormat, generate: SamplingSettings, skip: int,
                      data_seed: int) -> dict:
    """What a trajectory set depends on: the stage key is their hash, the manifest records them."""
    return {"model": model_key, "task": task, "prompt": prompt, "generate": generate, "skip": skip,
            "data_seed": data_seed}


def generate_to(model_path: str, inputs: dict, out: Path, dtype: str = "float32", progress: bool = True) -> dict:
    """Write (or finish) the trajectory set of ``model_path`` into ``out``; returns its stats report.

    Holds ``<out>.lock`` meanwhile: a second process writing the same set waits, then finds it done.
    """
    with locks.held(locks.lock_for(out)):
        return _write(model_path, inputs, Path(out), dtype, progress)


def _write(model_path: str, inputs: dict, out: Path, dtype: str, progress: bool = True) -> dict:
    from fpa.config.keys import identity

    task, prompt, g = inputs["task"], inputs["prompt"], inputs["generate"]
    tok = load_tokenizer(model_path)
    problems = rl_problems(task, g, inputs["skip"], inputs["data_seed"])
    prompts = [prompt(p.question, tok) for p in problems]

    def load_generator():
        return load_backend(g.backend, model_path, tok, dtype=dtype, batch_size=g.batch_size,
                            max_new_tokens=g.max_new_tokens, progress=progress, **g.engine)

    return write_trajectory_set(out, problems=problems, prompts=prompts, task=task, load_generator=load_generator,
                                settings=g, model_name=str(model_path), identity=identity(inputs), progress=progress)


def _reusable(out: Path) -> bool:
    """A finished cache entry whose every shard still matches its checksum."""
    if not (out / "stage.json").exists():
        return False
    shards = ShardDirectory(out)
    return shards.complete and not shards.verify()


def generate_trajectories(model_path: str, inputs: dict, cache_dir: str | Path, dtype: str = "float32",
                          info: dict | None = None) -> tuple[Path, str]:
    """(trajectory shard directory, cache key) for fpa-train; ``info`` (if given) receives ``cached``:
    whether the finished set was reused (a set resumed shard by shard counts as built here)."""
    info = {} if info is None else info
    key = stage_key("trajectories", VERSION, **inputs)
    out = Path(cache_dir) / "trajectories" / key
    info["cached"] = True
    if _reusable(out):
        return out, key
    from fpa.ranks import is_global_zero

    if not is_global_zero():  # a multi-process run: rank 0 writes the set, the others wait for it
        told = False
        while not _reusable(out):
            if not told:
                print(f"fpa: waiting for rank 0 to write {out}", flush=True)
                told = True
            time.sleep(locks.POLL_S)
        return out, key
    with locks.held(locks.lock_for(out)):  # the set is written in place: one writer, the others wait
        if not _reusable(out):  # not built yet, or a shard was truncated or modified since: resume it
            info["cached"] = False
            _write(model_path, inputs, out, dtype)
            write_marker(out, "trajectories", key, inputs)  # the manifest alone also says "complete"
    return out, key
