"""LightningModule: a trainable policy, a frozen reference (loaded only when used), one objective, FPA."""

from __future__ import annotations

import math
from functools import partial

import lightning as L
import torch

from fpa.diagnostics import batch_diagnostics
from fpa.fpa import FuturePolicy
from fpa.logprobs import completion_logprobs
from fpa.models.loading import load_model
from fpa.objectives.base import Objective, ObjectiveInputs


def warmup_cosine(step: int, warmup: int, total: int, min_ratio: float) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class OfflineRLModule(L.LightningModule):
    def __init__(self, policy_path: str, objective: Objective, fpa: FuturePolicy | None = None,
                 reference_path: str | None = None, lr: float = 1e-5, weight_decay: float = 0.0,
                 warmup_steps: int = 0, total_steps: int = 1000, min_lr_ratio: float = 1.0,
                 chunk_size: int = 1024, dtype: str = "float32", gradient_checkpointing: bool = False,
                 trust_remote_code: bool = False) -> None:
        super().__init__()
        self.objective = objective
        self.fpa = fpa or FuturePolicy()
        self.uses_reference = objective.needs_reference or self.fpa.enabled
        self.policy = load_model(policy_path, dtype, trust_remote_code)
        if gradient_checkpointing:
            self.policy.gradient_checkpointing_enable()
        self.reference = None
        if self.uses_reference:
            self.reference = load_model(reference_path or policy_path, dtype, trust_remote_code, frozen=True)
        self.lr, self.weight_decay, self.chunk_size = lr, weight_decay, chunk_size
        self.schedule = partial(warmup_cosine, warmup=max(1, warmup_steps), total=total_steps,
                                min_ratio=min_lr_ratio)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.reference is not None:
            self.reference.eval()  # dropout etc. stay off in the frozen reference
        return self

    def objective_inputs(self, batch: dict[str, torch.Tensor]) -> ObjectiveInputs:
        lp = completion_logprobs(self.policy, batch["input_ids"], batch["attention_mask"], batch["completion_mask"],
                                 reference=self.reference, lam=self.fpa.lam, chunk_size=self.chunk_size)
        kl = None
        if self.objective.needs_kl_rows:
            with torch.no_grad():
                k = completion_logprobs(self.policy, batch["kl_input_ids"], batch["kl_attention_mask"],
                                        batch["kl_completion_mask"], reference=self.reference, lam=self.fpa.lam,
                                        chunk_size=self.chunk_size)
            kl = ObjectiveInputs(policy=k.policy.detach(), mask=k.mask, reference=k.reference, future=k.future)
        return ObjectiveInputs(policy=lp.policy, mask=lp.mask, reference=lp.reference, future=lp.future,
                               chosen=batch["chosen"], reward=batch["reward"], group=batch["group"], kl=kl)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x = self.objective_inputs(batch)
        out = self.fpa(self.objective, x)
        shared = batch["shared_mask"][:, 1:] if "shared_mask" in batch else None
        metrics = {"train/loss": out.loss.detach(), **{f"train/{k}": v for k, v in
                                                       batch_diagnostics(x, out, self.objective.data, shared).items()}}
        self.log_dict(metrics, on_step=True, on_epoch=False, prog_bar=False, batch_size=x.policy.shape[0])
        self.log("loss", out.loss.detach(), prog_bar=True, logger=False, batch_size=x.policy.shape[0])
        return out.loss

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.policy.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, self.schedule)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
