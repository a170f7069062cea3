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


def expected_errors() -> tuple[type[BaseException], ...]:
    """The errors an entry point reports in one line: the project's own and a bad input record."""
    from fpa.data.records import RecordError
    from fpa.guards import FPAError
    from fpa.tasks.sources import SourceUnavailable

    return FPAError, RecordError, SourceUnavailable


def one_line(prog: str, err: BaseException) -> SystemExit:
    """``SystemExit("<prog>: <message>")`` (exit code 1); ``HYDRA_FULL_ERROR=1`` keeps the traceback instead.

    Use as ``except expected_errors() as e: raise one_line("fpa-train", e) from None``.
    """
    import os

    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        raise err
    return SystemExit(f"{prog}: {err}")
