"""LightningDataModule serving training examples built from trajectories (or gold solutions)."""

from __future__ import annotations

from typing import Any, Iterator

import lightning as L
import torch
from torch.utils.data import DataLoader, Sampler

from fpa.data.collate import Collator, add_shared_flags
from fpa.data.examples import BUILDERS


TEXT_FIELDS = ("chosen", "rejected", "completion")


def tokenize_example(example: dict[str, Any], tokenizer) -> dict[str, Any]:
    """Token ids of the prompt and every completion.

    Stored ids (``prompt_ids``, ``<field>_ids``: the ids the model saw and sampled) are used verbatim,
    EOS exactly as stored (a stopped sample ends with it, a length-truncated one does not). Without
    them the text is tokenised: the prompt as is, a completion with EOS appended so the model learns to
    stop, unless ``<field>_eos`` is False (a sample cut off at the length limit never emitted EOS).
    """
    def enc(text: str, eos: bool) -> list[int]:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        return ids + [tokenizer.eos_token_id] if eos else ids

    def ids_of(stored, text: str, eos: bool) -> list[int]:
        return [int(t) for t in stored] if stored is not None else enc(text, eos)

    drop = {"prompt", "completions", "completions_eos", *TEXT_FIELDS, *(f"{f}_eos" for f in TEXT_FIELDS)}
    out = {k: v for k, v in example.items() if k not in drop}
    out["prompt_ids"] = ids_of(example.get("prompt_ids"), example["prompt"], eos=False)
    for field in TEXT_FIELDS:
        if field in example:
            out[f"{field}_ids"] = ids_of(example.get(f"{field}_ids"), example[field],
                                         eos=example.get(f"{field}_eos", True))
    if "completions" in example:
        n = len(example["completions"])
        stored = example.get("completions_ids") or [None] * n
        eos = example.get("completions_eos") or [True] * n
        out["completions_ids"] = [ids_of(s, c, e) for s, c, e in zip(stored, example["completions"], eos)]
    return out


def example_length(ex: dict[str, Any]) -> int:
    comps = [ex[k] for k in ("chosen_ids", "rejected_ids", "completion_ids") if k in ex] + ex.get("completions_ids", [])
    return len(ex["prompt_ids"]) + max(len(c) for c in comps)


class SeededShuffle(Sampler[int]):
    """A permutation of ``range(n)`` that depends only on (seed, epoch).

    Lightning calls ``set_epoch`` at the start of every epoch, so the order of epoch e is the same
    in every run and after resuming from a checkpoint, whichever epoch the run resumes in.
    """

    def __init__(self, n: int, seed: int = 0) -> None:
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=gen).tolist())

    def __len__(self) -> int:
        return self.n


class SplitBatchSampler(Sampler[list[int]]):
    """Rank ``rank``'s share of each batch the one-process loader serves, so R processes step through
    the same global batches as one process.

    The one-process loader (:meth:`TrajectoryDataModule.train_dataloader`) cuts ``SeededShuffle(n, seed)``
    into batches of ``batch_size`` and keeps the last partial one; here each of those batches is split
    into ``num_replicas`` contiguous parts as evenly as possible (sizes differ by at most one) and rank r
    takes part r. With a per-sequence mean loss and data-parallel gradient averaging, an evenly split
    batch gives the one-process gradient. A last partial batch smaller than ``num_replicas`` (some rank
    would get nothing) is dropped.
    """

    def __init__(self, n: int, batch_size: int, seed: int = 0, num_replicas: int = 1, rank: int = 0) -> None:
        if batch_size < num_replicas:
            raise ValueError(f"a batch of {batch_size} cannot be split over {num_replicas} processes "
                             "(at least one example per process)")
        if n < num_replicas:
            raise ValueError(f"{n} training examples cannot be split over {num_replicas} processes")
        self.n, self.batch_size, self.num_replicas, self.rank = n, batch_size, num_replicas, rank
        self.sampler = SeededShuffle(n, seed)  # Lightning calls sampler.set_epoch at every epoch start

    def __len__(self) -> int:
        full, rest = divmod(self.n, self.batch_size)
        return full + int(rest >= self.num_replicas)

    def __iter__(self) -> Iterator[list[int]]:
        order = list(self.sampler)  # read lazily: set_epoch may come after iter()
        for k in range(len(self)):
            batch = order[k * self.batch_size:(k + 1) * self.batch_size]
            base, extra = divmod(len(batch), self.num_replicas)
            start = self.rank * base + min(self.rank, extra)
            yield batch[start:start + base + int(self.rank < extra)]


class TrajectoryDataModule(L.LightningDataModule):
    """Examples of the objective's data kind; over-long examples are dropped or truncated.

    ``examples`` may be given directly (e.g. gold solutions for the SFT warm start) or built
    from ``trajectories`` with the pairing options. Shuffling depends only on (seed, epoch). With
    ``pack=True`` every batch also carries a padding-free packed copy (:mod:`fpa.data.packing`).
    """

    def __init__(self, tokenizer, kind: str, trajectories: list[dict] | None = None,
                 examples: list[dict] | None = None, batch_size: int = 16, max_length: int = 512,
                 overlong: str = "drop", pairing: str = "cap", max_pairs_per_problem: int = 4, seed: int = 0,
                 kl_rows: bool = False, shared_tokens: bool = True, num_workers: int = 0,
                 pack: bool = False) -> None:
        super().__init__()
        if overlong not in ("drop", "truncate"):
            raise ValueError(f"data.overlong must be drop | truncate, got {overlong!r}")
        if examples is None:
            if trajectories is None:
                raise ValueError("TrajectoryDataModule needs trajectories or examples")
            examples = BUILDERS[kind](trajectories, strategy=pairing, max_per_problem=max_pairs_per_problem,
                                      seed=seed)
        self.tokenizer, self.kind, self.batch_size, self.seed = tokenizer, kind, batch_size, seed
        self.max_length, self.overlong, self.num_workers = max_length, overlong, num_workers
        self.raw_examples = examples
        self.collate = Collator(kind, tokenizer.pad_token_id, kl_rows=kl_rows, shared_tokens=shared_tokens,
                                pack=pack)
        self.train_set: list[dict] | None = None
        self.n_dropped = 0

    def _fit(self, ex: dict[str, Any]) -> dict[str, Any] | None:
        if example_length(ex) <= self.max_length:
            return ex
        if self.overlong == "drop":
            return None
        room = self.max_length - len(ex["prompt_ids"])
        if room < 2:
            return None
        for k in ("chosen", "rejected", "completion"):
            for key in (f"{k}_ids", f"{k}_behaviour"):  # the behaviour log-probs stay aligned with the ids
                if key in ex:
                    ex[key] = ex[key][:room]
        for key in ("completions_ids", "completions_behaviour"):
            if key in ex:
                ex[key] = [c[:room] for c in ex[key]]
        return ex

    def _check_vocabulary(self, examples: list[dict[str, Any]]) -> None:
        """Stored ids come from the sampling tokenizer: one outside this tokenizer's vocabulary means another."""
        size = len(self.tokenizer)
        top = max((max(c, default=-1) for e in examples for c in (
            [e["prompt_ids"]] + [e[k] for k in ("chosen_ids", "rejected_ids", "completion_ids") if k in e]
            + e.get("completions_ids", []))), default=-1)
        if top >= size:
            from fpa.guards import InputError

            raise InputError(f"the trajectories hold token id {top}, but the tokenizer has {size} tokens: they were "
                             "sampled with another tokenizer; train from the model that sampled them, or "
                             "regenerate them with this one")

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        tokenized = [tokenize_example(e, self.tokenizer) for e in self.raw_examples]
        self._check_vocabulary(tokenized)
        fitted = [self._fit(e) for e in tokenized]
        self.train_set = [e for e in fitted if e is not None]
        self.n_dropped = len(fitted) - len(self.train_set)
        if self.collate.kind == "pairs" and self.collate.shared_tokens:
            add_shared_flags(self.train_set)  # once per data set (after truncation), not once per batch
        if not self.train_set:
            from fpa.guards import InputError

            raise InputError(f"no training examples of kind {self.kind!r} ({len(self.raw_examples)} built from the "
                             f"trajectories, {self.n_dropped} over data.max_length={self.max_length}): the "
                             "trajectories give none (e.g. no problem has both a right and a wrong sample); "
                             "raise generate.k or generate.n_problems, raise data.max_length, or choose an "
                             "objective that trains on single rows (objective=rft)")

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.batch_size, sampler=SeededShuffle(len(self.train_set),
                          self.seed), collate_fn=self.collate, num_workers=self.num_workers, drop_last=False)

