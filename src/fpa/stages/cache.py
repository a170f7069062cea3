"""Stage outputs cached on disk under ``<cache_dir>/<stage>/<key>``.

The key comes from :func:`fpa.config.keys.stage_key`: the stage's name, its code version and
everything it receives. A stage is built in a temporary sibling and renamed into place when
complete, so an interrupted stage is rebuilt, never half-read. ``stage.json`` records what it was
built from.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable

from fpa.config.keys import identity


def cached_stage(cache_dir: str | Path, stage: str, key: str, inputs: dict[str, Any],
                 build: Callable[[Path], None]) -> tuple[Path, bool]:
    """Return (directory, was_cached); ``build(tmp_dir)`` fills the directory on a miss."""
    final = Path(cache_dir) / stage / key
    if (final / "stage.json").exists():
        return final, True
    tmp = final.with_name(final.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    build(tmp)
    write_marker(tmp, stage, key, inputs)
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    return final, False


def write_marker(directory: Path, stage: str, key: str, inputs: dict[str, Any]) -> None:
    record = {"stage": stage, "key": key, "inputs": identity(inputs)}
    (Path(directory) / "stage.json").write_text(json.dumps(record, indent=2, default=str))
