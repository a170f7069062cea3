"""Stage outputs cached on disk under ``<cache_dir>/<stage>/<key>``.

The key comes from :func:`fpa.config.keys.stage_key`: the stage's name, its code version and
everything it receives. A stage is built in a temporary sibling ``<key>.partial`` and renamed into
place when complete, so an interrupted stage is rebuilt, never half-read. ``stage.json`` records
what it was built from.

A build holds ``<key>.lock`` (:mod:`fpa.stages.locks`): a second process building the same key
waits for it and then uses the finished entry; a ``.partial`` is removed only by the holder of its
key's lock, so only when the process that made it is gone (its own key's, or any other key's that
the next build in the stage finds).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable

from fpa.config.keys import identity
from fpa.stages import locks

PARTIAL = ".partial"


def cached_stage(cache_dir: str | Path, stage: str, key: str, inputs: dict[str, Any],
                 build: Callable[[Path], None]) -> tuple[Path, bool]:
    """Return (directory, was_cached); ``build(tmp_dir)`` fills the directory on a miss."""
    final = Path(cache_dir) / stage / key
    if (final / "stage.json").exists():
        return final, True
    with locks.held(locks.lock_for(final)):
        if (final / "stage.json").exists():  # built by the process we waited for
            return final, True
        clean_orphans(final.parent, keep=key)
        tmp = final.with_name(final.name + PARTIAL)
        shutil.rmtree(tmp, ignore_errors=True)  # we hold the lock: a .partial here was left by an owner now gone
        tmp.mkdir(parents=True)
        build(tmp)
        write_marker(tmp, stage, key, inputs)
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
    return final, False


def clean_orphans(stage_dir: Path, keep: str) -> None:
    """Remove the ``.partial`` of every other key whose lock no live process holds."""
    for partial in sorted(stage_dir.glob(f"*{PARTIAL}")):
        key = partial.name[: -len(PARTIAL)]
        if key == keep or not partial.is_dir():
            continue
        lock = locks.try_acquire(stage_dir / f"{key}.lock", heartbeat=False)
        if lock is None:  # being built right now
            continue
        with lock:
            if partial.exists():
                shutil.rmtree(partial, ignore_errors=True)
                print(f"fpa: removed {partial}: a build left it and its process is gone", flush=True)


def write_marker(directory: Path, stage: str, key: str, inputs: dict[str, Any]) -> None:
    record = {"stage": stage, "key": key, "inputs": identity(inputs)}
    (Path(directory) / "stage.json").write_text(json.dumps(record, indent=2, default=str))
