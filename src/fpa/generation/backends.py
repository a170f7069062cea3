"""Sampling backends by name. Each loads from a model path and samples like :class:`HFGenerator`.

A backend class has ``load(model_path, tokenizer, *, dtype, batch_size, max_new_tokens, progress,
**options)`` and ``sample(prompts, n, temperature, top_p, seed, desc) -> list[Sample]``, and sets
``tokens_per_second`` after each ``sample``. Adding one is a class plus a line in ``BACKENDS``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fpa.generation.hf import HFGenerator
from fpa.generation.vllm_backend import VLLMGenerator
from fpa.models.loading import load_model


@dataclass
class HFBackend(HFGenerator):
    """transformers ``generate``, batched with a KV cache; CPU or GPU."""

    @classmethod
    def load(cls, model_path: str, tokenizer, *, dtype: str = "float32", batch_size: int = 64,
             max_new_tokens: int = 64, progress: bool = True, device: str = "auto",
             trust_remote_code: bool = False) -> "HFBackend":
        model = load_model(model_path, dtype, trust_remote_code=trust_remote_code, frozen=True)
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        return cls(model.to(device), tokenizer, batch_size=batch_size, max_new_tokens=max_new_tokens,
                   progress=progress)


BACKENDS: dict[str, type] = {"hf": HFBackend, "vllm": VLLMGenerator}


def load_backend(name: str, model_path: str, tokenizer, **kwargs):
    if name not in BACKENDS:
        raise ValueError(f"unknown generation backend {name!r}; expected one of {sorted(BACKENDS)}")
    return BACKENDS[name].load(model_path, tokenizer, **kwargs)
