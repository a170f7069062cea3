"""Shared fixtures: real configs composed with Hydra and shrunk; nothing comes from a hub."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from fpa.config.resolvers import register_resolvers

CONF = Path(__file__).resolve().parents[1] / "conf"
register_resolvers()

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


def compose_config(*overrides: str, name: str = "train"):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name=name, overrides=list(overrides))


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
