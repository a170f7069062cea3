"""Load a causal LM and its tokenizer the one way every model here is loaded: ``from_pretrained``.

A LoRA adapter directory (``adapter_config.json``, :mod:`fpa.models.lora`) loads as its base with
the adapter merged in: a plain model, so every reader of a model directory takes one unchanged.
"""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "auto": "auto"}


def load_tokenizer(path: str, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(path: str, dtype: str = "float32", trust_remote_code: bool = False,
               frozen: bool = False) -> PreTrainedModel:
    if dtype not in _DTYPES:
        raise ValueError(f"model.dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    from fpa.models.lora import adapter_base, is_adapter_dir, merged_model

    if is_adapter_dir(path):
        base = AutoModelForCausalLM.from_pretrained(adapter_base(path), dtype=_DTYPES[dtype],
                                                    trust_remote_code=trust_remote_code)
        model = merged_model(path, base)
    else:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=_DTYPES[dtype], trust_remote_code=trust_remote_code)
    if frozen:
        model.eval().requires_grad_(False)
    return model
