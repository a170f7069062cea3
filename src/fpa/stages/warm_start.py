"""Stage `sft`: supervised warm start on gold solutions, producing the reference policy.

Training stops once greedy accuracy on the dev split reaches ``sft.stop_at`` (moderate, so the
reference's samples hold both correct and incorrect solutions) or after ``sft.max_steps``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import lightning as L
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader

from fpa import checks
from fpa.config.keys import stage_key
from fpa.data.datamodule import SplitBatchSampler, TrajectoryDataModule
from fpa.evaluation.benchmarks import Benchmark
from fpa.evaluation.runner import EvalSettings, evaluate_benchmark
from fpa.generation.hf import HFGenerator
from fpa.models.loading import load_tokenizer
from fpa.models.spec import ModelSpec
from fpa.module import OfflineRLModule
from fpa.objectives.sft import SFT
from fpa.optim import AdamW, WarmupCosine
from fpa.progress import StepBar
from fpa.stages.cache import cached_stage
from fpa.trainer import TrainerFactory

VERSION = "2"  # 2: fused AdamW on CPU (fpa.optim.fused_supported): ~2e-7 different updates from the for-loop


class GoldData(TrajectoryDataModule):
    """The warm start's data: ``batch_size`` is the global batch, whatever the number of processes.

    One process: the plain loader of :class:`TrajectoryDataModule`, unchanged. R data-parallel
    processes: each batch of that loader split over the ranks (:class:`SplitBatchSampler`), so every
    step sees the examples the one-process step sees (the trainer runs with
    ``use_distributed_sampler=False``; Lightning's sampler would give each rank half the data with
    ``batch_size`` per rank, doubling the batch and halving the steps per epoch).
    """

    def train_dataloader(self) -> DataLoader:
        strategy = getattr(self.trainer, "strategy", None) if self.trainer is not None else None
        kw = getattr(strategy, "distributed_sampler_kwargs", None) or {}
        replicas, rank = int(kw.get("num_replicas", 1)), int(kw.get("rank", 0))
        if replicas == 1:
            return super().train_dataloader()
        return DataLoader(self.train_set, batch_sampler=SplitBatchSampler(len(self.train_set), self.batch_size,
                                                                          self.seed, replicas, rank),
                          collate_fn=self.collate, num_workers=self.num_workers)


class AccuracyStop(L.Callback):
    """Every ``every`` steps, greedy dev accuracy; stop once it reaches ``target``."""

    def __init__(self, task, n_problems: int, seed: int, prompt, tokenizer, every: int, target: float,
                 max_new_tokens: int, batch_size: int = 256) -> None:
        self.dev = Benchmark(name="dev", task=task, answer_format="bare", instruction="", split="dev",
                             n_problems=n_problems, problem_seed=seed, max_new_tokens=max_new_tokens)
        self.greedy = EvalSettings(k=1, temperature=0.0, max_new_tokens=max_new_tokens, maj_at=[], verify_workers=1)
        self.prompt, self.tokenizer = prompt, tokenizer
        self.every, self.target, self.max_new_tokens, self.batch_size = every, target, max_new_tokens, batch_size
        self.history: list[dict] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step % self.every == 0:
            self.check(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        if not self.history or self.history[-1]["step"] != trainer.global_step:
            self.check(trainer, pl_module)

    def check(self, trainer, pl_module) -> None:
        from fpa.strategies import generation_policy

        step = trainer.global_step
        # Every rank generates its share of the dev problems and the accuracy is reduced over ranks, so
        # every rank takes the same stop decision (a rank stopping alone would leave the others waiting).
        with generation_policy(pl_module) as model:
            gen = HFGenerator(model, self.tokenizer, batch_size=self.batch_size, max_new_tokens=self.max_new_tokens,
                              progress=False)
            acc = evaluate_benchmark(gen, self.dev, self.prompt, self.greedy, rank=trainer.global_rank,
                                     world_size=trainer.world_size, device=pl_module.device).metrics["pass@1"]
        if trainer.world_size > 1:  # the same float everywhere, to the bit: rank 0's
            acc = float(trainer.strategy.broadcast(acc, src=0))
        self.history.append({"step": step, "dev_accuracy": acc})
        if trainer.training:
            pl_module.log("sft/dev_accuracy", acc, prog_bar=True)
        if acc >= self.target:
            trainer.should_stop = True


@dataclass(frozen=True)
class SFTSettings:
    """The ``sft`` node: the warm start on gold solutions that makes the reference (for models that need one)."""

    enabled: bool = True
    n_problems: int = 20000  # gold solutions from the train split
    batch_size: int = 64  # global batch: examples per optimizer step, split over data-parallel processes
    lr: float = 3.0e-3
    warmup_steps: int = 50
    min_lr_ratio: float = 0.1
    max_steps: int = 1200
    eval_every: int = 100
    eval_problems: int = 200  # dev split, greedy
    stop_at: float = 0.35  # stop once dev accuracy reaches this
    max_length: int = 128  # prompt + solution tokens
    max_new_tokens: int = 64  # of the greedy accuracy check
    eval_batch_size: int = 256

    def __post_init__(self) -> None:
        checks.flag("enabled", self.enabled)
        for name in ("n_problems", "batch_size", "max_steps", "eval_every", "eval_problems", "max_new_tokens",
                     "eval_batch_size"):
            checks.number(name, getattr(self, name), 1, integer=True)
        checks.number("max_length", self.max_length, 2, integer=True)
        checks.number("lr", self.lr, 0, strict=True)
        checks.number("warmup_steps", self.warmup_steps, 0, integer=True)
        checks.number("min_lr_ratio", self.min_lr_ratio, 0, 1)
        checks.number("stop_at", self.stop_at, 0, 1)


def sft_inputs(base_key: str, sft: SFTSettings, model: ModelSpec, task, trainer: TrainerFactory,
               data_seed: int) -> dict:
    """What the reference depends on (its cache key is their hash).

    A trainer that may run several processes adds ``"batches": "global"``: its warm starts split each
    global batch over the ranks (:class:`GoldData`), unlike the warm starts cached before, which gave
    every rank ``sft.batch_size`` of its own. One-process keys are unchanged.
    """
    if getattr(model, "lora", None) is not None:  # the warm start fine-tunes fully: adapters are the train stage's
        import dataclasses

        model = dataclasses.replace(model, lora=None)
    out = {"base": base_key, "sft": sft, "model": model, "task": task, "trainer": trainer, "data_seed": data_seed}
    node = trainer.node
    if (node.get("strategy") is not None or node.get("devices", 1) not in (1, "1")
            or node.get("num_nodes", 1) not in (1, "1")):
        out["batches"] = "global"
    return out


def warm_start(base_path: str, base_key: str, sft: SFTSettings, model: ModelSpec, task, trainer: TrainerFactory,
               data_seed: int, cache_dir: str | Path, info: dict | None = None) -> tuple[str, str]:
    """(reference path, cache key). Without ``sft.enabled`` the base model is the reference.

    ``info``, if given, receives ``cached``: whether the reference came from the cache."""
    if not sft.enabled:
        return base_path, base_key
    inputs = sft_inputs(base_key, sft, model, task, trainer, data_seed)
    key = stage_key("sft", VERSION, **inputs)

    def build(out: Path) -> None:
        start = time.perf_counter()
        L.seed_everything(data_seed, verbose=False)
        prompt, tok = model.prompt, load_tokenizer(base_path)
        problems = task.problems("train", sft.n_problems, seed=data_seed)
        examples = [{"problem_id": p.id, "prompt": prompt(p.question, tok), "completion": p.solution}
                    for p in problems]
        data = GoldData(tok, "correct", examples=examples, batch_size=sft.batch_size,
                                    max_length=sft.max_length, seed=data_seed)
        module = OfflineRLModule(base_path, SFT(), optimizer=AdamW(lr=sft.lr),
                                 scheduler=WarmupCosine(warmup_steps=sft.warmup_steps, min_lr_ratio=sft.min_lr_ratio,
                                                        total_steps=sft.max_steps), dtype=model.dtype)
        stop = AccuracyStop(task, sft.eval_problems, data_seed, prompt, tok,
                            sft.eval_every, sft.stop_at, sft.max_new_tokens, sft.eval_batch_size)
        fit = trainer(sft.max_steps, out, loggers=[CSVLogger(str(out), name="logs")],
                      callbacks=[stop, StepBar("sft (warm start)")], enable_progress_bar=False,
                      use_distributed_sampler=False)  # GoldData splits the global batch itself
        fit.fit(module, data)
        from fpa.stages.train import save_policy

        save_policy(fit, module, tok, out)  # rank 0 saves (gathered under FSDP), the others wait
        if not fit.is_global_zero:
            return
        from fpa.ledger import entry

        passes = module.ledger_passes or {}
        report = {"steps": fit.global_step, "dev_accuracy": stop.history[-1]["dev_accuracy"] if stop.history
                  else None, "history": stop.history, "wall_s": time.perf_counter() - start,
                  "ledger": entry(module.model_size, seconds=time.perf_counter() - start,
                                  policy=passes.get("policy_forward"), backward=passes.get("backward"))}
        (out / "sft_report.json").write_text(json.dumps(report, indent=2))

    # Collective: every rank of a multi-process run takes part in the fit, rank 0 alone saves and publishes.
    path, cached = cached_stage(cache_dir, "sft", key, inputs, build, collective=True)
    if info is not None:
        info["cached"] = cached
    return str(path), key
