"""LightningModule: a trainable policy, a frozen reference (loaded only when used), one objective, FPA.

``forward`` is the one place parameters are used: it returns the completion log-probs of the policy
(with gradient), the reference and the future policy. Under ``trainer=fsdp`` the module is the FSDP
root (see :mod:`fpa.strategies`), so the policy's output layer, read directly by the chunked
log-probs, is gathered there; on one device ``forward`` is a plain call.

With ``precomputed_reference`` (``train.precompute_reference``; FPA off, an objective with
``reference_on_served_rows``) no reference model is loaded: each batch carries the reference's token
log-probs, computed once before training (:mod:`fpa.stages.reference_logprobs`).

Checkpoints hold the policy, the optimizer and the scheduler, never the frozen reference (it is
reloaded from ``reference_path``); they load with ``weights_only=True``.

With ``lora`` (:class:`fpa.models.lora.LoraSettings`) the model is loaded once and wrapped by peft:
only the adapters train, and the reference is the same model with its adapter disabled (so FPA's
future policy anchors to the base's logits). Checkpoints then hold only the adapter weights.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, replace
from typing import Any, Iterator

import lightning as L
import torch

from fpa import checks
from fpa.diagnostics import batch_diagnostics
from fpa.fpa import FuturePolicy
from fpa.ledger import ModelSize, Pass
from fpa.logprobs import CompletionLogProbs, completion_logprobs
from fpa.models.loading import load_model
from fpa.models.lora import LoraSettings, adapter_disabled
from fpa.data.packing import unpack_logprobs
from fpa.data.reference import KEY as REFERENCE_KEY, blocker as precompute_blocker
from fpa.objectives.base import Objective, ObjectiveInputs
from fpa.optim import AdamW, WarmupCosine

REFERENCE = "reference."


def _drop_reference(module, state_dict, prefix, local_metadata) -> None:
    for key in [k for k in state_dict if k.startswith(prefix + REFERENCE)]:
        del state_dict[key]


def _reference_not_expected(module, incompatible_keys) -> None:
    missing = incompatible_keys.missing_keys
    missing[:] = [k for k in missing if not k.startswith(REFERENCE)]


POLICY = "policy."


def _drop_frozen_policy(module, state_dict, prefix, local_metadata) -> None:
    """With LoRA: only the adapters of the policy are saved (the frozen base is reloaded from its path)."""
    keep = module.trainable_policy_keys
    if keep is None:
        return
    start = prefix + POLICY
    for key in [k for k in state_dict if k.startswith(start) and k[len(start):] not in keep]:
        del state_dict[key]


def _frozen_policy_not_expected(module, incompatible_keys) -> None:
    keep = module.trainable_policy_keys
    if keep is None:
        return
    missing = incompatible_keys.missing_keys
    missing[:] = [k for k in missing if not (k.startswith(POLICY) and k[len(POLICY):] not in keep)]


@contextlib.contextmanager
def _gathered(model) -> Iterator[None]:
    """A sharded (FSDP2) frozen model's own parameters gathered for the duration; a no-op otherwise."""
    from fpa.strategies import is_sharded

    if model is None or not is_sharded(model):
        yield
        return
    model.unshard()
    try:
        yield
    finally:
        model.reshard()


@dataclass(frozen=True)
class ModuleSettings:
    """The ``module`` node: how the LightningModule runs its models (the parts come from their own nodes)."""

    chunk_size: int = 256  # tokens per log-prob chunk: peak logits memory ≈ chunk_size × vocab × 4 B (×2 in backward)
    gradient_checkpointing: bool = False  # recompute activations in backward (set by the GPU trainer presets)

    def __post_init__(self) -> None:
        checks.number("chunk_size", self.chunk_size, 1, integer=True)
        checks.flag("gradient_checkpointing", self.gradient_checkpointing)

    def build(self, policy_path: str, objective: Objective, fpa: FuturePolicy, optimizer: AdamW,
              scheduler: WarmupCosine, **kwargs: Any) -> OfflineRLModule:
        return OfflineRLModule(policy_path, objective, fpa, optimizer=optimizer, scheduler=scheduler,
                               chunk_size=self.chunk_size, gradient_checkpointing=self.gradient_checkpointing,
                               **kwargs)


class OfflineRLModule(L.LightningModule):
    def __init__(self, policy_path: str, objective: Objective, fpa: FuturePolicy | None = None,
                 reference_path: str | None = None, optimizer: AdamW | None = None,
                 scheduler: WarmupCosine | None = None, chunk_size: int = 1024, dtype: str = "float32",
                 gradient_checkpointing: bool = False, trust_remote_code: bool = False,
                 policy_dtype: str | None = None, sync_loss: bool = True, lora: LoraSettings | None = None,
                 precomputed_reference: bool = False) -> None:
        super().__init__()
        # Plain values only (strings, numbers): checkpoints stay loadable with weights_only=True.
        self.save_hyperparameters(ignore=["objective", "fpa", "optimizer", "scheduler", "lora"])
        if lora is not None:
            self.hparams["lora"] = {"r": lora.r, "alpha": lora.alpha, "dropout": lora.dropout,
                                    "target_modules": list(lora.target_modules)}
        self.lora = lora
        self.objective = objective
        self.fpa = fpa or FuturePolicy()
        self.optimizer_factory = optimizer or AdamW()
        self.scheduler_factory = scheduler or WarmupCosine(warmup_steps=0, total_steps=1000)
        self.hparams["objective"] = f"{type(objective).__module__}.{type(objective).__qualname__}"
        self.hparams["fpa"] = {"lam": float(self.fpa.lam), "apply_to": self.fpa.apply_to,
                               **({"guard": self.fpa.guard} if self.fpa.guard is not None else {})}
        self.hparams["optimizer"] = {"name": type(self.optimizer_factory).__name__,
                                     **{k: list(v) if isinstance(v, tuple) else v
                                        for k, v in asdict(self.optimizer_factory).items()}}
        self.hparams["scheduler"] = {"name": type(self.scheduler_factory).__name__,
                                     **asdict(self.scheduler_factory)}
        self.uses_reference = objective.needs_reference or self.fpa.needs_reference
        # Reference log-probs served with the batch (fpa.data.reference): no reference model, no reference forward.
        self.precomputed_reference = bool(precomputed_reference)
        if self.precomputed_reference:
            why = precompute_blocker(objective, self.fpa)
            if why is not None:
                raise ValueError(f"precomputed_reference: {why}")
        # The policy's master weights: fp32 under bf16-mixed (policy_dtype), else the model's dtype.
        self.policy = load_model(policy_path, policy_dtype or dtype, trust_remote_code)
        self.policy.config.use_cache = False  # training never decodes: no KV cache
        # from_pretrained returns eval mode and Lightning keeps submodule modes as found: without this,
        # dropout and gradient checkpointing (active only in training mode) would be silently off.
        self.policy.train()
        if gradient_checkpointing:
            self.policy.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.trainable_policy_keys: set[str] | None = None
        if lora is not None:  # adapters only; the reference is this model with them disabled
            self.policy = lora.wrap(self.policy)
            self.policy.train()
            self.trainable_policy_keys = {n for n, p in self.policy.named_parameters() if p.requires_grad}
        self.reference = None
        if self.uses_reference and lora is None and not self.precomputed_reference:
            self.reference = load_model(reference_path or policy_path, dtype, trust_remote_code, frozen=True)
            self.reference.config.use_cache = False
        self.chunk_size, self.sync_loss = chunk_size, sync_loss
        # Compute ledger (fpa.ledger): per pass kind, [tokens, projected tokens, Σ L²] of this process, kept on
        # the batch's device (no host sync per step); ``ledger_prior``: a resumed run's counts before the resume.
        self.model_size = ModelSize.of(self.policy)
        self.ledger_counts: dict[str, torch.Tensor] = {}
        self.ledger_prior: dict[str, list[int]] = {}
        self.ledger_passes: dict[str, Pass] | None = None  # after fit: summed over processes and the resume
        self.last_batch_idx = 0  # for the NaN guard's message
        self.register_state_dict_post_hook(_drop_reference)
        self.register_load_state_dict_post_hook(_reference_not_expected)
        if lora is not None:
            self.register_state_dict_post_hook(_drop_frozen_policy)
            self.register_load_state_dict_post_hook(_frozen_policy_not_expected)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.reference is not None:
            self.reference.eval()  # dropout etc. stay off in the frozen reference
        return self

    def configure_model(self) -> None:
        """Shard policy and reference over the data-parallel mesh under ``trainer=fsdp``; else nothing."""
        mesh = self.device_mesh
        if mesh is None:
            return
        from fpa.strategies import shard_policy_and_reference

        strategy = self.trainer.strategy if self._trainer is not None else None
        dp = mesh["data_parallel"] if "data_parallel" in (mesh.mesh_dim_names or ()) else mesh
        if self.lora is not None:
            raise NotImplementedError("model.lora: LoRA adapters are not supported with sharding (trainer=fsdp)")
        shard_policy_and_reference(self, self.policy, self.reference, dp,
                                   precision=str(self.trainer.precision) if self._trainer is not None else None,
                                   reshard_after_forward=getattr(strategy, "reshard_after_forward", True))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, completion_mask: torch.Tensor,
                position_ids: torch.Tensor | None = None) -> tuple:
        """(policy, mask, reference, future) token log-probs [B, T-1]; reference/future None without one.

        A tuple of tensors (not a dataclass) so that FSDP's hooks see the outputs.
        """
        if self.lora is not None:  # the reference: the policy with its adapter disabled (unsharded: no fsdp)
            reference = self.policy if self.uses_reference and not self.precomputed_reference else None
            lp = completion_logprobs(self.policy, input_ids, attention_mask, completion_mask,
                                     reference=reference, lam=self.fpa.lam, chunk_size=self.chunk_size,
                                     position_ids=position_ids,
                                     reference_context=lambda: adapter_disabled(self.policy))
            return lp.policy, lp.mask, lp.reference, lp.future
        with _gathered(self.reference):
            lp = completion_logprobs(self.policy, input_ids, attention_mask, completion_mask,
                                     reference=self.reference, lam=self.fpa.lam, chunk_size=self.chunk_size,
                                     position_ids=position_ids)
        return lp.policy, lp.mask, lp.reference, lp.future

    def logprobs(self, input_ids, attention_mask, completion_mask, position_ids=None) -> CompletionLogProbs:
        pol, mask, ref, fut = self(input_ids, attention_mask, completion_mask, position_ids)
        return CompletionLogProbs(policy=pol, mask=mask, reference=ref, future=fut)

    @property
    def runs_reference_forward(self) -> bool:
        """Whether a step runs a reference forward (a loaded reference, or LoRA's adapter-disabled policy)."""
        return self.reference is not None or (self.lora is not None and self.uses_reference
                                              and not self.precomputed_reference)

    def count(self, attention_mask: torch.Tensor, completion_mask: torch.Tensor,
              position_ids: torch.Tensor | None = None, backward: bool = True) -> None:
        """Add one forward's tokens to the ledger counters: policy (+ backward), reference if one runs."""
        mask = attention_mask.bool()
        if position_ids is None:  # padded rows: one sequence per row
            lengths = mask.sum(-1)
        else:  # packed: a sequence starts wherever its positions restart at 0 (ids from 1; padding goes to bin 0)
            rows, width = position_ids.shape
            seq = (position_ids == 0).long().cumsum(-1) + torch.arange(rows, device=mask.device)[:, None] * (width + 1)
            seq = seq.masked_fill(~mask, 0).flatten()  # fixed shapes throughout: no host sync on an accelerator
            lengths = torch.zeros(rows * (width + 1) + 1, dtype=torch.long, device=mask.device)
            lengths = lengths.scatter_add_(0, seq, mask.flatten().long())[1:]
        row = torch.stack([lengths.sum(), completion_mask.bool().sum(), (lengths.long() ** 2).sum()]).long().detach()
        kinds = ["policy_forward"] + (["backward"] if backward else []) + (
            ["reference_forward"] if self.runs_reference_forward else [])
        for kind in kinds:
            if kind in self.ledger_counts:
                self.ledger_counts[kind] += row
            else:
                self.ledger_counts[kind] = row.clone()

    def _global_counts(self, reduce) -> dict[str, list[int]]:
        out = {}
        for kind in ("policy_forward", "reference_forward", "backward"):
            own = self.ledger_counts.get(kind, torch.zeros(3, dtype=torch.long, device=self.device))
            prior = self.ledger_prior.get(kind, [0, 0, 0])
            out[kind] = [a + int(b) for a, b in zip(prior, reduce(own.to(self.device)).tolist())]
        return out

    def on_train_end(self) -> None:
        """Sum the ledger counters over the data-parallel processes (a collective: every rank calls it)."""
        strategy = self.trainer.strategy
        counts = self._global_counts(lambda t: strategy.reduce(t, reduce_op="sum"))
        self.ledger_passes = {k: Pass(*v) for k, v in counts.items()}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # No collective here: the saving rank's own counts × the number of processes stand for the others'.
        world = self.trainer.world_size if self._trainer is not None else 1
        checkpoint["ledger_counts"] = self._global_counts(lambda t: t * world)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.ledger_prior = {k: [int(x) for x in v] for k, v in checkpoint.get("ledger_counts", {}).items()}

    def objective_inputs(self, batch: dict[str, torch.Tensor]) -> ObjectiveInputs:
        counting = self.training and torch.is_grad_enabled()  # a training step (not a no-grad evaluation)
        if "packed_input_ids" in batch:  # padding-free: one row, positions restarting per sequence
            lp = unpack_logprobs(self.logprobs(batch["packed_input_ids"], batch["packed_attention_mask"],
                                               batch["packed_completion_mask"], batch["packed_position_ids"]), batch)
            if counting:
                self.count(batch["packed_attention_mask"], batch["packed_completion_mask"],
                           batch["packed_position_ids"])
        else:
            lp = self.logprobs(batch["input_ids"], batch["attention_mask"], batch["completion_mask"])
            if counting:
                self.count(batch["attention_mask"], batch["completion_mask"])
        if self.precomputed_reference:  # λ = 0 (FPA is refused): the future policy is the current one
            if REFERENCE_KEY not in batch:
                raise ValueError(f"precomputed_reference: the batch has no {REFERENCE_KEY!r} (the examples were not "
                                 "given their reference log-probs: fpa.stages.reference_logprobs)")
            lp = replace(lp, reference=batch[REFERENCE_KEY].to(lp.policy.device), future=lp.policy.detach())
        kl = None
        if self.objective.needs_kl_rows:
            with torch.no_grad():
                k = self.logprobs(batch["kl_input_ids"], batch["kl_attention_mask"], batch["kl_completion_mask"])
            if counting:  # KTO's KL rows: forwards without a backward
                self.count(batch["kl_attention_mask"], batch["kl_completion_mask"], backward=False)
            kl = ObjectiveInputs(policy=k.policy.detach(), mask=k.mask, reference=k.reference, future=k.future)
        # Behaviour log-probs ([B, T-1], the layout of lp.policy) travel with rollouts that stored them; without
        # them the objective reads the batch as sampled by the current policy.
        return ObjectiveInputs(policy=lp.policy, mask=lp.mask, reference=lp.reference, future=lp.future,
                               chosen=batch["chosen"], reward=batch["reward"], group=batch["group"], kl=kl,
                               behaviour=batch.get("behaviour"))

    def logging_step(self) -> bool:
        """Whether this step's values reach the loggers (Lightning's ``log_every_n_steps``); True outside a Trainer.

        Values logged ``on_step`` on other steps are dropped by Lightning, so the diagnostics, their
        ``self.log`` bookkeeping and ``train/loss``'s cross-rank all-reduce are skipped there.
        """
        if self._trainer is None:
            return True
        return bool(self.trainer._logger_connector.should_update_logs)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        self.last_batch_idx = batch_idx
        x = self.objective_inputs(batch)
        out = self.fpa(self.objective, x)
        n = x.policy.shape[0]
        self.log("loss", out.loss.detach(), prog_bar=True, logger=False, batch_size=n)  # the bar's, every step
        if not self.logging_step():
            return out.loss
        self.log("train/loss", out.loss.detach(), on_step=True, on_epoch=False, batch_size=n,
                 sync_dist=self.sync_loss)  # the global batch's loss: the mean over data-parallel ranks
        shared = batch["shared_mask"][:, 1:] if "shared_mask" in batch else None
        diag = batch_diagnostics(x, out, self.objective.data, shared)
        with torch.no_grad():
            diag.update({f"objective/{k}": v for k, v in self.objective.metrics(x).items()})
        self.log_dict({f"train/{k}": v for k, v in diag.items()}, on_step=True, on_epoch=False, prog_bar=False,
                      batch_size=n)
        return out.loss

    def configure_optimizers(self):
        params = [p for p in self.policy.parameters() if p.requires_grad]
        opt = self.optimizer_factory(params)
        sched = self.scheduler_factory(opt)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
