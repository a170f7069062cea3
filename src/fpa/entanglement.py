"""Lightning callback: gradient entanglement of the chosen and rejected log-probs on a fixed probe batch.

Yuan et al. (arXiv 2410.13828) show that a margin objective's step moves the chosen and rejected
sequence log-probs together when their gradients are entangled: for a step along ∇(log π_w − log π_l),

    Δ log π_w ∝ ‖g_w‖² − ⟨g_w, g_l⟩,      Δ log π_l ∝ ⟨g_w, g_l⟩ − ‖g_l‖²,

so the chosen log-prob falls when ⟨g_w, g_l⟩ > ‖g_w‖² and the rejected one rises when
⟨g_w, g_l⟩ > ‖g_l‖². Every ``every_n_steps`` optimizer steps this callback computes, on the first
``n_examples`` training examples (fixed at fit start, in the data set's own order, not the shuffled
one), with respect to the trainable policy parameters,

    g_w = ∇ mean over the probe's chosen rows of the summed log π_θ(y_w),   g_l = the same for rejected rows,

(aggregate gradients: the mean over the probe's rows first, then one inner product; not per-pair
cosines averaged) and logs ``entanglement/cosine``, ``entanglement/inner``, ``entanglement/norm_chosen``,
``entanglement/norm_rejected``, ``entanglement/inner_over_chosen`` (⟨g_w,g_l⟩/‖g_w‖²: > 1 means a
margin step lowers the chosen) and ``entanglement/inner_over_rejected`` (> 1: it raises the rejected).

The probe runs the policy in eval mode (no dropout, so no random numbers are drawn) and takes
gradients with ``torch.autograd.grad`` (nothing is accumulated into ``.grad``): training is exactly
the same with it on or off, and ``callbacks.entanglement`` is not part of a run's identity.
The probe needs rows of both kinds (chosen and rejected); for objectives trained on correct rows only
(SFT / RFT) it logs nothing. Under sharded training (``trainer=fsdp``) it is skipped with a warning.
"""

from __future__ import annotations

import logging

import lightning as L
import torch
from torch import Tensor

from fpa import checks

log = logging.getLogger(__name__)


def entanglement(chosen_logp: Tensor, rejected_logp: Tensor, params: list[Tensor]) -> dict[str, Tensor]:
    """The metrics above from per-row summed log-probs (with graph to ``params``) of the two kinds of row."""
    g_w = torch.autograd.grad(chosen_logp.mean(), params, retain_graph=True, allow_unused=True)
    g_l = torch.autograd.grad(rejected_logp.mean(), params, allow_unused=True)
    pairs = [(a, b) for a, b in zip(g_w, g_l) if a is not None or b is not None]
    zero = torch.zeros((), dtype=torch.float64, device=chosen_logp.device)

    def dot(u, v):
        return sum(((x.double() * y.double()).sum() for x, y in zip(u, v) if x is not None and y is not None), zero)

    w, r = [a for a, _ in pairs], [b for _, b in pairs]
    inner, ww, rr = dot(w, r), dot(w, w), dot(r, r)
    tiny = torch.finfo(torch.float64).tiny
    return {"cosine": inner / (ww.sqrt() * rr.sqrt()).clamp_min(tiny), "inner": inner,
            "norm_chosen": ww.sqrt(), "norm_rejected": rr.sqrt(),
            "inner_over_chosen": inner / ww.clamp_min(tiny), "inner_over_rejected": inner / rr.clamp_min(tiny)}


class EntanglementProbe(L.Callback):
    """The ``callbacks.entanglement`` node: ``every_n_steps`` (0: off) and the probe's size ``n_examples``
    (pairs for pair objectives, labelled rows or groups for the others)."""

    def __init__(self, every_n_steps: int = 0, n_examples: int = 16, prefix: str = "entanglement") -> None:
        checks.number("every_n_steps", every_n_steps, 0, integer=True)
        checks.number("n_examples", n_examples, 1, integer=True)
        self.every_n_steps, self.n_examples, self.prefix = every_n_steps, n_examples, prefix
        self.probe: dict[str, Tensor] | None = None
        self.history: list[dict[str, float]] = []  # one row per probe, with its step
        self._last_step: int | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.every_n_steps:
            return
        if getattr(trainer, "datamodule", None) is None or not hasattr(trainer.datamodule, "train_set"):
            log.warning("callbacks.entanglement: no trajectory DataModule to take the probe from: skipped")
            self.every_n_steps = 0
            return
        from fpa.strategies import is_sharded

        if is_sharded(pl_module):
            log.warning("callbacks.entanglement: skipped under sharded training (trainer=fsdp)")
            self.every_n_steps = 0
            return
        data = trainer.datamodule
        examples = data.train_set[: self.n_examples]
        batch = data.collate(examples)
        chosen = batch["chosen"].bool()
        if chosen.all() or not chosen.any():
            log.warning("callbacks.entanglement: the probe has no rejected rows (objective trains on correct "
                        "rows only): nothing to log")
            self.every_n_steps = 0
            return
        keep = ("input_ids", "attention_mask", "completion_mask", "chosen")
        self.probe = {k: batch[k].to(pl_module.device) for k in keep}
        self.record(trainer, pl_module, trainer.global_step)  # a point at the start (step 0: the reference)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        step = trainer.global_step  # optimizer steps taken so far
        if not self.every_n_steps or self.probe is None or step % self.every_n_steps or step == self._last_step:
            return  # (with gradient accumulation this hook runs once per micro-batch: probe once per step)
        self.record(trainer, pl_module, step)

    def record(self, trainer: L.Trainer, pl_module: L.LightningModule, step: int) -> None:
        self._last_step = step
        metrics = {f"{self.prefix}/{k}": float(v) for k, v in self.measure(pl_module).items()}
        self.history.append({"step": step, **metrics})
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=step)

    def measure(self, pl_module: L.LightningModule) -> dict[str, Tensor]:
        from fpa.logprobs import completion_logprobs

        policy, p = pl_module.policy, self.probe
        was_training = policy.training
        policy.eval()
        try:
            with torch.enable_grad():
                lp = completion_logprobs(policy, p["input_ids"], p["attention_mask"], p["completion_mask"],
                                         chunk_size=getattr(pl_module, "chunk_size", 1024))
                seq = (lp.policy * lp.mask).sum(-1)
                params = [q for q in policy.parameters() if q.requires_grad]
                return entanglement(seq[p["chosen"]], seq[~p["chosen"]], params)
        finally:
            policy.train(was_training)
