"""Trajectory records on disk: written and read through `datasets` (Parquet), validated on read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import datasets

# field -> accepted Python types; every trajectory record carries these.
TRAJECTORY_FIELDS: dict[str, tuple[type, ...]] = {
    "problem_id": (str,),
    "prompt": (str,),
    "completion": (str,),
    "reward": (float, int),
}


class RecordError(ValueError):
    """A bad record: the message names the file, the record index and the field."""

    def __init__(self, path: str | Path, index: int, field: str, problem: str) -> None:
        super().__init__(f"{path}: record {index}: field '{field}': {problem}")
        self.path, self.index, self.field = str(path), index, field


def check_trajectory(record: dict[str, Any], path: str | Path, index: int) -> None:
    for field, types in TRAJECTORY_FIELDS.items():
        if field not in record or record[field] is None:
            raise RecordError(path, index, field, "missing")
        if not isinstance(record[field], types) or isinstance(record[field], bool):
            raise RecordError(path, index, field,
                              f"expected {'/'.join(t.__name__ for t in types)}, got {type(record[field]).__name__}")
    if not record["completion"].strip():
        raise RecordError(path, index, "completion", "empty completion")


def save_trajectories(records: list[dict[str, Any]], path: str | Path) -> Path:
    """Write atomically: a killed writer leaves the previous file (or none), never half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    datasets.Dataset.from_list(records).to_parquet(str(tmp))
    tmp.replace(path)
    return path


def load_trajectories(path: str | Path, skip_invalid: bool = False) -> tuple[list[dict[str, Any]], int]:
    """Records of a Parquet or JSONL trajectory file, validated. Returns (records, n_skipped)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"trajectory file not found: {path}")
    kind = "parquet" if path.suffix == ".parquet" else "json"
    rows = datasets.load_dataset(kind, data_files=str(path), split="train").to_list()
    good, skipped = [], 0
    for i, row in enumerate(rows):
        try:
            check_trajectory(row, path, i)
        except RecordError:
            if not skip_invalid:
                raise
            skipped += 1
            continue
        good.append(row)
    return good, skipped
