"""Stage outputs cached on disk under ``<cache_dir>/<stage>/<key>``.

The key comes from :func:`fpa.config.keys.stage_key`: the stage's name, its code version and
everything it receives. A stage is built in a temporary sibling ``<key>.partial`` and renamed into
place when complete, so an interrupted stage is rebuilt, never half-read. ``stage.json`` records
what it was built from.

A build holds ``<key>.lock`` (:mod:`fpa.stages.locks`): a second process building the same key
waits for it and then uses the finished entry; a ``.partial`` is removed only by the holder of its
key's lock, so only when the process that made it is gone (its own key's, or any other key's that
the next build in the stage finds).

In a multi-process run (torchrun, SLURM, Lightning's launcher) only rank 0 takes the lock, builds
and renames; the other ranks never compete for the lock: they wait for the finished entry. A
``collective`` build (one that trains under the multi-process Trainer, so every rank must take
part) is run by the other ranks too, into rank 0's ``.partial`` once rank 0 holds the lock (they
write nothing there: rank 0 saves), and they then wait for rank 0 to publish the entry. One caveat:
a follower rank cannot tell its own rank 0's lock from another job's, so do not start a
multi-process run while another job builds the same entry (docs/distributed.md).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any, Callable

from fpa.config.keys import identity
from fpa.guards import FPAError
from fpa.stages import locks

PARTIAL = ".partial"


class CorruptEntryError(FPAError, ValueError):
    """A finished cache entry whose files no longer read (truncated or modified after it was built)."""


def check_entry(final: Path) -> None:
    """Raise :class:`CorruptEntryError` naming the entry if a weights file in it cannot be read (header only)."""
    from safetensors import safe_open

    for weights in sorted(final.glob("*.safetensors")):
        try:
            with safe_open(str(weights), "pt"):
                pass
        except Exception as e:  # SafetensorError: a cut or overwritten header / buffer
            raise CorruptEntryError(f"{weights}: cached file cannot be read ({e}); delete the cache entry {final} "
                                    "and rerun to rebuild it") from None


def cached_stage(cache_dir: str | Path, stage: str, key: str, inputs: dict[str, Any],
                 build: Callable[[Path], None], collective: bool = False) -> tuple[Path, bool]:
    """Return (directory, was_cached); ``build(tmp_dir)`` fills the directory on a miss.

    ``collective``: every rank of a multi-process run calls ``build`` (rank 0 alone publishes).
    """
    from fpa.ranks import is_global_zero

    final = Path(cache_dir) / stage / key
    if (final / "stage.json").exists():
        check_entry(final)
        return final, True
    if not is_global_zero():
        return follow(final, build if collective else None)
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


def follow(final: Path, build: Callable[[Path], None] | None = None, poll: float | None = None
           ) -> tuple[Path, bool]:
    """A rank other than 0: wait for rank 0's entry at ``final``; with ``build``, take part in it first.

    ``build`` is joined once rank 0 holds the key's lock and has made the ``.partial`` (rank 0 then
    runs the same build: under Lightning's launcher this rank was started from inside it).
    """
    lock, tmp, told, joined = locks.lock_for(final), final.with_name(final.name + PARTIAL), False, False
    while not (final / "stage.json").exists():
        if build is not None and not joined and lock.exists() and tmp.is_dir():
            build(tmp)
            joined = True
            continue
        if not told:
            print(f"fpa: waiting for rank 0 to build {final}", flush=True)
            told = True
        time.sleep(locks.POLL_S if poll is None else poll)
    return final, not joined


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
