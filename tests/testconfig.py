"""The shipped configs, composed as the entry points compose them (test files import from here).

A module of its own name rather than conftest: tests/faults/ has a conftest too, and
``from conftest import`` would find whichever was imported last.
"""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir

from fpa.config.resolvers import register_resolvers

CONF = Path(__file__).resolve().parents[1] / "conf"
register_resolvers()


def compose_config(*overrides: str, name: str = "train"):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name=name, overrides=list(overrides))
