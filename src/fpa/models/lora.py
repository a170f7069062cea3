"""LoRA adapters (through peft): the ``model.lora`` node, wrapping, adapter directories, export.

With ``model.lora`` set, the train stage loads the model once and trains only low-rank adapters
(W + (α/r)·B·A on ``target_modules``); the reference is the same model with the adapter disabled
(:func:`adapter_disabled`), so no second copy is loaded. The policy is saved as an adapter
directory (``adapter_config.json`` + adapter weights + tokenizer); :func:`fpa.models.loading.load_model`
merges such a directory into a plain model, so evaluation and generation read it unchanged.

    python -m fpa.models.export ADAPTER_DIR OUT_DIR   # a merged, plain from_pretrained directory
"""

from __future__ import annotations

import contextlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from fpa import checks

ADAPTER_CONFIG = "adapter_config.json"
DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj", "gate_proj")
_NOT_ADAPTABLE = ("lm_head", "embed_tokens")  # the chunked log-probs read the output layer's weight directly


@dataclass(frozen=True)
class LoraSettings:
    """The ``model.lora`` node: adapter rank, scale (``alpha / r``), dropout and the adapted layers."""

    r: int = 8
    alpha: float = 16
    dropout: float = 0.0
    target_modules: tuple[str, ...] = field(default_factory=lambda: DEFAULT_TARGETS)

    def __post_init__(self) -> None:
        checks.number("r", self.r, 1, integer=True)
        checks.number("alpha", self.alpha, 0, strict=True)
        checks.number("dropout", self.dropout, 0, 1)
        if self.dropout == 1:
            raise ValueError(f"dropout: must be < 1, got {self.dropout!r}")
        targets = self.target_modules
        if isinstance(targets, str) or not isinstance(targets, (list, tuple)) or not targets:
            raise ValueError(f"target_modules: must be a non-empty list of layer names, got {targets!r}")
        bad = [t for t in targets if not isinstance(t, str) or not t.strip()]
        if bad:
            raise ValueError(f"target_modules: every entry must be a layer name, got {bad[0]!r}")
        head = sorted(set(targets) & set(_NOT_ADAPTABLE))
        if head:
            raise ValueError(f"target_modules: {', '.join(head)} cannot be adapted (the output layer and "
                             f"embeddings stay frozen), got {list(targets)}")
        object.__setattr__(self, "target_modules", tuple(targets))

    @property
    def scale(self) -> float:
        return self.alpha / self.r

    def peft_config(self):
        from peft import LoraConfig

        return LoraConfig(r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout,
                          target_modules=list(self.target_modules), bias="none", task_type="CAUSAL_LM")

    def wrap(self, model):
        """``model`` (a transformers causal LM) as a peft model whose only trainable parameters are the adapters.

        Every entry of ``target_modules`` must name a linear layer of ``model`` (peft would silently
        skip a misspelt one as long as another matches).
        """
        from peft import get_peft_model

        linear = _linear_names(model)
        unknown = [t for t in self.target_modules if t not in linear]
        if unknown:
            raise ValueError(f"model.lora.target_modules: {', '.join(unknown)} not in {type(model).__name__} "
                             f"(its linear layers: {', '.join(sorted(linear))})")
        name = getattr(model, "name_or_path", None)
        if name and Path(name).exists():  # the adapter config records where its base is, from anywhere
            model.name_or_path = str(Path(name).resolve())
            model.config._name_or_path = model.name_or_path
        wrapped = get_peft_model(model, self.peft_config())
        return wrapped


def _linear_names(model) -> set[str]:
    import torch

    return {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}


def is_peft_model(model) -> bool:
    if "peft" not in sys.modules:  # nothing made one
        return False
    from peft import PeftModel

    return isinstance(model, PeftModel)


@contextlib.contextmanager
def adapter_disabled(model) -> Iterator[None]:
    """``model`` (a peft model) as its base: adapters off and every module in eval mode (no dropout), restored after."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with model.disable_adapter():
            yield
    finally:
        for m, training in modes:
            m.training = training


def is_adapter_dir(path) -> bool:
    return Path(str(path)).expanduser().is_dir() and (Path(str(path)).expanduser() / ADAPTER_CONFIG).is_file()


def adapter_base(adapter_dir) -> str:
    """The base model (directory or hub id) an adapter directory was trained on."""
    config = json.loads((Path(adapter_dir) / ADAPTER_CONFIG).read_text())
    base = config.get("base_model_name_or_path")
    if not base:
        raise ValueError(f"{adapter_dir}/{ADAPTER_CONFIG}: no base_model_name_or_path")
    return str(base)


def merged_model(adapter_dir, base):
    """``base`` (a loaded transformers model) with the adapter of ``adapter_dir`` merged in: a plain model."""
    from peft import PeftModel

    peft_model = PeftModel.from_pretrained(base, str(adapter_dir))
    return peft_model.merge_and_unload()
