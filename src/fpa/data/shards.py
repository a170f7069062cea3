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

Each recorded shard carries its size, SHA-256 and row count: :meth:`ShardDirectory.verify` finds a
shard truncated or modified after it was written (sets from before checksums are checked by the
row count in the Parquet footer), so a resume regenerates it and a reader refuses it in one line.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import datasets
import pyarrow.parquet as pq

from fpa.data.records import SCHEMA_VERSION, TRAJECTORY_FEATURES, check_schema_version, save_trajectories
from fpa.guards import FPAError


class CorruptShardError(FPAError, ValueError):
    """A recorded shard whose file no longer matches its manifest entry (the set is refused as a whole)."""


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def shard_problem(path: Path, info: dict[str, Any]) -> str | None:
    """Why the shard file at ``path`` does not match its manifest entry ``info``; None when it does.

    Entries from before checksums (no ``sha256``) are checked by the row count in the Parquet footer.
    """
    if not path.exists():
        return "missing"
    if "sha256" in info:
        if path.stat().st_size != info.get("bytes", path.stat().st_size) or file_sha256(path) != info["sha256"]:
            return "checksum mismatch (truncated or modified)"
        return None
    try:
        rows = pq.read_metadata(path).num_rows
    except Exception:  # pyarrow raises ArrowInvalid / OSError for a cut or overwritten footer
        return "not a readable Parquet file (truncated or modified)"
    if "n_records" in info and rows != info["n_records"]:
        return f"{rows} rows, the manifest recorded {info['n_records']} (truncated or modified)"
    return None


def migrate(manifest: dict[str, Any], root: Path) -> bool:
    """Bring a manifest to :data:`SCHEMA_VERSION` in place when a step is known; False if nothing changed.

    Sets from before versioning (no ``schema_version``) have version 1's fields: the step records it.
    Version 1 -> 2 has no step: version 2 only adds the sampled token ids, which a version-1 set cannot
    recover, so a version-1 set stays version 1 and is read as it is (training re-tokenises its text).
    Any version not in :data:`fpa.data.records.READABLE_VERSIONS` is refused by :func:`check_schema_version`.
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
            try:
                self._manifest = json.loads(self.manifest_path.read_text())
            except json.JSONDecodeError as e:
                raise CorruptShardError(f"{self.manifest_path}: not valid JSON ({e.msg}, line {e.lineno}); delete "
                                        f"{self.root} and rerun fpa-generate (or fpa-train, for a set in its cache) "
                                        "to regenerate it") from None
            if migrate(self._manifest, self.root):
                print(f"fpa: {self.root}: trajectory set from before schema versions, migrated to version "
                      f"{self._manifest['schema_version']} (its fields are that version's)")
                _write_json_atomic(self.manifest_path, self._manifest)
        return self._manifest

    def open(self, config: dict[str, Any], n_shards: int) -> "ShardDirectory":
        """Start a new set, or resume the one already here if it was made with the same ``config``."""
        self.root.mkdir(parents=True, exist_ok=True)
        config = json.loads(json.dumps(config, sort_keys=True, default=str))  # as it reads back from disk
        if self.manifest_path.exists():
            old = self.manifest
            if old["schema_version"] != SCHEMA_VERSION:  # one set, one record layout: never mix versions
                raise ValueError(f"{self.root} holds a trajectory set of schema version {old['schema_version']}; "
                                 f"this fpa writes version {SCHEMA_VERSION} and cannot resume it: choose another "
                                 "output directory or delete it")
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

    def verify(self) -> dict[int, str]:
        """Recorded shard index -> what is wrong with its file (missing, truncated, modified); {} if all match."""
        problems = {int(i): shard_problem(self.root / info["file"], info)
                    for i, info in self.manifest["finished"].items()}
        return {i: p for i, p in sorted(problems.items()) if p is not None}

    def check(self) -> None:
        """Raise :class:`CorruptShardError` naming every recorded shard whose file does not match the manifest."""
        bad = self.verify()
        if bad:
            files = "; ".join(f"{self.root / self.manifest['finished'][str(i)]['file']}: {p}" for i, p in bad.items())
            raise CorruptShardError(f"{files}; rerun fpa-generate with the same settings (or fpa-train, for a set in "
                                    f"its cache) to regenerate {'it' if len(bad) == 1 else 'them'}")

    def drop(self, index: int) -> None:
        """Forget shard ``index`` (its file too), so a resume writes it again; the set is no longer complete."""
        info = self.manifest["finished"].pop(str(index), None)
        if info is not None:
            (self.root / info["file"]).unlink(missing_ok=True)
        self.manifest["complete"] = False
        _write_json_atomic(self.manifest_path, self.manifest)

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
        self.manifest["finished"][str(index)] = {"file": path.name, "n_records": len(records), **(info or {}),
                                                 "bytes": path.stat().st_size, "sha256": file_sha256(path)}
        _write_json_atomic(self.manifest_path, self.manifest)
        return path

    def mark_complete(self, **extra: Any) -> None:
        missing = sorted(set(range(self.manifest["n_shards"])) - set(self.finished()))
        if missing:
            raise RuntimeError(f"{self.root}: shards {missing} are not written yet")
        self.manifest.update(extra, complete=True)
        _write_json_atomic(self.manifest_path, self.manifest)
