"""Failing fast and clearly: the errors a run stops with, each a message a user can act on.

- :class:`ConfigError`: the config is wrong (raised before any model loads, see :mod:`fpa.config.parts`).
- :class:`NonFiniteLossError`: the loss went NaN/inf; names the step and the batch, and the last
  good checkpoint (the step is never taken, so no checkpoint holds the bad state).
- :class:`OutOfMemoryHint`: a GPU ran out of memory; names the knobs that lower memory.
- :class:`UnsafeFileError`: a checkpoint or cache file holds more than tensors and plain containers.
- :class:`CheckpointError`: a checkpoint cannot be read, or was made with other settings.
- :class:`InputError`: an input file or data set cannot give what the run needs (no training examples).

All derive from :class:`FPAError`; an entry point prints ``str(error)`` and exits non-zero.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import lightning as L
import torch


class FPAError(Exception):
    """An error whose message is the whole story: entry points print it without a traceback."""


class ConfigError(FPAError, ValueError):
    """One line per problem found in a config."""

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class NonFiniteLossError(FPAError, FloatingPointError):
    pass


class OutOfMemoryHint(FPAError, MemoryError):
    pass


class UnsafeFileError(FPAError, RuntimeError):
    pass


class CheckpointError(FPAError, RuntimeError):
    pass


class InputError(FPAError, ValueError):
    pass


def describe_batch(trainer: Any, batch_idx: int) -> str:
    """``epoch E, batch B: examples [...], problems [...]`` for the batch the train loader served last."""
    text = f"epoch {trainer.current_epoch}, batch {batch_idx}"
    loader = getattr(trainer, "train_dataloader", None)
    indices = getattr(getattr(loader, "batch_sampler", None), "last", None)
    if indices is None:
        return text
    text += f": examples {list(indices)}"
    data = getattr(getattr(trainer, "datamodule", None), "train_set", None)
    if data is not None:
        ids = [data[i].get("problem_id") for i in indices if i < len(data) and isinstance(data[i], dict)]
        if any(i is not None for i in ids):
            text += f", problems {ids}"
    return text


def check_finite_loss(loss: torch.Tensor, trainer: Any, batch_idx: int, world_size: int = 1,
                      reduce: Any = None) -> None:
    """Raise :class:`NonFiniteLossError` when ``loss`` is NaN/inf on any rank (all ranks raise together).

    ``reduce(tensor)`` sums a tensor over ranks; with several ranks every rank must call this, so
    a NaN on one rank stops them all instead of leaving the others waiting in a collective.
    """
    bad = (~torch.isfinite(loss.detach())).any().to(torch.float32).reshape(1)
    if world_size > 1 and reduce is not None:
        bad = reduce(bad)
    if bad.item() == 0:
        return
    value = loss.detach().float().item()
    if value != value:
        kind = "NaN"
    elif value in (float("inf"), float("-inf")):
        kind = "inf"
    else:
        kind = "non-finite (on another rank)"
    step = getattr(trainer, "global_step", "?")
    ckpt = getattr(getattr(trainer, "checkpoint_callback", None), "last_model_path", "") or ""
    kept = (f"the last good checkpoint is {ckpt}" if ckpt else "no checkpoint was written yet")
    raise NonFiniteLossError(
        f"training stopped: the loss is {kind} at step {step} ({describe_batch(trainer, batch_idx)}); "
        f"the step was not taken and {kept}. Lower optimizer.lr, check the batch's data, or resume from the "
        "checkpoint with a different seed/order.")


class NaNGuard(L.Callback):
    """Stops training before the backward pass of a NaN/inf loss (so the bad step is never taken)."""

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        check_finite_loss(loss, trainer, getattr(pl_module, "last_batch_idx", 0), trainer.world_size,
                          reduce=lambda t: trainer.strategy.reduce(t, reduce_op="sum"))


def oom_message(micro_batch_size: int, global_batch: int, chunk_size: int, gradient_checkpointing: bool,
                max_length: int) -> str:
    return ("GPU out of memory. Lower the memory a step needs: "
            f"data.micro_batch_size (now {micro_batch_size}; the global batch "
            f"data.batch_size={global_batch} is kept by gradient accumulation), "
            f"module.chunk_size (now {chunk_size} tokens per log-prob chunk), "
            f"gradient checkpointing (now {'on' if gradient_checkpointing else 'off'}: "
            "module.gradient_checkpointing=true), "
            f"data.max_length (now {max_length}), or shard the model over GPUs with trainer=fsdp.")


@contextlib.contextmanager
def oom_hints(**settings: Any) -> Iterator[None]:
    """Turn a CUDA out-of-memory error into :class:`OutOfMemoryHint` naming the knobs to turn."""
    try:
        yield
    except torch.OutOfMemoryError as e:
        raise OutOfMemoryHint(f"{oom_message(**settings)} ({str(e).splitlines()[0][:200]})") from e
