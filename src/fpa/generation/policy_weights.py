"""The live policy's weights as ``(name, tensor)`` pairs in Hugging Face naming, for a sampling engine.

:func:`hf_named_weights` is what :meth:`fpa.generation.vllm_backend.VLLMGenerator.update_weights`
streams into vLLM after each policy update:

- a plain ``transformers`` model: its ``state_dict()`` entries, detached views of the live
  parameters (nothing is copied here; tied weights appear under both names, as in the checkpoint);
- a LoRA policy (a peft ``PeftModel``, ``model.lora``): the adapters are merged into the base
  weights for the duration (W + (α/r)·B·A), the names are the base model's (peft's
  ``base_model.model.`` prefix and ``.base_layer`` infix removed, ``lora_*`` tensors left out), and
  the adapters are unmerged on leaving, also when the consumer raised;
- a sharded policy (``trainer=fsdp``: FSDP modules or DTensor parameters): refused, since no
  single process holds the full weights to stream.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn

from fpa.models.lora import is_peft_model

FSDP_REFUSAL = ("generate.backend=vllm rollouts need the full policy on one device; "
                "not supported under trainer=fsdp")
_PEFT_PREFIX = "base_model.model."

NamedWeights = Iterator[tuple[str, torch.Tensor]]


def _is_sharded(policy: nn.Module) -> bool:
    """Whether any part of ``policy`` is FSDP-wrapped (FSDP1 or FSDP2) or holds DTensor parameters."""
    if not torch.distributed.is_available():
        return False
    from torch.distributed.fsdp import FullyShardedDataParallel

    kinds: tuple[type, ...] = (FullyShardedDataParallel,)
    try:  # FSDP2's fully_shard marks modules with FSDPModule (torch >= 2.6 exports it here)
        from torch.distributed.fsdp import FSDPModule

        kinds += (FSDPModule,)
    except ImportError:
        pass
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:
        from torch.distributed._tensor import DTensor
    return (any(isinstance(m, kinds) for m in policy.modules())
            or any(isinstance(p, DTensor) for p in policy.parameters()))


def hf_name(peft_name: str) -> str:
    """A peft policy's state-dict name as the base model names it."""
    return peft_name.removeprefix(_PEFT_PREFIX).replace(".base_layer.", ".")


def _is_adapter(name: str) -> bool:
    return any(part.startswith("lora_") for part in name.split("."))


@contextlib.contextmanager
def hf_named_weights(policy: nn.Module) -> Iterator[NamedWeights]:
    """``with hf_named_weights(policy) as weights:`` an iterator of ``(hf_name, tensor)`` (see the module doc).

    Consume the iterator inside the ``with`` block: for a LoRA policy the merged values exist only there.
    """
    if _is_sharded(policy):
        raise NotImplementedError(FSDP_REFUSAL)
    if not is_peft_model(policy):
        yield iter(policy.state_dict().items())
        return
    with torch.no_grad():
        policy.merge_adapter()
    try:
        yield ((hf_name(n), t) for n, t in policy.state_dict().items() if not _is_adapter(n))
    finally:
        with torch.no_grad():
            policy.unmerge_adapter()
