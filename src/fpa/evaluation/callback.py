"""Lightning callback: benchmark accuracy of the policy every N steps and at the end of training.

Each evaluation runs the configured suite on ``pl_module.policy`` through the same code as
``fpa-eval`` (:func:`fpa.evaluation.runner.evaluate_suite`) and logs, at ``trainer.global_step``,

    eval/<benchmark>/pass@1, eval/<benchmark>/pass@<k>, eval/<benchmark>/maj@<k>, eval/avg/<metric>

to every logger of the trainer (directly, so an evaluation is never dropped by
``log_every_n_steps``), and puts them in ``trainer.callback_metrics`` for checkpoint monitors.
Under DDP and FSDP every rank evaluates its share of the problems and the metrics are reduced across
ranks; under FSDP each rank generates with a full, unsharded copy of the policy
(:func:`fpa.strategies.generation_policy`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable

import lightning as L
import torch
from fpa import checks
from fpa.evaluation.runner import SuiteResult, evaluate_suite, write_samples
from fpa.evaluation.suite import Suite
from fpa.generation.hf import HFGenerator
from fpa.prompting import PromptFormat

log = logging.getLogger(__name__)


class BenchmarkEvalCallback(L.Callback):
    """The ``callbacks.eval`` node: the suite (``${benchmark}``) on the live policy during training.

    ``n_problems`` caps every benchmark for the curves (the end-of-run evaluation uses the whole
    suite). The tokenizer is the policy's own (loaded from the module's ``policy_path`` at setup)
    unless one is given. Sampling is ``transformers.generate`` on the policy in memory: other
    backends are for saved models (the end-of-run evaluation and ``fpa-eval``).
    """

    def __init__(self, suite: Suite, prompt: PromptFormat, *, every_n_steps: int = 0, at_start: bool = False,
                 at_end: bool = True, n_problems: int | None = None, prefix: str = "eval",
                 samples_dir: str | Path | None = None, tokenizer=None,
                 make_sampler: Callable[[Any, Any], Any] | None = None) -> None:
        """``make_sampler(model, tokenizer)`` builds the sampler (default: :class:`HFGenerator`);
        ``samples_dir``: write each evaluation's samples under ``<samples_dir>/step-<N>/`` (default:
        ``<run dir>/eval_samples``)."""
        checks.number("every_n_steps", every_n_steps, 0, integer=True)
        checks.number("n_problems", n_problems, 1, integer=True, optional=True)
        checks.flag("at_start", at_start)
        checks.flag("at_end", at_end)
        self.suite = suite.subset(n_problems)
        self.benchmarks, self.settings = list(self.suite.benchmarks.values()), self.suite.settings()
        self.prompt, self.tokenizer = prompt, tokenizer
        self.every_n_steps, self.at_start, self.at_end = every_n_steps, at_start, at_end
        self.batch_size, self.prefix = self.suite.batch_size, prefix
        self.samples_dir = Path(samples_dir) if samples_dir else None
        self.make_sampler = make_sampler
        self.history: list[dict[str, Any]] = []  # one row of logged metrics per evaluation, with its step
        self.last_result: SuiteResult | None = None
        self._last_step: int | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.tokenizer is None:
            from fpa.models.loading import load_tokenizer

            hp = getattr(pl_module, "hparams", {})
            self.tokenizer = load_tokenizer(hp["policy_path"], bool(hp.get("trust_remote_code", False)))
        if self.samples_dir is None and trainer.default_root_dir:
            self.samples_dir = Path(trainer.default_root_dir) / "eval_samples"

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
    def sampler(self, pl_module: L.LightningModule, model=None):
        model = pl_module.policy if model is None else model
        if self.make_sampler is not None:
            return self.make_sampler(model, self.tokenizer)
        return HFGenerator(model, self.tokenizer, batch_size=self.batch_size,
                           max_new_tokens=self.settings.max_new_tokens, progress=False)

    def evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        step = trainer.global_step
        self._last_step = step
        from fpa.strategies import generation_policy

        with generation_policy(pl_module) as model:  # every rank together: a full copy under FSDP
            result = evaluate_suite(self.sampler(pl_module, model), self.benchmarks, self.prompt, self.settings,
                                    suite=self.suite.name, rank=trainer.global_rank,
                                    world_size=trainer.world_size, device=pl_module.device)
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
