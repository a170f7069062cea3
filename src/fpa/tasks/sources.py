"""Real math problem sources: where each lives on the hub, its schema, and how a row becomes a Problem.

Every source loads from its usual hub id with ``datasets.load_dataset`` or from a local file (or
directory) in the same schema, so an offline machine runs on a copy: ``path=/data/gsm8k_train.jsonl``.
Local ``.jsonl`` / ``.json`` (a list of records) / ``.parquet`` files are read record by record so
a bad record is reported with its file, index (and line) and field; a local directory or any other
file type goes through ``datasets`` as the hub does.

The schemas (field names as the hub datasets spell them; a tuple lists alternatives, the first one
present wins, for mirrors that renamed a field):

=============  ======================================  ==================  ===========================================
source         hub id (config) : split used             question            gold answer
=============  ======================================  ==================  ===========================================
gsm8k          openai/gsm8k (main) : train / test       question            ``answer`` after its ``#### `` line
math           DigitalLearningGmbH/MATH-lighteval       problem             last ``\\boxed{}`` of ``solution``
               : train / test (same schema as the
               original hendrycks/competition_math)
math500        HuggingFaceH4/MATH-500 : test            problem             answer (id: unique_id)
aime24         HuggingFaceH4/aime_2024 : train          problem             answer (integer string; id: id)
aime25         math-ai/aime25 : test                    problem | question  answer
amc23          math-ai/amc23 : test                     question | problem  answer (a float such as 27.0 -> "27")
minerva        math-ai/minervamath : test               question | problem  answer, else last ``\\boxed{}`` of solution
olympiadbench  Hothan/OlympiadBench                     question (after     final_answer (a list; ``$`` removed,
               (OE_TO_maths_en_COMP) : train            ``context``)        several answers joined with ", ")
=============  ======================================  ==================  ===========================================

A row whose gold answer cannot be read (a MATH solution without a box) is skipped and counted; a
row that lacks a required field is an error naming the file, record and field.
"""

from __future__ import annotations

import ast
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from fpa.data.records import RecordError, read_records
from fpa.tasks.answers import extract_boxed

log = logging.getLogger(__name__)

_RECORD_FILES = {".jsonl", ".json", ".parquet"}
_GSM8K_FINAL = re.compile(r"####\s*(.+?)\s*$", re.DOTALL)


class SourceUnavailable(RuntimeError):
    """A hub dataset could not be loaded (offline, gated, renamed); the message says how to use a local copy."""


def answer_string(value: Any) -> str:
    """A gold answer as text: floats that are whole numbers lose their ``.0`` (AMC's ``27.0`` -> ``27``)."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def strip_math_delimiters(s: str) -> str:
    s = s.strip()
    for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if len(s) >= len(left) + len(right) and s.startswith(left) and s.endswith(right):
            return s[len(left):len(s) - len(right)].strip()
    return s


def gsm8k_final_answer(text: str) -> str | None:
    """The number after GSM8K's ``#### `` line, thousands separators removed (``#### 1,000`` -> ``1000``)."""
    m = _GSM8K_FINAL.search(text)
    if m is None:
        return None
    return m.group(1).strip().replace(",", "") or None


def _olympiad_answer(value: Any) -> str | None:
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):  # some mirrors store the list as its repr
            try:
                value = ast.literal_eval(text)
            except (ValueError, SyntaxError):
                value = [text]
        else:
            value = [text]
    if not isinstance(value, (list, tuple)) or not value:
        return None
    # "$" only delimits math in OlympiadBench's answers ("$\\frac{1}{4}$", "$1$, $-1$"), never currency.
    parts = [str(v).replace("$", "").strip() for v in value if str(v).strip()]
    return ", ".join(parts) or None


Row = dict[str, Any]


@dataclass(frozen=True)
class Schema:
    """How one source's rows become problems. Field names are tuples of alternatives (first present wins)."""

    hub_id: str
    config: str | None
    splits: dict[str, str]  # our split (train/dev/test) -> the source split holding it
    question: tuple[str, ...]
    answer: tuple[str, ...]  # the field holding (or giving) the gold answer
    read_answer: Callable[[Any], str | None] = answer_string
    solution: tuple[str, ...] = ()
    id: tuple[str, ...] = ()
    metadata: tuple[str, ...] = ()
    context: tuple[str, ...] = ()  # text shown before the question when present (OlympiadBench)
    fallback_answer: tuple[str, ...] = ()  # a solution to take the last \boxed{} from when ``answer`` is absent

    def field_of(self, row: Row, names: tuple[str, ...]) -> str | None:
        return next((n for n in names if n in row), None)


def _boxed(value: Any) -> str | None:
    return extract_boxed(str(value)) if value is not None else None


_TRAIN_TEST = {"train": "train", "dev": "train", "test": "test"}

SCHEMAS: dict[str, Schema] = {
    "gsm8k": Schema("openai/gsm8k", "main", _TRAIN_TEST, question=("question",), answer=("answer",),
                    read_answer=lambda v: gsm8k_final_answer(str(v)), solution=("answer",)),
    "math": Schema("DigitalLearningGmbH/MATH-lighteval", None, _TRAIN_TEST, question=("problem",),
                   answer=("solution",), read_answer=_boxed, solution=("solution",),
                   metadata=("level", "type")),
    "math500": Schema("HuggingFaceH4/MATH-500", None, {"test": "test"}, question=("problem",), answer=("answer",),
                      solution=("solution",), id=("unique_id",), metadata=("subject", "level")),
    "aime24": Schema("HuggingFaceH4/aime_2024", None, {"test": "train"}, question=("problem",), answer=("answer",),
                     solution=("solution",), id=("id",), metadata=("url", "year")),
    "aime25": Schema("math-ai/aime25", None, {"test": "test"}, question=("problem", "question"), answer=("answer",),
                     solution=("solution",), id=("id",)),
    "amc23": Schema("math-ai/amc23", None, {"test": "test"}, question=("question", "problem"), answer=("answer",),
                    id=("id",), metadata=("url",)),
    "minerva": Schema("math-ai/minervamath", None, {"test": "test"}, question=("question", "problem"),
                      answer=("answer",), solution=("solution",), fallback_answer=("solution",), id=("idx", "id"),
                      metadata=("type",)),
    "olympiadbench": Schema("Hothan/OlympiadBench", "OE_TO_maths_en_COMP", {"test": "train"},
                            question=("question",), answer=("final_answer",), read_answer=_olympiad_answer,
                            solution=("solution",), id=("id",), context=("context",),
                            metadata=("unit", "answer_type", "subfield", "is_multiple_answer")),
}


@dataclass
class LoadedRows:
    rows: list[tuple[int, int | None, Any]]  # (record index, line or None, record)
    where: str  # the file, directory or hub id, for messages


def load_rows(path: str, config: str | None, split: str) -> LoadedRows:
    """Rows of one source split: a local record file as a whole, else ``datasets.load_dataset``."""
    local = Path(path).expanduser()
    if local.is_file() and local.suffix in _RECORD_FILES:
        return LoadedRows(list(read_records(local)), str(local))
    import datasets

    if local.exists():
        if local.is_file():
            builder = {".csv": "csv", ".tsv": "csv", ".txt": "text"}.get(local.suffix)
            if builder is None:
                from fpa.guards import InputError

                raise InputError(f"{local}: unsupported file type {local.suffix!r}; "
                                 "use .jsonl, .json, .parquet or .csv")
            ds = datasets.load_dataset(builder, data_files=str(local), split="train")
        else:
            ds = datasets.load_dataset(str(local), config, split=split)
        return LoadedRows([(i, None, r) for i, r in enumerate(ds)], str(local))
    try:
        ds = datasets.load_dataset(path, config, split=split)
    except Exception as e:  # noqa: BLE001 - any failure here means "not reachable as given"
        raise SourceUnavailable(
            f"could not load {path!r} (config {config!r}, split {split!r}) from the hub: {type(e).__name__}: {e}. "
            "Offline, point `path` at a local .jsonl/.json/.parquet file in the same schema.") from e
    return LoadedRows([(i, None, r) for i, r in enumerate(ds)], f"{path}:{config or 'default'}:{split}")


@dataclass
class ParsedRow:
    index: int
    id: str
    question: str
    answer: str
    solution: str
    metadata: dict[str, Any] = field(default_factory=dict)


def parse_rows(schema: Schema, loaded: LoadedRows, skip_invalid: bool = False) -> tuple[list[ParsedRow], int]:
    """(parsed rows, number skipped); rows without a readable gold answer are skipped, and a malformed
    row raises :class:`RecordError` (file, record, line, field), or is skipped with ``skip_invalid``."""
    out, skipped = [], 0
    for index, line, row in loaded.rows:
        try:
            parsed = _parse_row(schema, loaded, index, line, row)
        except RecordError:
            if not skip_invalid:
                raise
            parsed = None
        if parsed is None:
            skipped += 1
        else:
            out.append(parsed)
    if skipped:
        log.info("%s: skipped %d rows (no readable gold answer, or malformed with skip_invalid)", loaded.where,
                 skipped)
    return out, skipped


def _parse_row(schema: Schema, loaded: LoadedRows, index: int, line: int | None, row: Any) -> ParsedRow | None:
    """One row of a problem source, or None when it has no readable gold answer."""
    if isinstance(row, Exception):
        raise row
    if not isinstance(row, dict):
        raise RecordError(loaded.where, index, None, f"expected a record, got {type(row).__name__}", line)
    q_field = schema.field_of(row, schema.question)
    if q_field is None or not isinstance(row[q_field], str) or not row[q_field].strip():
        name = q_field or "|".join(schema.question)
        problem = "missing" if q_field is None or row[q_field] is None else "expected a non-empty string"
        raise RecordError(loaded.where, index, name, problem, line)
    question = row[q_field].strip()
    c_field = schema.field_of(row, schema.context)
    if c_field and isinstance(row[c_field], str) and row[c_field].strip():
        question = f"{row[c_field].strip()}\n\n{question}"
    a_field = schema.field_of(row, schema.answer)
    answer = None
    if a_field is not None and row[a_field] is not None:
        answer = schema.read_answer(row[a_field])
    elif (f_field := schema.field_of(row, schema.fallback_answer)) is not None:
        answer = _boxed(row[f_field])
    else:
        raise RecordError(loaded.where, index, "|".join(schema.answer), "missing", line)
    if answer is None or not str(answer).strip():
        return None  # no readable gold answer: skipped
    s_field = schema.field_of(row, schema.solution)
    solution = row[s_field] if s_field else ""
    if isinstance(solution, (list, tuple)):  # OlympiadBench: a list of solutions
        solution = solution[0] if solution else ""
    id_field = schema.field_of(row, schema.id)
    rid = str(row[id_field]) if id_field and row[id_field] is not None else str(index)
    meta = {k: row[k] for k in schema.metadata if k in row and row[k] is not None}
    return ParsedRow(index, rid, question, str(answer).strip(), str(solution or ""), meta)
