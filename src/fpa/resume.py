"""Exact resumption: a data order that depends only on (seed, epoch, position), a data loader that
remembers its position, RNG state in the checkpoint, and an atomically replaced ``last.ckpt``.

Lightning 2.6 restores the loops, optimizer and scheduler from a checkpoint, but restarts the
epoch's data from its beginning unless the train loader is *stateful* (has ``state_dict`` /
``load_state_dict``), and it does not save RNG state. :class:`ResumableLoader` is such a stateful
loader: it records how many batches of the current epoch it served and, on resume, starts the
epoch's (deterministic) order right after them. :class:`RNGState` puts the torch / CUDA / numpy /
python RNG states into the checkpoint and restores them.

The loader is also the distributed sampler: with R data-parallel ranks the epoch order is cut into
global micro-batches of ``R × batch_size`` examples and rank r takes slice r of each, so R
processes see, step by step, exactly the examples one process sees with an R times larger batch.

Batch policy, the same for every objective: **the last partial batch of an epoch is dropped.**
An epoch of n examples is ``n // (batch_size × R)`` full batches; the ``n mod (batch_size × R)``
examples left over by that epoch's order are not seen in that epoch (the order changes every epoch,
so no example is left out for good). Every step therefore has the same number of examples (KTO's KL
rows need at least 2 per batch; a final batch of 1 used to crash it), and the number of batches in
an epoch is fixed, which exact resumption relies on. Fewer examples than one full batch is an error
(:class:`ShardedBatchSampler` says how many examples and what batch).
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Any, Iterator

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, Sampler

from fpa.data.datamodule import SeededShuffle


class ShardedBatchSampler(Sampler[list[int]]):
    """Rank ``rank``'s micro-batches of the epoch order ``SeededShuffle(n, seed)``.

    Global micro-batch k is ``order[k·G:(k+1)·G]``, G = ``batch_size × num_replicas``; rank r gets
    slice r of it, ``batch_size`` examples. A final partial global batch is dropped (see the module
    docstring), so every batch of every rank is full. ``start`` skips the first batches of the epoch
    (resumption); ``last`` holds the indices served last.
    """

    def __init__(self, n: int, batch_size: int, seed: int = 0, num_replicas: int = 1, rank: int = 0) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        g = batch_size * num_replicas
        if n < g:
            per = f" ({batch_size} per process × {num_replicas} processes)" if num_replicas > 1 else ""
            raise ValueError(f"{n} training examples are fewer than one batch of {g}{per}: an epoch would have "
                             "no batch (the last partial batch of an epoch is dropped); lower data.batch_size "
                             "or train on more examples")
        self.n, self.batch_size, self.num_replicas, self.rank = n, batch_size, num_replicas, rank
        self.sampler = SeededShuffle(n, seed)  # Lightning calls sampler.set_epoch at every epoch start
        self.start = 0
        self.last: list[int] | None = None

    @property
    def epoch(self) -> int:
        return self.sampler.epoch

    def __len__(self) -> int:
        return self.n // (self.batch_size * self.num_replicas)  # full global batches only

    def __iter__(self) -> Iterator[list[int]]:
        start, self.start = self.start, 0
        order = list(self.sampler)  # read lazily: set_epoch may come after iter()
        g = self.batch_size * self.num_replicas
        for k in range(start, len(self)):
            mine = order[k * g + self.rank * self.batch_size:k * g + (self.rank + 1) * self.batch_size]
            self.last = mine
            yield mine


class ResumableLoader(DataLoader):
    """A DataLoader over a :class:`ShardedBatchSampler` that Lightning saves and restores mid-epoch."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if not isinstance(self.batch_sampler, ShardedBatchSampler):
            raise TypeError("ResumableLoader needs batch_sampler=ShardedBatchSampler(...)")
        self._served = 0
        self._resume_at = 0

    def __iter__(self) -> Iterator[Any]:  # a generator: the body (and the order) runs at the first next()
        start, self._resume_at = self._resume_at, 0
        self.batch_sampler.start = start
        self._served = start
        for batch in super().__iter__():
            self._served += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        # A full epoch is a finished one: the next epoch starts from its beginning.
        return {"epoch": self.batch_sampler.epoch, "served": self._served % max(1, len(self))}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._resume_at = int(state.get("served", 0))


def make_loader(dataset: list, collate_fn, batch_size: int, seed: int, num_replicas: int = 1, rank: int = 0,
                num_workers: int = 0) -> ResumableLoader:
    sampler = ShardedBatchSampler(len(dataset), batch_size, seed, num_replicas, rank)
    # Its own generator: creating an iterator must not draw from the global RNG (resume would shift it).
    return ResumableLoader(dataset, batch_sampler=sampler, collate_fn=collate_fn, num_workers=num_workers,
                           generator=torch.Generator().manual_seed(seed))


class RNGState(L.Callback):
    """Saves the RNG states (torch, CUDA, numpy, python) with every checkpoint and restores them.

    Stored as tensors and plain containers only, so the checkpoint still loads with ``weights_only``.
    """

    def state_dict(self) -> dict[str, Any]:
        np_state = np.random.get_state()
        py_version, py_state, py_gauss = random.getstate()
        state = {"torch": torch.get_rng_state(),
                 "numpy": {"key": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                           "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
                 "python": {"version": py_version, "state": list(py_state), "gauss": py_gauss}}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        torch.set_rng_state(state["torch"])
        n = state["numpy"]
        np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
        p = state["python"]
        random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
        if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda"])


class LastCheckpoint(ModelCheckpoint):
    """``last.ckpt`` every ``every_n_train_steps`` steps, replaced atomically.

    The new checkpoint is written next to the old one (``last.ckpt.partial``) and renamed over it
    only when complete, so a run killed while saving still has its previous checkpoint (a sharded
    checkpoint is a directory: the old one is moved aside to ``last.ckpt.old`` for the instant of
    the swap, and :func:`find_last` falls back to it).
    """

    def __init__(self, every_n_train_steps: int = 100, dirpath: str | Path | None = None) -> None:
        """``dirpath`` None: ``<trainer.default_root_dir>/checkpoints`` (the run directory's)."""
        from fpa import checks

        checks.number("every_n_train_steps", every_n_train_steps, 1, integer=True)
        super().__init__(dirpath=None if dirpath is None else str(dirpath), save_last=True, save_top_k=0,
                         every_n_train_steps=every_n_train_steps, enable_version_counter=False)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.dirpath is None:
            self.dirpath = os.path.join(trainer.default_root_dir, "checkpoints")
        super().setup(trainer, pl_module, stage)

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        tmp = filepath + ".partial"
        if trainer.is_global_zero:
            _remove(tmp)
        trainer.strategy.barrier("last-ckpt-clean")
        trainer.save_checkpoint(tmp, self.save_weights_only)
        trainer.strategy.barrier("last-ckpt-saved")
        if trainer.is_global_zero:
            _replace(tmp, filepath)
        trainer.strategy.barrier("last-ckpt-swapped")
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.after_save_checkpoint(self)


def _remove(path: str | Path) -> None:
    p = Path(path)
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    elif p.exists() or p.is_symlink():
        p.unlink()


def _replace(src: str, dst: str) -> None:
    if Path(src).is_dir() or Path(dst).is_dir():
        old = dst + ".old"
        _remove(old)
        if os.path.exists(dst):
            os.replace(dst, old)
        os.replace(src, dst)
        _remove(old)
    else:
        os.replace(src, dst)


def find_last(checkpoint_dir: str | Path) -> Path | None:
    """The run's last complete checkpoint (``last.ckpt``, or ``last.ckpt.old`` left by an interrupted swap)."""
    d = Path(checkpoint_dir)
    for name in ("last.ckpt", "last.ckpt.old"):
        if (d / name).exists():
            return d / name
    return None
