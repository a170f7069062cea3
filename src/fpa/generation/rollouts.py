"""Rollouts during training (``train.rollout_every=N``): semi-online and on-policy training on the policy's own samples.

Round ``r`` covers optimizer steps ``[r·N, (r+1)·N)``. When its first batch is asked for, the live policy
samples ``rollout.k`` completions for ``rollout.n_problems`` training problems (drawn, seeded by
``(rollout.seed, r)``, from the ``generate.n_problems`` problems the offline stage would sample), the task's
verifier scores them, and they are written to ``<run_dir>/rollouts/round_<r>`` through the trajectory code
(:func:`fpa.generation.trajectories.write_trajectory_set`: manifest, Parquet shards, ``stats.json``), each record
with its sampled ids and their behaviour log-probs at temperature 1 (:mod:`fpa.generation.behaviour`). The
round's examples (the objective's kind: pairs for DPO, groups for GRPO) are built exactly as offline ones and
served in an order seeded by ``(seed, r)``: ``N × accumulation`` micro-batches; a round with fewer examples
than that is gone through again in a new order (several optimizer steps per rollout batch, TRL's
``num_iterations``). N = 1 with one batch per round is on-policy; the reference stays the warm start.

Resumption: the loader starts at the restored global step. A round already on disk is read back, not sampled
again (the policy that sampled it is gone); a round cut off mid-write resumes shard by shard, which is exact
because the resumed run reaches the same weights before it. Sampling runs under its own RNG (``fork_rng``):
the training's random stream does not depend on how long the rollouts took or whether they were read back.

With several data-parallel processes rank 0 samples and writes the round while the others wait at a barrier,
then every rank reads it and takes its slice of each global micro-batch (as :mod:`fpa.resume` does).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator

import lightning as L
import torch

from fpa.data.collate import BEHAVIOUR, Collator
from fpa.data.datamodule import SeededShuffle, TrajectoryDataModule
from fpa.data.records import load_trajectories
from fpa.data.rows import row_values
from fpa.guards import InputError

ROUND_SEED = 7_919  # mixes the round into the seeds of its problems and its order


def round_dir(root: Path, r: int) -> Path:
    return Path(root) / f"round_{r:05d}"


def round_problems(pool: list, n: int, seed: int, r: int) -> list[int]:
    """Indices into ``pool`` of round ``r``'s problems: a permutation seeded by (seed, r), its first ``n``."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + r * ROUND_SEED + 1)
    return torch.randperm(len(pool), generator=gen)[:n].tolist()


@dataclass
class LiveSampler:
    """The live policy as a trajectory generator: its engine samples (``hf``: the live module itself), then the
    policy scores the samples' ids at temperature 1 (one more forward, counted in the ledger)."""

    policy: Any
    tokenizer: Any
    settings: Any  # SamplingSettings
    chunk_size: int = 1024
    model_path: str = ""  # what a separate engine loads first (vllm); the hf sampler is the live module itself
    tokens_per_second: float = 0.0

    def engine(self):
        """A generator that samples with the policy's current weights."""
        from fpa.generation.hf import HFGenerator

        return HFGenerator(self.policy, self.tokenizer, batch_size=self.settings.batch_size,
                           max_new_tokens=self.settings.max_new_tokens, progress=False)

    def sample(self, prompts, n=1, temperature=1.0, top_p=1.0, seed=0, desc="rollout"):
        from fpa.generation.behaviour import score_samples

        gen = self.engine()
        samples = gen.sample(prompts, n=n, temperature=temperature, top_p=top_p, seed=seed, desc=desc)
        self.tokens_per_second = gen.tokens_per_second
        score_samples(self.policy, samples, self.tokenizer.pad_token_id, batch_size=self.settings.batch_size,
                      chunk_size=self.chunk_size)
        return samples


@dataclass
class VLLMLiveSampler(LiveSampler):
    """A colocated vLLM engine (``rollout.backend=vllm``) loaded once from the reference, its weights replaced by
    the policy's before every round (:meth:`fpa.generation.vllm_backend.VLLMGenerator.update_weights`)."""

    vllm: Any = None

    def engine(self):
        if self.vllm is None:
            from fpa.generation.vllm_backend import VLLMGenerator

            self.vllm = VLLMGenerator.for_rollouts(self.model_path, self.tokenizer,
                                                   batch_size=self.settings.batch_size,
                                                   max_new_tokens=self.settings.max_new_tokens, progress=False,
                                                   **self.settings.engine)
        self.vllm.update_weights(self.policy)
        return self.vllm


SAMPLERS = {"hf": LiveSampler, "vllm": VLLMLiveSampler}


class RolloutData(L.LightningDataModule):
    """Serves each round's examples; ``train_set`` is the current round's (callbacks read it)."""

    def __init__(self, tokenizer, objective, data, settings, every: int, micro_batch_size: int, accumulate: int,
                 max_steps: int, seed: int, problems: list, prompts: list[str], task, out_dir: Path,
                 model_path: str = "", chunk_size: int = 1024) -> None:
        super().__init__()
        if len(problems) != len(prompts):
            raise ValueError(f"{len(problems)} problems but {len(prompts)} prompts")
        self.tokenizer, self.objective, self.data, self.settings = tokenizer, objective, data, settings
        self.kind = objective.data
        self.every, self.batch_size, self.accumulate, self.max_steps = every, micro_batch_size, accumulate, max_steps
        self.seed, self.problems, self.prompts, self.task = seed, problems, prompts, task
        self.out_dir, self.model_path, self.chunk_size = Path(out_dir), model_path, chunk_size
        self.collate = Collator(self.kind, tokenizer.pad_token_id, kl_rows=objective.needs_kl_rows, pack=data.pack)
        self.train_set: list[dict] = []
        self._sampler = None

    # -- one round ---------------------------------------------------------------------------------------------
    def _live_sampler(self):
        if self._sampler is None:  # sharded training is refused when the config is built (fpa.config.rules)
            self._sampler = SAMPLERS[self.settings.backend](self.trainer.lightning_module.policy, self.tokenizer,
                                                            self.settings, chunk_size=self.chunk_size,
                                                            model_path=self.model_path)
        return self._sampler

    def write_round(self, r: int) -> Path:
        """Sample round ``r`` with the live policy into its directory (or finish it); returns the directory."""
        from fpa.generation.trajectories import write_trajectory_set

        out = round_dir(self.out_dir, r)
        picked = round_problems(self.problems, self.settings.n_problems, self.settings.seed, r)
        settings = replace(self.settings, n_problems=len(picked))
        devices = [torch.cuda.current_device()] if torch.cuda.is_available() and torch.cuda.is_initialized() else []
        with torch.random.fork_rng(devices=devices):
            write_trajectory_set(out, problems=[self.problems[i] for i in picked],
                                 prompts=[self.prompts[i] for i in picked], task=self.task,
                                 load_generator=self._live_sampler, settings=settings,
                                 model_name=f"policy@step{r * self.every}",
                                 identity={"round": r, "step": r * self.every, "seed": self.seed}, progress=False,
                                 plot=False)
        return out

    def round_examples(self, r: int) -> list[dict]:
        """Round ``r``'s training examples, sampled now (rank 0) or read back from disk."""
        out = round_dir(self.out_dir, r)
        trainer = self.trainer
        if trainer is None or trainer.is_global_zero:
            self.write_round(r)
        if trainer is not None:
            trainer.strategy.barrier("rollout-round")
        records, _ = load_trajectories(out, skip_invalid=True)
        d = self.data
        built = TrajectoryDataModule(self.tokenizer, self.kind, trajectories=records, batch_size=self.batch_size,
                                     max_length=d.max_length, overlong=d.overlong, pairing=d.pairing,
                                     max_pairs_per_problem=d.max_pairs_per_problem, seed=self.seed + r * ROUND_SEED)
        try:
            built.setup("fit")
        except InputError as e:
            raise InputError(f"{out}: rollout round {r} gives no training examples ({e}); raise rollout.k or "
                             "rollout.n_problems") from None
        for ex in built.train_set:
            values = row_values(ex, self.kind, "behaviour")
            if values is not None:
                ex[BEHAVIOUR] = torch.tensor(values, dtype=torch.float32)
        self.train_set = built.train_set
        return built.train_set

    # -- Lightning ---------------------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.every < 1:
            raise ValueError(f"train.rollout_every must be >= 1 here, got {self.every}")

    def train_dataloader(self) -> "RolloutLoader":
        strategy = getattr(self.trainer, "strategy", None) if self.trainer is not None else None
        kw = getattr(strategy, "distributed_sampler_kwargs", None) or {}
        return RolloutLoader(self, num_replicas=int(kw.get("num_replicas", 1)), rank=int(kw.get("rank", 0)))


class RolloutLoader:
    """Micro-batches for every step of the run, round after round. Sized (``max_steps × accumulation``), so
    Lightning does not prefetch a batch ahead: round r is sampled by the policy after step r·N − 1 exactly."""

    def __init__(self, data: RolloutData, num_replicas: int = 1, rank: int = 0) -> None:
        self.data, self.num_replicas, self.rank = data, num_replicas, rank

    def __len__(self) -> int:
        return self.data.max_steps * self.data.accumulate

    def order(self, n: int, r: int, n_batches: int) -> list[list[int]]:
        """Round ``r``'s global micro-batches of ``batch × replicas`` indices into its ``n`` examples: shuffled
        passes seeded by (seed, r, pass), concatenated until ``n_batches`` are full (``n`` > 0: an empty round is
        refused by :meth:`RolloutData.round_examples`)."""
        g = self.data.batch_size * self.num_replicas
        flat: list[int] = []
        shuffle = SeededShuffle(n, self.data.seed * 1_000_003 + r * ROUND_SEED)
        while len(flat) < n_batches * g:
            flat += list(shuffle)
            shuffle.set_epoch(shuffle.epoch + 1)
        return [flat[k * g:(k + 1) * g] for k in range(n_batches)]

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        data = self.data
        per_round = data.every * data.accumulate
        trainer = data.trainer
        pos = (trainer.global_step if trainer is not None else 0) * data.accumulate  # resumed: the restored step
        while pos < len(self):
            r, first = divmod(pos, per_round)
            examples = data.round_examples(r)
            batches = self.order(len(examples), r, per_round)
            b = data.batch_size
            for k in range(first, per_round):
                if pos >= len(self):
                    return
                mine = batches[k][self.rank * b:(self.rank + 1) * b]
                pos += 1
                yield data.collate([examples[i] for i in mine])
