"""Where the Hydra configs live: inside the package (``fpa/conf``), so a plain ``pip install`` finds them.

The repository's top-level ``conf/`` is a symlink to this directory: it is what users read and
edit. A user's own config directory is added with Hydra's ``--config-dir`` (``-cd``): its files
are searched first and may name every group and file shipped here (``defaults: [train, _self_]``),
as ``sweeps/`` does.
"""

from __future__ import annotations

from pathlib import Path

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


def conf_dir() -> str:
    return str(CONF_DIR)
