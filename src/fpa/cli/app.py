"""The one way an entry point becomes a Hydra app: resolvers registered, configs from the package."""

from __future__ import annotations

from typing import Any, Callable

import hydra

from fpa.config.conf_dir import conf_dir
from fpa.config.resolvers import register_resolvers


def hydra_app(config_name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``@hydra_app("train")``: like ``@hydra.main`` on the shipped ``conf/``, with the resolvers registered."""
    register_resolvers()
    return hydra.main(config_path=conf_dir(), config_name=config_name, version_base="1.3")
