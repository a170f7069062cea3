"""fpa-generate: K verified samples per problem from a model, written as a resumable Parquet shard set.

    fpa-generate                                          # the embedded tiny reference, into fpa-train's cache
    fpa-generate experiment=smoke out_dir=/tmp/trajs      # toy size
    fpa-generate model_path=outputs/runs/X/policy generate.k=16 generate.temperature=0.8 out_dir=trajs
    fpa-generate experiment=qwen2.5-math-1.5b              # a real model on a GPU (vLLM)

Started again with the same settings, it skips the shards already written (and writes again one
truncated or modified since, saying so); a second fpa-generate of the same set waits for the first
(``<out_dir>.lock``). The output directory holds ``train-*.parquet`` shards
(``datasets.load_dataset("parquet", data_dir=out_dir)``; each record holds the prompt's and the
completion's token ids as sampled, which training scores verbatim), a ``manifest.json`` (with each shard's
size and SHA-256), ``stats.json`` (per-problem accuracy, pair yield, lengths, tokens/s) and
``lengths.png``.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from fpa.cli.app import expected_errors, hydra_app, one_line
from fpa.config.keys import stage_key
from fpa.config.parts import TrainParts, train_parts
from fpa.guards import ConfigError
from fpa.models.spec import check_input_path
from fpa.stages.sample import VERSION, generate_to, trajectory_inputs


def model_to_sample(parts: TrainParts, model_path: str | None) -> tuple[str, str]:
    """(path or hub id, cache key): ``model_path`` as given, else the reference fpa-train would use."""
    from fpa.cli.train import reference_model

    if model_path:
        resolved = str(Path(model_path).resolve()) if Path(model_path).exists() else model_path
        return str(model_path), stage_key("reference", "1", path=resolved)
    return reference_model(parts)


def run(cfg: DictConfig) -> tuple[Path, dict]:
    parts = train_parts(cfg, "generate")  # checked before any model loads
    try:
        check_input_path("model_path", cfg.model_path, "model")
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if cfg.skip_problems is not None and (isinstance(cfg.skip_problems, bool) or int(cfg.skip_problems) < 0):
        raise ConfigError(f"skip_problems: must be an integer >= 0, got {cfg.skip_problems!r}")
    model_path, model_key = model_to_sample(parts, cfg.model_path)
    skip = parts.sft_skip if cfg.skip_problems is None else int(cfg.skip_problems)
    inputs = trajectory_inputs(model_key, parts.task, parts.model.prompt, parts.generate, skip, parts.data_seed)
    out = Path(cfg.out_dir) if cfg.out_dir else parts.cache_dir / "trajectories" / stage_key("trajectories", VERSION,
                                                                                              **inputs)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"out_dir: {out} is a file, not a directory; choose another out_dir=<directory>")
    report = generate_to(model_path, inputs, out, parts.model.dtype, progress=bool(cfg.progress))
    print(f"trajectories: {out}\n  {report['n_trajectories']} samples of {report['n_problems']} problems, "
          f"accuracy {report['accuracy']:.3f}, share with pairs {report['share_problems_with_pairs']:.3f}, "
          f"{report['tokens_per_s']:.0f} tokens/s")
    return out, report


@hydra_app("generate")
def main(cfg: DictConfig) -> None:
    try:
        run(cfg)
    except expected_errors() as err:
        raise one_line("fpa-generate", err) from None


if __name__ == "__main__":
    main()
