"""K verified samples per problem, written as a resumable shard directory (fpa-generate and fpa-train).

Problems are cut into shards of ``shard_size`` problems. Shard i is sampled with its own seed,
``shard_seed(seed, i)``, so its samples do not depend on which shards ran before it: a run that
was killed and started again writes exactly what an uninterrupted run writes, and skips every
shard already in the manifest whose file still matches its checksum; a shard truncated or modified
since is dropped and written again (identically, having its own seed), with one line saying so.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from tqdm.auto import tqdm

from fpa import checks
from fpa.data.records import (ROLLOUT_FEATURES, SCHEMA_VERSION, TRAJECTORY_FEATURES, read_records,
                               trajectory_files)
from fpa.data.shards import ShardDirectory
from fpa.data.stats import write_report
from fpa.tasks.base import Problem


@dataclass(frozen=True)
class SamplingSettings:
    """The ``generate`` node: how trajectories are sampled; every sampling field is recorded in the manifest."""

    n_problems: int = 1024  # train-split problems (after those the warm start used)
    k: int = 8  # samples per problem
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 64
    batch_size: int = 256  # sequences per generate call (hf: the seed is per batch, so it is part of the identity)
    seed: int = 0
    shard_size: int = 64  # problems per shard: the unit of resumption
    backend: str = "hf"  # a key of fpa.generation.backends.BACKENDS
    engine: dict[str, Any] = field(default_factory=dict)  # options for the backend (vllm: gpu_memory_utilization, ...)

    def __post_init__(self) -> None:
        from fpa.generation.backends import BACKENDS

        for name in ("n_problems", "k", "max_new_tokens", "batch_size", "shard_size"):
            checks.number(name, getattr(self, name), 1, integer=True)
        checks.number("temperature", self.temperature, 0)
        checks.number("top_p", self.top_p, 0, 1, strict=True)
        checks.number("seed", self.seed, integer=True)
        checks.choice("backend", self.backend, sorted(BACKENDS))

    def sampling_identity(self) -> dict[str, Any]:
        """What the samples depend on (recorded in the manifest; a set is resumed only with the same)."""
        out = asdict(self)
        for key in ("n_problems", "engine"):
            out.pop(key)
        return out


def shard_seed(seed: int, index: int) -> int:
    """A 31-bit seed for shard ``index`` of a run seeded with ``seed``; independent of every other shard."""
    return int.from_bytes(hashlib.sha256(f"fpa-shard:{seed}:{index}".encode()).digest()[:4], "little") >> 1


def _shard_records(problems: list[Problem], prompts: list[str], samples, task, generator_info: dict,
                   index: int) -> list[dict[str, Any]]:
    records = []
    for s in sorted(samples, key=lambda s: (s.prompt_index, s.sample_index)):
        p = problems[s.prompt_index]
        v = task.verify(p, s.completion)
        records.append({"problem_id": p.id, "sample_index": s.sample_index, "prompt": prompts[s.prompt_index],
                        "completion": s.completion, "reward": float(v.reward), "outcome": bool(v.outcome),
                        "process": v.process, "extracted_answer": v.extracted, "answer": p.answer,
                        "finish_reason": s.finish_reason, "n_tokens": s.n_tokens, "shard": index,
                        # the ids the model saw and sampled (None: a generator that reports none)
                        "prompt_ids": list(s.prompt_ids) if s.completion_ids else None,
                        "completion_ids": list(s.completion_ids) if s.completion_ids else None,
                        "schema_version": SCHEMA_VERSION,
                        "generator": generator_info,
                        **({"behaviour_logprobs": list(s.logprobs)} if s.logprobs is not None else {})})
    return records


def write_trajectory_set(out_dir: str | Path, *, problems: list[Problem], prompts: list[str], task,
                         load_generator: Callable[[], Any], settings: SamplingSettings, model_name: str,
                         identity: dict[str, Any], progress: bool = True, plot: bool = True) -> dict[str, Any]:
    """Sample, verify and write every unfinished shard into ``out_dir``; return the stats report.

    ``load_generator()`` is called only if a shard is left to do (a finished set loads no model).
    ``identity`` is stored in the manifest; resuming a directory made with another identity fails.
    ``plot``: also draw ``lengths.png`` (rollout rounds skip it: one per round adds up).
    """
    if len(prompts) != len(problems):
        raise ValueError(f"{len(problems)} problems but {len(prompts)} prompts")
    out = Path(out_dir)
    n_shards = max(1, math.ceil(len(problems) / settings.shard_size))
    manifest_config = {**identity, "sampling": settings.sampling_identity(), "n_problems": len(problems)}
    shards = ShardDirectory(out).open(manifest_config, n_shards)
    for i, problem in shards.verify().items():  # truncated or modified since it was written: write it again
        print(f"fpa: {out / shards.manifest['finished'][str(i)]['file']}: {problem}; regenerating shard {i}",
              flush=True)
        shards.drop(i)
    todo = [i for i in range(n_shards) if i not in shards.finished()]
    generator = load_generator() if todo else None
    bar = tqdm(total=n_shards, initial=n_shards - len(todo), desc=f"shards → {out.name}", unit="shard",
               disable=not progress)
    try:
        for i in todo:
            lo, hi = i * settings.shard_size, (i + 1) * settings.shard_size
            seed = shard_seed(settings.seed, i)
            start = time.perf_counter()
            samples = generator.sample(prompts[lo:hi], n=settings.k, temperature=settings.temperature,
                                       top_p=settings.top_p, seed=seed, desc=f"shard {i + 1}/{n_shards}")
            seconds = time.perf_counter() - start
            info = {"model": model_name, "backend": settings.backend, "temperature": settings.temperature,
                    "top_p": settings.top_p, "seed": settings.seed, "shard_seed": seed,
                    "max_new_tokens": settings.max_new_tokens}
            records = _shard_records(problems[lo:hi], prompts[lo:hi], samples, task, info, i)
            n_tokens = sum(s.n_tokens for s in samples)
            shards.write(i, records, {"n_tokens": n_tokens, "seconds": round(seconds, 3),
                                      "tokens_per_s": round(generator.tokens_per_second, 1)},
                         features=ROLLOUT_FEATURES if any("behaviour_logprobs" in r for r in records)
                         else TRAJECTORY_FEATURES)
            bar.update(1)
            bar.set_postfix(tok_s=f"{generator.tokens_per_second:.0f}")
    finally:
        bar.close()
    done = shards.finished().values()
    tokens, seconds = sum(d["n_tokens"] for d in done), sum(d["seconds"] for d in done)
    throughput = {"n_shards": n_shards, "generated_tokens": tokens, "generation_seconds": round(seconds, 3),
                  "tokens_per_s": round(tokens / max(seconds, 1e-9), 1)}
    if shards.complete and (out / "stats.json").exists():
        return json.loads((out / "stats.json").read_text())
    # Every sample counts in the report, an empty completion (EOS first) too.
    records = [row for f in trajectory_files(out) for _, _, row in read_records(f)]
    report = write_report(records, out, plot=plot, **throughput)
    shards.mark_complete(**throughput)
    if progress:
        tqdm.write(f"{len(records)} trajectories in {out}: accuracy {report['accuracy']:.3f}, "
                   f"{report['share_problems_with_pairs']:.0%} of problems yield pairs, "
                   f"{throughput['tokens_per_s']:.0f} tokens/s")
    return report
