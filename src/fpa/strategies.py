"""Sharded data parallel training: Lightning's ``ModelParallelStrategy`` with FSDP2 ``fully_shard``.

``trainer=fsdp`` uses :class:`FSDP2Strategy`: every rank holds 1/R of each parameter, gradient and
optimizer state; parameters are all-gathered per decoder layer just before that layer runs and freed
after. It runs on GPUs (NCCL) and, for tests, on CPU with gloo (Lightning's older ``FSDPStrategy``
refuses CPU).

How :class:`fpa.module.OfflineRLModule` is sharded (:func:`shard_policy_and_reference`):

- each decoder layer of the policy and of the reference is its own FSDP unit;
- the reference's remaining parameters (embeddings, final norm, output layer) form one more unit.
  The reference has no gradients and no optimizer state; its units are gathered for its forward
  (the output layer explicitly, see ``OfflineRLModule.forward``) and freed right after;
- the LightningModule itself is the root unit and holds the policy's remaining parameters. All
  parameter use, including the chunked log-probs that read the output layer's weight outside any
  decoder layer, happens inside ``OfflineRLModule.forward``, so the root's hooks have gathered them.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch
from lightning.pytorch.strategies import ModelParallelStrategy
from torch import nn


class FSDP2Strategy(ModelParallelStrategy):
    """``ModelParallelStrategy`` for pure sharded data parallelism (FSDP2), any number of nodes.

    ``data_parallel_size="auto"`` means every process (``devices × num_nodes``) is one data-parallel
    rank, with no tensor parallelism (Lightning's own default for "auto" is tensor parallelism
    within a node). ``reshard_after_forward=False`` keeps each layer's gathered parameters from the
    forward to the backward (faster, more memory, like ZeRO-2).
    """

    def __init__(self, data_parallel_size: int | str = "auto", tensor_parallel_size: int | str = 1,
                 save_distributed_checkpoint: bool = True, reshard_after_forward: bool = True,
                 process_group_backend: str | None = None, **kwargs: Any) -> None:
        super().__init__(data_parallel_size=data_parallel_size, tensor_parallel_size=tensor_parallel_size,
                         save_distributed_checkpoint=save_distributed_checkpoint,
                         process_group_backend=process_group_backend, **kwargs)
        self.reshard_after_forward = reshard_after_forward

    def setup_environment(self) -> None:
        world = self.num_nodes * self.num_processes
        if self._tensor_parallel_size == "auto":
            self._tensor_parallel_size = 1
        if self._data_parallel_size == "auto":
            self._data_parallel_size = world // int(self._tensor_parallel_size)
        super().setup_environment()


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The repeated blocks of a transformers causal LM (the classes it names in ``_no_split_modules``)."""
    names = set(getattr(model, "_no_split_modules", None) or [])
    layers = [m for m in model.modules() if type(m).__name__ in names]
    if not layers:
        layers = list(getattr(model.base_model, "layers", []) or getattr(model.base_model, "h", []))
    if not layers:
        raise ValueError(f"{type(model).__name__}: cannot find its decoder layers to shard")
    return layers


def mixed_precision_policy(precision: str | None):
    """bf16 parameters in compute with fp32 gradient reduction for ``bf16-mixed``; None otherwise."""
    if precision is None or not str(precision).startswith("bf16-mixed"):
        return None
    from torch.distributed.fsdp import MixedPrecisionPolicy

    return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)


def shard_policy_and_reference(root: nn.Module, policy: nn.Module, reference: nn.Module | None, mesh,
                               precision: str | None = None, reshard_after_forward: bool = True) -> None:
    """Apply ``fully_shard`` as described in the module docstring (``root`` contains both models)."""
    from torch.distributed.fsdp import FSDPModule, fully_shard

    if isinstance(root, FSDPModule):
        return  # configure_model may run more than once
    mp = mixed_precision_policy(precision)
    kw = {"mesh": mesh, **({"mp_policy": mp} if mp is not None else {})}
    for model in (policy, reference):
        if model is None:
            continue
        for layer in decoder_layers(model):
            fully_shard(layer, reshard_after_forward=reshard_after_forward, **kw)
    if reference is not None:
        fully_shard(reference, reshard_after_forward=True, **kw)
    fully_shard(root, **kw)


def is_sharded(module: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(module, FSDPModule)


def full_policy_state(root: nn.Module, policy: nn.Module, cpu_offload: bool) -> dict[str, torch.Tensor]:
    """The policy's full (gathered) state dict from a sharded ``root``: a collective, every rank calls it.

    ``cpu_offload=True``: on CPU, rank 0 only (the other ranks get an empty dict); else on every rank, on
    its device. Tied weights (an output layer sharing the embedding) come back under both names; one is kept.
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    full = get_model_state_dict(root, options=StateDictOptions(full_state_dict=True, cpu_offload=cpu_offload))
    own = {n for n, _ in policy.named_parameters()} | {n for n, _ in policy.named_buffers()}
    return {k[len("policy."):]: v for k, v in full.items() if k.startswith("policy.") and k[7:] in own}


@contextlib.contextmanager
def generation_policy(root: nn.Module) -> Iterator[nn.Module]:
    """The policy of ``root`` (an ``OfflineRLModule``) as a plain model that can ``generate`` on this rank.

    On one device, or under DDP, it is ``root.policy`` itself (put in eval mode for the duration).
    Under FSDP the policy's parameters are DTensor shards, gathered only inside a forward of the
    root; ``generate`` calls the policy directly, one forward per token, a different number on each
    rank. So every rank gathers the full weights once (a collective: every rank must enter this
    together) into a plain, unsharded copy that generates with no collectives; the copy is freed on
    exit. Memory: one full copy of the policy per rank while it generates.
    """
    policy = root.policy
    was_training = policy.training
    if not is_sharded(root):
        policy.eval()
        try:
            yield policy
        finally:
            policy.train(was_training)
        return
    state = full_policy_state(root, policy, cpu_offload=False)
    with torch.device("meta"):
        plain = type(policy)(policy.config)
    plain.load_state_dict(state, strict=False, assign=True)
    plain.tie_weights()
    # Non-persistent buffers (rotary frequencies) are not in a state dict: take the local ones.
    for name, buf in policy.named_buffers():
        owner, _, leaf = name.rpartition(".")
        target = plain.get_submodule(owner) if owner else plain
        if leaf in target._buffers and target._buffers[leaf] is not None and target._buffers[leaf].is_meta:
            target._buffers[leaf] = buf.detach().clone()
    missing = [n for n, p in [*plain.named_parameters(), *plain.named_buffers()] if p.is_meta]
    if missing:
        raise RuntimeError(f"generation copy of the policy: no full value for {missing[:5]}")
    plain.generation_config = policy.generation_config
    plain.eval()
    try:
        yield plain
    finally:
        del plain, state
