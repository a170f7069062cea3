"""Stage outputs cached on disk, keyed by the config that produced them.

A stage's directory is ``<cache_dir>/<stage>/<key>``, key = hash of the stage's config (which
includes the keys of the stages it consumed). It is built in a temporary sibling and renamed
into place when complete, so an interrupted stage is rebuilt, never half-read.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any, Callable


def config_key(config: Any) -> str:
    return hashlib.sha1(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:12]


def cached_stage(cache_dir: str | Path, stage: str, config: dict[str, Any],
                 build: Callable[[Path], None]) -> tuple[Path, bool]:
    """Return (directory, was_cached); ``build(tmp_dir)`` fills the directory on a miss."""
    final = Path(cache_dir) / stage / config_key(config)
    if (final / "stage.json").exists():
        return final, True
    tmp = final.with_name(final.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    build(tmp)
    (tmp / "stage.json").write_text(json.dumps({"stage": stage, "config": config}, indent=2, default=str))
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    return final, False
