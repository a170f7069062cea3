"""The ``data`` node: which trajectories train the policy and how they are batched, checked when built."""

from __future__ import annotations

from dataclasses import dataclass

from fpa import checks
from fpa.data.datamodule import TrajectoryDataModule
from fpa.models.spec import check_input_path
from fpa.resume import make_loader


class ShardedTrajectoryData(TrajectoryDataModule):
    """The trajectory DataModule with a resumable, rank-aware loader (``batch_size`` = per-rank micro-batch)."""

    def train_dataloader(self):
        strategy = getattr(self.trainer, "strategy", None) if self.trainer is not None else None
        kw = getattr(strategy, "distributed_sampler_kwargs", None) or {}
        return make_loader(self.train_set, self.collate, self.batch_size, self.seed,
                           num_replicas=int(kw.get("num_replicas", 1)), rank=int(kw.get("rank", 0)),
                           num_workers=self.num_workers)


@dataclass(frozen=True)
class DataSettings:
    trajectories: str | None = None  # a trajectory set made elsewhere (dir or file); null: the generate stage's
    batch_size: int = 32  # global batch: examples per optimizer step (pairs, labelled rows or groups)
    micro_batch_size: int | None = None  # per process and forward; null: its share of batch_size
    max_length: int = 128  # prompt + completion tokens
    overlong: str = "drop"  # drop | truncate
    pairing: str = "cap"  # all | one | cap
    max_pairs_per_problem: int = 4
    pack: bool = False  # padding-free packing of rows
    skip_invalid: bool = True  # skip bad trajectory records (e.g. empty completions) and report how many
    num_workers: int = 0

    def __post_init__(self) -> None:
        check_input_path("trajectories", self.trajectories, "trajectory set")
        checks.number("batch_size", self.batch_size, 1, integer=True)
        checks.number("micro_batch_size", self.micro_batch_size, 1, integer=True, optional=True)
        if self.micro_batch_size and self.batch_size % self.micro_batch_size:
            raise ValueError(f"micro_batch_size: {self.micro_batch_size} does not divide "
                             f"data.batch_size={self.batch_size}")
        checks.number("max_length", self.max_length, 2, integer=True)
        checks.choice("overlong", self.overlong, ("drop", "truncate"))
        checks.choice("pairing", self.pairing, ("all", "one", "cap"))
        checks.number("max_pairs_per_problem", self.max_pairs_per_problem, 1, integer=True)
        checks.flag("pack", self.pack)
        checks.flag("skip_invalid", self.skip_invalid)
        checks.number("num_workers", self.num_workers, 0, integer=True)

    def layout(self, world_size: int) -> tuple[int, int]:
        """(per-rank micro-batch, gradient accumulation steps) for the global batch over ``world_size`` ranks."""
        micro = self.micro_batch_size or max(1, self.batch_size // world_size)
        per_step = micro * world_size
        if self.batch_size % per_step:
            from fpa.guards import ConfigError

            raise ConfigError(f"data.batch_size={self.batch_size} must be a multiple of data.micro_batch_size × "
                              f"processes = {micro} × {world_size}")
        return micro, self.batch_size // per_step

    def datamodule(self, tokenizer, objective, records: list[dict], micro_batch_size: int,
                   seed: int) -> ShardedTrajectoryData:
        return ShardedTrajectoryData(tokenizer, objective.data, trajectories=records, batch_size=micro_batch_size,
                                     max_length=self.max_length, overlong=self.overlong, pairing=self.pairing,
                                     max_pairs_per_problem=self.max_pairs_per_problem, seed=seed,
                                     kl_rows=objective.needs_kl_rows, pack=self.pack, num_workers=self.num_workers)
