"""Stage `sft`: supervised warm start on gold solutions, producing the reference policy.

Training stops once greedy accuracy on the dev split reaches ``sft.stop_at`` (moderate, so the
reference's samples hold both correct and incorrect solutions) or after ``sft.max_steps``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import lightning as L
from lightning.pytorch.loggers import CSVLogger
from omegaconf import DictConfig

from fpa.data.datamodule import TrajectoryDataModule
from fpa.evaluation.heldout import evaluate_problems
from fpa.generation.hf import HFGenerator
from fpa.models.loading import load_tokenizer
from fpa.module import OfflineRLModule
from fpa.objectives.sft import SFT
from fpa.stages.cache import cached_stage
from fpa.stages.runtime import make_prompt, make_task, make_trainer, plain


class AccuracyStop(L.Callback):
    """Every ``every`` steps, greedy dev accuracy; stop once it reaches ``target``."""

    def __init__(self, task, problems, prompt, tokenizer, every: int, target: float, max_new_tokens: int) -> None:
        self.task, self.problems, self.prompt, self.tokenizer = task, problems, prompt, tokenizer
        self.every, self.target, self.max_new_tokens = every, target, max_new_tokens
        self.history: list[dict] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step % self.every == 0:
            self.check(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        if not self.history or self.history[-1]["step"] != trainer.global_step:
            self.check(trainer, pl_module)

    def check(self, trainer, pl_module) -> None:
        step = trainer.global_step
        gen = HFGenerator(pl_module.policy, self.tokenizer, batch_size=256, max_new_tokens=self.max_new_tokens,
                          progress=False)
        acc = evaluate_problems(gen, self.task, self.problems, self.prompt, k=1, temperature=0.0).pass1
        self.history.append({"step": step, "dev_accuracy": acc})
        if trainer.training:
            pl_module.log("sft/dev_accuracy", acc, prog_bar=True)
        if acc >= self.target:
            trainer.should_stop = True


def warm_start(cfg: DictConfig, base_path: str, base_ident: dict) -> tuple[str, dict]:
    """(reference path, cache identity). Without ``sft.enabled`` the base model is the reference."""
    if not cfg.sft.enabled:
        return base_path, base_ident
    ident = {"base": base_ident, "task": plain(cfg.task), "prompt": plain(cfg.model.prompt), "sft": plain(cfg.sft),
             "max_length": cfg.data.max_length, "seed": cfg.data_seed}

    def build(out: Path) -> None:
        start = time.perf_counter()
        L.seed_everything(cfg.data_seed, verbose=False)
        task, prompt, tok = make_task(cfg), make_prompt(cfg), load_tokenizer(base_path)
        problems = task.problems("train", cfg.sft.n_problems, seed=cfg.data_seed)
        examples = [{"problem_id": p.id, "prompt": prompt(p.question, tok), "completion": p.solution}
                    for p in problems]
        data = TrajectoryDataModule(tok, "correct", examples=examples, batch_size=cfg.sft.batch_size,
                                    max_length=cfg.data.max_length, seed=cfg.data_seed)
        module = OfflineRLModule(base_path, SFT(), lr=cfg.sft.lr, warmup_steps=cfg.sft.warmup_steps,
                                 total_steps=cfg.sft.max_steps, min_lr_ratio=cfg.sft.min_lr_ratio,
                                 dtype=cfg.model.dtype)
        stop = AccuracyStop(task, task.problems("dev", cfg.sft.eval_problems, seed=cfg.data_seed), prompt, tok,
                            cfg.sft.eval_every, cfg.sft.stop_at, cfg.generate.max_new_tokens)
        trainer = make_trainer(cfg, cfg.sft.max_steps, out, loggers=[CSVLogger(str(out), name="logs")],
                               callbacks=[stop])
        trainer.fit(module, data)
        module.policy.save_pretrained(out)
        tok.save_pretrained(out)
        report = {"steps": trainer.global_step, "dev_accuracy": stop.history[-1]["dev_accuracy"] if stop.history
                  else None, "history": stop.history, "wall_s": time.perf_counter() - start}
        (out / "sft_report.json").write_text(json.dumps(report, indent=2))

    path, _ = cached_stage(cfg.paths.cache_dir, "sft", ident, build)
    return str(path), ident
