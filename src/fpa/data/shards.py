"""A resumable trajectory set: a directory of Parquet shards and a manifest of the finished ones.

Layout (the Hub's shard naming, so ``datasets.load_dataset("parquet", data_dir=root)`` and
``datasets.load_dataset(str(root))`` read it as one ``train`` split)::

    root/manifest.json                      settings, shard count, finished shards, complete flag
    root/train-00000-of-00008.parquet       one shard per block of problems
    root/.train-00003-of-00008.parquet.tmp  a shard being written (hidden: never loaded)

Every shard is written to a hidden temporary file and renamed into place, then recorded in the
manifest, which is itself replaced atomically. A writer killed at any point leaves finished shards
intact; a shard written but not yet recorded is simply produced again (deterministically, so
identically) on resume. The manifest's ``config`` guards against resuming with other settings.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import datasets

from fpa.data.records import SCHEMA_VERSION, TRAJECTORY_FEATURES, check_schema_version, save_trajectories


def migrate(manifest: dict[str, Any], root: Path) -> bool:
    """Bring a manifest to :data:`SCHEMA_VERSION` in place when a step is known; False if nothing changed.

    Sets from before versioning (no ``schema_version``) have version 1's fields: the step records it.
    Any other version is refused by :func:`check_schema_version`.
    """
    if "schema_version" not in manifest:
        manifest["schema_version"] = 1
        return True
    check_schema_version(manifest["schema_version"], root / "manifest.json")
    return False


def _write_json_atomic(path: Path, value: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(value, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)


class ShardDirectory:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.manifest_path = self.root / "manifest.json"
        self._manifest: dict[str, Any] | None = None

    @property
    def manifest(self) -> dict[str, Any]:
        if self._manifest is None:
            if not self.manifest_path.exists():
                raise FileNotFoundError(f"no shard manifest at {self.manifest_path}")
            self._manifest = json.loads(self.manifest_path.read_text())
            if migrate(self._manifest, self.root):
                print(f"fpa: {self.root}: trajectory set from before schema versions, migrated to version "
                      f"{SCHEMA_VERSION} (its fields are that version's)")
                _write_json_atomic(self.manifest_path, self._manifest)
        return self._manifest

    def open(self, config: dict[str, Any], n_shards: int) -> "ShardDirectory":
        """Start a new set, or resume the one already here if it was made with the same ``config``."""
        self.root.mkdir(parents=True, exist_ok=True)
        config = json.loads(json.dumps(config, sort_keys=True, default=str))  # as it reads back from disk
        if self.manifest_path.exists():
            old = self.manifest
            if old["config"] != config or old["n_shards"] != n_shards:
                raise ValueError(f"{self.root} holds a trajectory set made with other settings; "
                                 f"choose another output directory or delete it.\n  there: {old['config']} "
                                 f"({old['n_shards']} shards)\n  now:   {config} ({n_shards} shards)")
            return self
        self._manifest = {"schema_version": SCHEMA_VERSION, "config": config, "n_shards": n_shards, "finished": {},
                          "complete": False}
        _write_json_atomic(self.manifest_path, self._manifest)
        return self

    def shard_name(self, index: int) -> str:
        return f"train-{index:05d}-of-{self.manifest['n_shards']:05d}.parquet"

    def finished(self) -> dict[int, dict[str, Any]]:
        """Shard index -> its manifest entry, for recorded shards whose file is still there."""
        return {int(i): info for i, info in self.manifest["finished"].items()
                if (self.root / info["file"]).exists()}

    def finished_files(self) -> list[Path]:
        return [self.root / info["file"] for _, info in sorted(self.finished().items())]

    @property
    def complete(self) -> bool:
        return self.manifest_path.exists() and self.manifest["complete"] \
            and len(self.finished()) == self.manifest["n_shards"]

    def write(self, index: int, records: list[dict[str, Any]], info: dict[str, Any] | None = None,
              features: datasets.Features | None = TRAJECTORY_FEATURES) -> Path:
        """Write shard ``index`` atomically, then record it in the manifest."""
        if not 0 <= index < self.manifest["n_shards"]:
            raise IndexError(f"shard {index} out of range 0..{self.manifest['n_shards'] - 1}")
        path = save_trajectories(records, self.root / self.shard_name(index), features=features)
        self.manifest["finished"][str(index)] = {"file": path.name, "n_records": len(records), **(info or {})}
        _write_json_atomic(self.manifest_path, self.manifest)
        return path

    def mark_complete(self, **extra: Any) -> None:
        missing = sorted(set(range(self.manifest["n_shards"])) - set(self.finished()))
        if missing:
            raise RuntimeError(f"{self.root}: shards {missing} are not written yet")
        self.manifest.update(extra, complete=True)
        _write_json_atomic(self.manifest_path, self.manifest)
