"""This process's place in a multi-process run, known before (or without) a process group."""

from __future__ import annotations

import os

import torch


def is_global_zero() -> bool:
    """Rank 0 of a distributed run (torchrun, SLURM, Lightning's launcher), or a single process."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank() == 0
    env = os.environ
    if "RANK" in env:  # torchrun
        return int(env["RANK"]) == 0
    if int(env.get("SLURM_NTASKS", "1")) > 1:
        return int(env.get("SLURM_PROCID", "0")) == 0
    return int(env.get("LOCAL_RANK", "0")) == 0 and int(env.get("NODE_RANK", "0")) == 0  # Lightning's launcher
