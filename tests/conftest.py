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
