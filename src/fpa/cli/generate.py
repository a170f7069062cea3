"""fpa-generate: K verified samples per problem from a model, written as a resumable Parquet shard set.

    fpa-generate                                          # the embedded tiny reference, into fpa-train's cache
    fpa-generate experiment=smoke out_dir=/tmp/trajs      # toy size
    fpa-generate model_path=outputs/runs/X/policy generate.k=16 generate.temperature=0.8 out_dir=trajs
    fpa-generate model=<cfg> task=<cfg> generate.backend=vllm     # a real model on a GPU

Started again with the same settings, it skips the shards already written. The output directory
holds ``train-*.parquet`` shards (``datasets.load_dataset("parquet", data_dir=out_dir)``), a
``manifest.json``, ``stats.json`` (per-problem accuracy, pair yield, lengths, tokens/s) and
``lengths.png``.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from fpa.cli.app import hydra_app
from fpa.stages.cache import config_key
from fpa.stages.prepare import base_model
from fpa.stages.sample import generate_to, trajectory_identity
from fpa.stages.warm_start import warm_start


def model_to_sample(cfg: DictConfig) -> tuple[str, dict]:
    """(path or hub id, identity): ``model_path`` as given, else the reference fpa-train would use."""
    if cfg.model_path:
        path = str(cfg.model_path)
        return path, {"name_or_path": str(Path(path).resolve()) if Path(path).exists() else path}
    return warm_start(cfg, *base_model(cfg))


def run(cfg: DictConfig) -> tuple[Path, dict]:
    model_path, model_ident = model_to_sample(cfg)
    ident = trajectory_identity(cfg, model_ident, skip=cfg.skip_problems)
    out = Path(cfg.out_dir) if cfg.out_dir else Path(cfg.paths.cache_dir) / "trajectories" / config_key(ident)
    report = generate_to(cfg, model_path, ident, out, skip=cfg.skip_problems, progress=cfg.progress)
    print(f"trajectories: {out}\n  {report['n_trajectories']} samples of {report['n_problems']} problems, "
          f"accuracy {report['accuracy']:.3f}, share with pairs {report['share_problems_with_pairs']:.3f}, "
          f"{report['tokens_per_s']:.0f} tokens/s")
    return out, report


@hydra_app("generate")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
