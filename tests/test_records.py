"""Bad trajectory and problem files: one clear error naming file, record and field; skip_invalid counts."""

from __future__ import annotations

import json

import datasets
import pytest

from fpa.data.records import (RecordError, TRAJECTORY_FEATURES, load_problems, load_trajectories,
                              save_trajectories)
from fpa.data.shards import ShardDirectory

GOOD = {"problem_id": "p1", "prompt": "1+2\n", "completion": "1+2=3\n#### 3", "reward": 1.0}


def jsonl(path, *lines: str):
    path.write_text("\n".join(lines) + "\n")
    return path


def row(**changes) -> str:
    rec = {**GOOD, **changes}
    return json.dumps({k: v for k, v in rec.items() if v is not ...})


@pytest.mark.parametrize("bad,index,line,field,message", [
    ('{"problem_id": "p2", "prompt": ', 1, 3, None, "invalid JSON"),
    (row(reward=...), 1, 3, "reward", "missing"),
    (row(reward="1.0"), 1, 3, "reward", "expected float/int, got str"),
    (row(reward=True), 1, 3, "reward", "got bool"),
    (row(problem_id=7), 1, 3, "problem_id", "expected str, got int"),
    (row(completion="  \n"), 1, 3, "completion", "empty completion"),
    ('["not", "an", "object"]', 1, 3, None, "expected a JSON object"),
])
def test_bad_jsonl_record_is_named(tmp_path, bad, index, line, field, message):
    path = jsonl(tmp_path / "t.jsonl", row(), "", bad, row())  # the blank line 2 is not a record
    before = path.read_bytes()
    with pytest.raises(RecordError) as err:
        load_trajectories(path)
    e = err.value
    assert (e.path, e.index, e.line, e.field) == (str(path), index, line, field)
    assert str(path) in str(e) and f"record {index} (line {line})" in str(e) and message in str(e)
    if field:
        assert f"field '{field}'" in str(e)
    records, skipped = load_trajectories(path, skip_invalid=True)
    assert (len(records), skipped) == (2, 1)
    assert path.read_bytes() == before  # reading never rewrites the file


def test_bad_parquet_record_is_named(tmp_path):
    path = save_trajectories([GOOD, {**GOOD, "completion": ""}, GOOD], tmp_path / "t.parquet")
    with pytest.raises(RecordError, match=r"t.parquet: record 1: field 'completion': empty completion"):
        load_trajectories(path)
    assert load_trajectories(path, skip_invalid=True)[1] == 1
    missing = save_trajectories([{k: v for k, v in GOOD.items() if k != "prompt"}], tmp_path / "m.parquet")
    with pytest.raises(RecordError, match=r"m.parquet: record 0: field 'prompt': missing"):
        load_trajectories(missing)


def test_shard_directory_names_the_shard(tmp_path):
    shards = ShardDirectory(tmp_path).open({"x": 1}, n_shards=2)
    shards.write(0, [GOOD, GOOD])
    shards.write(1, [GOOD, {**GOOD, "completion": " "}])
    with pytest.raises(RecordError, match=r"train-00001-of-00002.parquet: record 1: field 'completion'"):
        load_trajectories(tmp_path)
    records, skipped = load_trajectories(tmp_path, skip_invalid=True)
    assert (len(records), skipped) == (3, 1)
    assert set(records[0]) == set(TRAJECTORY_FEATURES)  # every shard has the full fixed schema


def test_shard_directory_reads_only_finished_shards(tmp_path):
    shards = ShardDirectory(tmp_path).open({"x": 1}, n_shards=3)
    shards.write(0, [GOOD])
    # a shard renamed into place but not yet in the manifest, and a half-written one
    save_trajectories([GOOD, GOOD], tmp_path / shards.shard_name(1), features=TRAJECTORY_FEATURES)
    (tmp_path / f".{shards.shard_name(2)}.tmp").write_bytes(b"garbage")
    assert len(load_trajectories(tmp_path)[0]) == 1
    assert not shards.complete
    with pytest.raises(RuntimeError, match=r"shards \[1, 2\]"):
        shards.mark_complete()
    with pytest.raises(ValueError, match="other settings"):
        ShardDirectory(tmp_path).open({"x": 2}, n_shards=3)


def test_columns_keep_their_types_across_shards(tmp_path):
    """A shard where `process`/`extracted_answer` are all None still loads with the others."""
    shards = ShardDirectory(tmp_path).open({}, n_shards=2)
    shards.write(0, [{**GOOD, "process": None, "extracted_answer": None}])
    shards.write(1, [{**GOOD, "process": True, "extracted_answer": "3"}])
    ds = datasets.load_dataset("parquet", data_dir=str(tmp_path), split="train", cache_dir=str(tmp_path / ".hf"))
    assert ds["process"] == [None, True] and ds["extracted_answer"] == [None, "3"]


def test_plain_directory_of_files(tmp_path):
    jsonl(tmp_path / "a.jsonl", row())
    save_trajectories([GOOD, GOOD], tmp_path / "b.parquet")
    assert len(load_trajectories(tmp_path)[0]) == 3
    with pytest.raises(FileNotFoundError):
        load_trajectories(tmp_path / "nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no trajectory shards"):
        load_trajectories(empty)


def test_bad_problem_file(tmp_path):
    good = {"id": "q1", "question": "1+2", "answer": "3", "source": "arith"}
    path = jsonl(tmp_path / "p.jsonl", json.dumps(good), json.dumps({**good, "answer": 3}), "{oops")
    with pytest.raises(RecordError, match=r"p.jsonl: record 1 \(line 2\): field 'answer': expected str, got int"):
        load_problems(path)
    records, skipped = load_problems(path, skip_invalid=True)
    assert records == [good] and skipped == 2
    array = tmp_path / "p.json"
    array.write_text(json.dumps([good, {"id": "q2", "answer": "1"}]))
    with pytest.raises(RecordError, match=r"p.json: record 1: field 'question': missing"):
        load_problems(array)
    array.write_text('[{"id": "q1",')
    with pytest.raises(RecordError, match=r"p.json: record 0 \(line 1\): invalid JSON"):
        load_problems(array)
