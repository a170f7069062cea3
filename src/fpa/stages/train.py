"""Stage `train`: the offline objective (+ FPA) on the reference's verified trajectories.

- ``data.batch_size`` is the global batch (examples per optimizer step) whatever the number of
  processes; each process takes ``train.micro_batch_size`` examples per forward (default: its
  share), and gradient accumulation makes up the rest. 1 process and R processes see the same
  examples at every step (:mod:`fpa.resume`).
- ``<run_dir>/checkpoints/last.ckpt`` is written every ``train.checkpoint_every`` steps (atomically;
  a directory of shards under ``trainer=fsdp``). With ``train.resume=auto`` a run whose run dir
  already has one resumes from it exactly: data position, optimizer, scheduler and RNG.
- A NaN/inf loss stops the run (:class:`fpa.guards.NonFiniteLossError`) before the step is taken;
  a GPU out-of-memory error becomes :class:`fpa.guards.OutOfMemoryHint`.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from fpa.data.datamodule import TrajectoryDataModule
from fpa.data.records import load_trajectories
from fpa.fpa import FuturePolicy
from fpa.guards import ConfigError, oom_hints
from fpa.models.loading import load_tokenizer
from fpa.module import OfflineRLModule
from fpa.resume import LastCheckpoint, RNGState, find_last, make_loader
from fpa.safe_load import check_checkpoint
from fpa.stages.runtime import make_trainer, precision_is_mixed, trainer_option

RESUME_CHOICES = ("auto", "never", "must")


class ShardedTrajectoryData(TrajectoryDataModule):
    """The trajectory DataModule with a resumable, rank-aware loader (``batch_size`` = per-rank micro-batch)."""

    def train_dataloader(self):
        strategy = getattr(self.trainer, "strategy", None) if self.trainer is not None else None
        kw = getattr(strategy, "distributed_sampler_kwargs", None) or {}
        return make_loader(self.train_set, self.collate, self.batch_size, self.seed,
                           num_replicas=int(kw.get("num_replicas", 1)), rank=int(kw.get("rank", 0)),
                           num_workers=self.num_workers)


def batch_layout(global_batch: int, world_size: int, micro_batch_size: int | None) -> tuple[int, int]:
    """(per-rank micro-batch, accumulation steps) for a global batch over ``world_size`` ranks."""
    micro = micro_batch_size or max(1, global_batch // world_size)
    per_step = micro * world_size
    if global_batch % per_step:
        raise ConfigError(f"data.batch_size={global_batch} must be a multiple of train.micro_batch_size × "
                          f"processes = {micro} × {world_size}")
    return micro, global_batch // per_step


def resolve_resume(run_dir: Path, resume) -> Path | None:
    """The checkpoint to resume from: ``auto`` (the run dir's last.ckpt if any), ``never``, ``must``, or a path."""
    if resume is None or resume is False or resume == "never":
        return None
    ckpt_dir = Path(run_dir) / "checkpoints"
    if resume is True or resume in ("auto", "must"):
        last = find_last(ckpt_dir)
        if last is None and resume in (True, "must"):
            raise ConfigError(f"train.resume={resume}: no checkpoint in {ckpt_dir}")
        return last
    path = Path(str(resume)).expanduser()
    if path.is_dir() and not (path / "meta.pt").exists():  # a run directory, not a sharded checkpoint
        last = find_last(path / "checkpoints")
        if last is None:
            raise ConfigError(f"train.resume={resume}: no checkpoints/last.ckpt in that run directory")
        return last
    if not path.exists():
        raise ConfigError(f"train.resume={resume}: no such checkpoint (choices: {', '.join(RESUME_CHOICES)}, "
                          "a .ckpt path or a run directory)")
    return path


def save_policy(trainer: L.Trainer, module: OfflineRLModule, tokenizer, out: Path) -> Path:
    """``save_pretrained`` the policy from rank 0 (gathering shards first under FSDP); every rank returns ``out``."""
    from fpa.strategies import is_sharded

    state = None
    if is_sharded(module):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        full = get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        # Tied weights (an output layer sharing the embedding) come back under both names; keep one.
        own = {n for n, _ in module.policy.named_parameters()} | {n for n, _ in module.policy.named_buffers()}
        state = {k[len("policy."):]: v for k, v in full.items() if k.startswith("policy.") and k[7:] in own}
    if trainer.is_global_zero:
        if state is not None:
            module.policy.save_pretrained(out, state_dict=state)
        else:
            module.policy.save_pretrained(out)
        tokenizer.save_pretrained(out)
    trainer.strategy.barrier("policy-saved")
    return out


def train_policy(cfg: DictConfig, reference: str, trajectories: Path, run_dir: Path, loggers: list,
                 callbacks: list | None = None) -> Path:
    from fpa.validation import check_config

    check_config(cfg, stage="train")
    run_dir = Path(run_dir)
    t, d = cfg.train, cfg.data
    ckpt_path = resolve_resume(run_dir, t.get("resume", "auto"))
    if ckpt_path is not None:
        check_checkpoint(ckpt_path)  # refuse a checkpoint that would unpickle arbitrary objects
    L.seed_everything(cfg.seed, verbose=False)
    objective = instantiate(cfg.objective)
    fpa = FuturePolicy(**cfg.fpa)
    trust = bool(cfg.model.get("trust_remote_code", False))
    tok = load_tokenizer(reference, trust_remote_code=trust)
    records, skipped = load_trajectories(trajectories, skip_invalid=bool(d.get("skip_invalid", False)))
    if skipped:
        print(f"fpa-train: skipped {skipped} invalid trajectory records in {trajectories}")
    gc = bool(t.gradient_checkpointing) or bool(trainer_option(cfg, "gradient_checkpointing"))
    ckpt = LastCheckpoint(run_dir / "checkpoints", every_n_train_steps=int(t.get("checkpoint_every", 100)))
    trainer = make_trainer(cfg, t.max_steps, run_dir, loggers=loggers,
                           callbacks=[*(callbacks or []), RNGState(), ckpt], log_every_n_steps=t.log_every_n_steps,
                           enable_checkpointing=True, use_distributed_sampler=False)
    micro, accumulate = batch_layout(int(d.batch_size), trainer.num_devices * trainer.num_nodes,
                                     t.get("micro_batch_size"))
    trainer.accumulate_grad_batches = accumulate
    data = ShardedTrajectoryData(tok, objective.data, trajectories=records, batch_size=micro,
                                 max_length=d.max_length, overlong=d.overlong, pairing=d.pairing,
                                 max_pairs_per_problem=d.max_pairs_per_problem, seed=cfg.seed,
                                 kl_rows=objective.needs_kl_rows, pack=bool(d.get("pack", False)))
    module = OfflineRLModule(reference, objective, fpa, reference_path=reference, lr=t.lr,
                             weight_decay=t.weight_decay, warmup_steps=t.warmup_steps, total_steps=t.max_steps,
                             min_lr_ratio=t.min_lr_ratio, chunk_size=t.chunk_size, dtype=cfg.model.dtype,
                             policy_dtype="float32" if precision_is_mixed(cfg) else None,
                             gradient_checkpointing=gc, trust_remote_code=trust)
    with oom_hints(cfg, micro):
        trainer.fit(module, data, ckpt_path=str(ckpt_path) if ckpt_path else None, weights_only=True)
    return save_policy(trainer, module, tok, run_dir / "policy")


def is_global_zero() -> bool:
    """Rank 0 of a distributed run (torchrun, SLURM, Lightning's launcher), or a single process."""
    import os

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank() == 0
    env = os.environ
    if "RANK" in env:  # torchrun
        return int(env["RANK"]) == 0
    if int(env.get("SLURM_NTASKS", "1")) > 1:
        return int(env.get("SLURM_PROCID", "0")) == 0
    return int(env.get("LOCAL_RANK", "0")) == 0 and int(env.get("NODE_RANK", "0")) == 0  # Lightning's launcher
