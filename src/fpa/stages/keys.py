"""The cache keys fpa-train's stages would use for a built config, without building anything."""

from __future__ import annotations

from fpa.config.keys import stage_key
from fpa.config.parts import TrainParts
from fpa.stages import evaluate, prepare, sample, warm_start


def pipeline_keys(parts: TrainParts) -> dict[str, str]:
    """``{"model", "sft", "trajectories", "eval"}`` keys (the reference's evaluation)."""
    base = stage_key("model", prepare.VERSION, **prepare.base_inputs(parts.model, parts.data_seed))
    ref = base
    if parts.sft.enabled:
        ref = stage_key("sft", warm_start.VERSION, **warm_start.sft_inputs(base, parts.sft, parts.model, parts.task,
                                                                          parts.trainer, parts.data_seed))
    inputs = sample.trajectory_inputs(ref, parts.task, parts.model.prompt, parts.generate, parts.sft_skip,
                                      parts.data_seed)
    return {"model": base, "sft": ref, "trajectories": stage_key("trajectories", sample.VERSION, **inputs),
            "eval": stage_key("eval", evaluate.VERSION, **evaluate.eval_inputs(ref, parts.benchmark, parts.model.prompt,
                                                                               parts.generate, parts.model.dtype))}
