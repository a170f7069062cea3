"""Stage `train`: the offline objective (+ FPA) on the reference's verified trajectories."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig

from fpa.data.datamodule import TrajectoryDataModule
from fpa.data.records import load_trajectories
from fpa.fpa import FuturePolicy
from fpa.models.loading import load_tokenizer
from fpa.module import OfflineRLModule
from fpa.stages.runtime import make_trainer


def train_policy(cfg: DictConfig, reference: str, trajectories: Path, run_dir: Path, loggers: list,
                 callbacks: list | None = None) -> Path:
    L.seed_everything(cfg.seed, verbose=False)
    objective = instantiate(cfg.objective)
    fpa = FuturePolicy(**cfg.fpa)
    tok = load_tokenizer(reference)
    records, _ = load_trajectories(trajectories)
    d = cfg.data
    data = TrajectoryDataModule(tok, objective.data, trajectories=records, batch_size=d.batch_size,
                                max_length=d.max_length, overlong=d.overlong, pairing=d.pairing,
                                max_pairs_per_problem=d.max_pairs_per_problem, seed=cfg.seed,
                                kl_rows=objective.needs_kl_rows)
    t = cfg.train
    module = OfflineRLModule(reference, objective, fpa, reference_path=reference, lr=t.lr,
                             weight_decay=t.weight_decay, warmup_steps=t.warmup_steps, total_steps=t.max_steps,
                             min_lr_ratio=t.min_lr_ratio, chunk_size=t.chunk_size, dtype=cfg.model.dtype,
                             gradient_checkpointing=t.gradient_checkpointing)
    trainer = make_trainer(cfg, t.max_steps, run_dir, loggers=loggers, callbacks=callbacks,
                           log_every_n_steps=t.log_every_n_steps)
    trainer.fit(module, data)
    out = run_dir / "policy"
    module.policy.save_pretrained(out)
    tok.save_pretrained(out)
    return out
