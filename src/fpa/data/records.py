"""Problem and trajectory records on disk: read with their line numbers, validated, written atomically.

A trajectory set is a Parquet or JSONL file, or a directory of Parquet shards written by
:mod:`fpa.data.shards` (``datasets.load_dataset("parquet", data_dir=...)`` loads it as well).
Every bad record (a missing or mistyped field, an empty completion, a NaN or ±inf reward, token ids
that are not lists of non-negative ints) is
reported as a :class:`RecordError` naming the file, the record index (and the line, for JSONL) and
the field; ``skip_invalid=True`` drops bad records instead and counts them.
Reading never modifies a file.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterator

import datasets
import pyarrow.parquet as pq

# The trajectory record and manifest layout. Bump it when fields are added or change meaning (behaviour /
# reference log-probs), and teach fpa.data.shards.migrate the step from the version before.
# Version 1: the fields of TRAJECTORY_FEATURES but the ids; sets written before versioning (no version
# recorded) have exactly these and are migrated by recording the number 1.
# Version 2 adds `prompt_ids` (the prompt's ids exactly as fed to the generator, no padding) and
# `completion_ids` (the sampled ids, ending with the EOS id only when finish_reason == "stop"); training
# scores these ids verbatim instead of re-tokenising the text. A version-1 set is still read as it is (no
# step rewrites it: its ids cannot be recovered), and trains through the text path; None ids mean the same.
# A shard's manifest entry may carry `bytes` and `sha256` (optional: entries without them are checked by
# row count), so adding them needed no bump: older readers ignore them, and older sets are still read.
# For the same reason version 2 records may carry `behaviour_logprobs` (rollouts during training,
# fpa.generation.rollouts): one float per completion id, the sampling policy's log-prob of that id at temperature 1.
# Only rollout sets write the column (ROLLOUT_FEATURES); None or absent means not recorded.
SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)  # what this fpa reads; it writes SCHEMA_VERSION

# Token-id fields of version 2: both or neither; None (or absent) means "re-tokenise the text".
ID_FIELDS = ("prompt_ids", "completion_ids")

# field -> accepted Python types; every trajectory record carries these.
TRAJECTORY_FIELDS: dict[str, tuple[type, ...]] = {
    "problem_id": (str,),
    "prompt": (str,),
    "completion": (str,),
    "reward": (float, int),
}

# field -> accepted Python types; every problem record (fpa.tasks.base.Problem as a dict) carries these.
PROBLEM_FIELDS: dict[str, tuple[type, ...]] = {
    "id": (str,),
    "question": (str,),
    "answer": (str,),
}

# The Parquet schema of generated trajectories. Fixed, so that every shard has the same column
# types even when a shard happens to hold only None in a column (e.g. `process` for tasks that
# cannot judge it, `extracted_answer` when no sample has an answer).
TRAJECTORY_FEATURES = datasets.Features({
    "problem_id": datasets.Value("string"),
    "sample_index": datasets.Value("int64"),
    "prompt": datasets.Value("string"),
    "completion": datasets.Value("string"),
    "reward": datasets.Value("float64"),
    "outcome": datasets.Value("bool"),
    "process": datasets.Value("bool"),
    "extracted_answer": datasets.Value("string"),
    "answer": datasets.Value("string"),
    "finish_reason": datasets.Value("string"),
    "n_tokens": datasets.Value("int64"),
    "shard": datasets.Value("int64"),
    "prompt_ids": datasets.Sequence(datasets.Value("int64")),
    "completion_ids": datasets.Sequence(datasets.Value("int64")),
    "schema_version": datasets.Value("int64"),
    "generator": {
        "model": datasets.Value("string"),
        "backend": datasets.Value("string"),
        "temperature": datasets.Value("float64"),
        "top_p": datasets.Value("float64"),
        "seed": datasets.Value("int64"),
        "shard_seed": datasets.Value("int64"),
        "max_new_tokens": datasets.Value("int64"),
    },
})
ROLLOUT_FEATURES = datasets.Features({**TRAJECTORY_FEATURES,
                                      "behaviour_logprobs": datasets.Sequence(datasets.Value("float64"))})


class RecordError(ValueError):
    """A bad record: the message names the file, the record index (and line) and the field."""

    def __init__(self, path: str | Path, index: int, field: str | None, problem: str,
                 line: int | None = None) -> None:
        where = f"record {index}" + (f" (line {line})" if line is not None else "")
        what = f"field '{field}': " if field else ""
        super().__init__(f"{path}: {where}: {what}{problem}")
        self.path, self.index, self.field, self.line = str(path), index, field, line


def _check_fields(record: Any, fields: dict[str, tuple[type, ...]], path, index: int, line: int | None) -> None:
    if not isinstance(record, dict):
        raise RecordError(path, index, None, f"expected a JSON object, got {type(record).__name__}", line)
    for field, types in fields.items():
        if field not in record or record[field] is None:
            raise RecordError(path, index, field, "missing", line)
        if not isinstance(record[field], types) or isinstance(record[field], bool):
            raise RecordError(path, index, field, f"expected {'/'.join(t.__name__ for t in types)}, "
                              f"got {type(record[field]).__name__}", line)


class SchemaVersionError(ValueError):
    """A trajectory set written by another version of the record layout (refused as a whole)."""


def check_schema_version(version: Any, where: str | Path) -> None:
    if version is not None and version not in READABLE_VERSIONS:
        readable = " and ".join(str(v) for v in READABLE_VERSIONS)
        raise SchemaVersionError(f"{where}: trajectory schema version {version}, this fpa reads versions "
                                 f"{readable}; regenerate the set with this version's fpa-generate")


def _check_ids(record: dict[str, Any], path, index: int, line: int | None) -> None:
    present = [f for f in ID_FIELDS if record.get(f) is not None]
    if not present:
        if record.get("behaviour_logprobs") is not None:
            raise RecordError(path, index, "behaviour_logprobs", "given without completion_ids (the log-probs "
                              "belong to the sampled ids)", line)
        return
    for field in ID_FIELDS:
        ids = record.get(field)
        if ids is None:
            raise RecordError(path, index, field, f"missing while {present[0]!r} is given (both or neither)", line)
        if not isinstance(ids, list):
            raise RecordError(path, index, field, f"expected a list of token ids, got {type(ids).__name__}", line)
        for k, t in enumerate(ids):
            if not isinstance(t, int) or isinstance(t, bool) or t < 0:
                raise RecordError(path, index, field, f"token {k} is {t!r}, expected a non-negative int", line)
    if not record["completion_ids"]:
        raise RecordError(path, index, "completion_ids", "empty (a sample has at least one token)", line)
    behaviour = record.get("behaviour_logprobs")
    if behaviour is not None:
        if not isinstance(behaviour, list) or len(behaviour) != len(record["completion_ids"]):
            raise RecordError(path, index, "behaviour_logprobs", "expected one log-prob per completion id "
                              f"({len(record['completion_ids'])}), got {_describe(behaviour)}", line)
        for k, v in enumerate(behaviour):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v > 0:
                raise RecordError(path, index, "behaviour_logprobs", f"value {k} is {v!r}, expected a finite "
                                  "log-prob <= 0", line)


def _describe(value: Any) -> str:
    return f"{len(value)} values" if isinstance(value, list) else type(value).__name__


def check_trajectory(record: dict[str, Any], path: str | Path, index: int, line: int | None = None) -> None:
    _check_fields(record, TRAJECTORY_FIELDS, path, index, line)
    check_schema_version(record.get("schema_version"), f"{path}: record {index}")
    reward = record["reward"]
    if isinstance(reward, float) and not math.isfinite(reward):  # an int is always finite
        raise RecordError(path, index, "reward", f"must be a finite number, got {reward!r}", line)
    if not record["completion"].strip():
        raise RecordError(path, index, "completion", "empty completion", line)
    _check_ids(record, path, index, line)


def check_problem(record: dict[str, Any], path: str | Path, index: int, line: int | None = None) -> None:
    _check_fields(record, PROBLEM_FIELDS, path, index, line)
    if not record["question"].strip():
        raise RecordError(path, index, "question", "empty question", line)


def read_jsonl(path: str | Path) -> Iterator[tuple[int, int, Any]]:
    """(record index, 1-based line number, parsed value) per non-blank line; a bad line raises RecordError."""
    index = 0
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as e:
                yield index, line_no, RecordError(path, index, None, f"invalid JSON ({e.msg} at column {e.colno})",
                                                  line_no)
            else:
                yield index, line_no, value
            index += 1


def read_records(path: str | Path) -> Iterator[tuple[int, int | None, Any]]:
    """(record index, line or None, record) of one Parquet, JSONL or JSON-array file.

    A JSONL line that does not parse comes through as a RecordError value, so the caller decides
    whether to raise or skip it.
    """
    path = Path(path)
    if path.suffix == ".parquet":
        # pyarrow directly: datasets.Dataset.from_parquet would copy every file into its cache.
        for i, row in enumerate(pq.read_table(path).to_pylist()):
            yield i, None, row
    elif path.suffix == ".json":
        try:
            rows = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise RecordError(path, 0, None, f"invalid JSON ({e.msg})", e.lineno) from None
        if not isinstance(rows, list):
            raise RecordError(path, 0, None, "a .json file must hold a list of records")
        for i, row in enumerate(rows):
            yield i, None, row
    else:  # .jsonl and anything else: one JSON object per line
        yield from read_jsonl(path)


def _validated(files: list[Path], check, skip_invalid: bool) -> tuple[list[dict[str, Any]], int]:
    good, skipped = [], 0
    for path in files:
        for i, line, row in read_records(path):
            try:
                if isinstance(row, RecordError):
                    raise row
                check(row, path, i, line)
            except RecordError:
                if not skip_invalid:
                    raise
                skipped += 1
                continue
            good.append(row)
    return good, skipped


def trajectory_files(path: str | Path) -> list[Path]:
    """The files of a trajectory set: the file itself, or a shard directory's finished shards in order.

    A shard directory's recorded shards are verified against the manifest first (size and SHA-256):
    a bad one raises :class:`fpa.data.shards.CorruptShardError`.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"trajectory file not found: {path}")
    if path.is_file():
        return [path]
    from fpa.data.shards import ShardDirectory  # records <- shards would be a cycle at import time

    shards = ShardDirectory(path)
    if shards.manifest_path.exists():
        shards.check()  # a truncated or modified shard: one line naming it, not pyarrow's traceback
        return shards.finished_files()
    files = sorted(p for p in path.iterdir() if p.suffix in (".parquet", ".jsonl") and not p.name.startswith("."))
    if not files:
        raise FileNotFoundError(f"no trajectory shards (*.parquet, *.jsonl) in {path}")
    return files


def load_trajectories(path: str | Path, skip_invalid: bool = False) -> tuple[list[dict[str, Any]], int]:
    """Records of a trajectory file or shard directory, validated. Returns (records, n_skipped)."""
    return _validated(trajectory_files(path), check_trajectory, skip_invalid)


def load_problems(path: str | Path, skip_invalid: bool = False) -> tuple[list[dict[str, Any]], int]:
    """Problem records (id, question, answer, ...) of a Parquet/JSONL/JSON file. Returns (records, n_skipped)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"problem file not found: {path}")
    return _validated([path], check_problem, skip_invalid)


def save_trajectories(records: list[dict[str, Any]], path: str | Path,
                      features: datasets.Features | None = None) -> Path:
    """Write atomically: a killed writer leaves the previous file (or none), never half a file.

    The temporary file is hidden (leading dot), so a directory listing or ``load_dataset`` on the
    directory never picks it up.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    if features is not None:
        records = [{k: r.get(k) for k in features} for r in records]
    # Dataset.from_list gives the datasets schema (and its metadata); pyarrow writes it without a progress bar.
    pq.write_table(datasets.Dataset.from_list(records, features=features).data.table, tmp)
    tmp.replace(path)
    return path
