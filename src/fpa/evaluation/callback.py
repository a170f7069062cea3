"""Lightning callback: benchmark accuracy of the policy every N steps and at the end of training.

Each evaluation runs the configured suite on ``pl_module.policy`` through the same code as
``fpa-eval`` (:func:`fpa.evaluation.runner.evaluate_suite`) and logs, at ``trainer.global_step``,

    eval/<benchmark>/pass@1, eval/<benchmark>/pass@<k>, eval/<benchmark>/maj@<k>, eval/avg/<metric>

to every logger of the trainer (directly, so an evaluation is never dropped by
``log_every_n_steps``), and puts them in ``trainer.callback_metrics`` for checkpoint monitors.
Under DDP every rank evaluates its share of the problems and the metrics are reduced across ranks.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from fpa.evaluation.benchmarks import Benchmark, build_suite
from fpa.evaluation.runner import EvalSettings, SuiteResult, evaluate_suite, write_samples
from fpa.generation.hf import HFGenerator
from fpa.prompting import PromptFormat

log = logging.getLogger(__name__)


class BenchmarkEvalCallback(L.Callback):
    def __init__(self, benchmarks: list[Benchmark], settings: EvalSettings, tokenizer, prompt: PromptFormat, *,
                 every_n_steps: int = 0, at_start: bool = False, at_end: bool = True, batch_size: int = 64,
                 suite: str = "", prefix: str = "eval", samples_dir: str | Path | None = None,
                 make_sampler: Callable[[Any, Any], Any] | None = None) -> None:
        """``make_sampler(model, tokenizer)`` builds the sampler (default: :class:`HFGenerator`);
        ``samples_dir``: write each evaluation's samples under ``<samples_dir>/step-<N>/``."""
        if every_n_steps < 0:
            raise ValueError(f"every_n_steps must be >= 0 (0: never during training), got {every_n_steps}")
        self.benchmarks, self.settings, self.tokenizer, self.prompt = benchmarks, settings, tokenizer, prompt
        self.every_n_steps, self.at_start, self.at_end = every_n_steps, at_start, at_end
        self.batch_size, self.suite, self.prefix = batch_size, suite, prefix
        self.samples_dir = Path(samples_dir) if samples_dir else None
        self.make_sampler = make_sampler
        self.history: list[dict[str, Any]] = []  # one row of logged metrics per evaluation, with its step
        self.last_result: SuiteResult | None = None
        self._last_step: int | None = None

    @classmethod
    def from_config(cls, node: DictConfig | dict, tokenizer, prompt: PromptFormat,
                    **overrides) -> BenchmarkEvalCallback:
        """From a ``benchmark`` config node (a suite config: settings, ``benchmarks``, callback options)."""
        cfg = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
        settings = EvalSettings.from_config(cfg)
        benchmarks = build_suite(cfg["benchmarks"], default_n_problems=settings.n_problems)
        kwargs = {k: cfg[k] for k in ("every_n_steps", "at_start", "at_end", "batch_size", "samples_dir")
                  if cfg.get(k) is not None}
        return cls(benchmarks, settings, tokenizer, prompt, suite=cfg.get("suite", ""), **{**kwargs, **overrides})

    # -- hooks -----------------------------------------------------------------------------------
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.at_start:
            self.evaluate(trainer, pl_module)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        step = trainer.global_step
        if self.every_n_steps and step > 0 and step % self.every_n_steps == 0 and step != self._last_step:
            self.evaluate(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.at_end and trainer.global_step != self._last_step:
            self.evaluate(trainer, pl_module)

    # -- the evaluation --------------------------------------------------------------------------
    def sampler(self, pl_module: L.LightningModule):
        model = pl_module.policy
        if self.make_sampler is not None:
            return self.make_sampler(model, self.tokenizer)
        return HFGenerator(model, self.tokenizer, batch_size=self.batch_size,
                           max_new_tokens=self.settings.max_new_tokens, progress=False)

    def evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        step = trainer.global_step
        self._last_step = step
        result = evaluate_suite(self.sampler(pl_module), self.benchmarks, self.prompt, self.settings,
                                suite=self.suite, rank=trainer.global_rank, world_size=trainer.world_size,
                                device=pl_module.device)
        self.last_result = result
        metrics = result.flat_metrics(self.prefix)
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)
            logger.save()
        trainer.callback_metrics.update({k: torch.tensor(v) for k, v in metrics.items()})
        self.history.append({"step": step, **metrics})
        if self.samples_dir is not None:
            out = self.samples_dir / f"step-{step}"
            suffix = f".rank{trainer.global_rank}" if trainer.world_size > 1 else ""
            write_samples(result, out, suffix)
            if trainer.is_global_zero:
                (out / "results.json").write_text(json.dumps({"step": step, **result.to_dict()}, indent=2))
        log.info("step %d: %s", step, ", ".join(f"{k}={v:.3f}" for k, v in metrics.items() if k.endswith("pass@1")))
        return metrics


def make_eval_callbacks(cfg: DictConfig, tokenizer, prompt: PromptFormat, samples_dir: str | Path | None = None
                        ) -> list[L.Callback]:
    """The eval callback from ``cfg.benchmark`` when a suite is configured and enabled, else no callback.

    Disabled when ``cfg.benchmark`` is missing/null or ``cfg.benchmark.enabled`` is false.
    """
    node = cfg.get("benchmark") if hasattr(cfg, "get") else None
    if not node or not node.get("enabled", True):
        return []
    extra = {"samples_dir": samples_dir} if samples_dir is not None else {}
    return [BenchmarkEvalCallback.from_config(node, tokenizer, prompt, **extra)]
