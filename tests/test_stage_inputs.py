"""Every stage's input can be given: a reference model and a trajectory set made elsewhere skip the
stages that would make them; trajectory sets carry a schema version, migrated or refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fpa.cli.train import run
from fpa.data.records import SCHEMA_VERSION, SchemaVersionError, load_trajectories
from fpa.data.shards import ShardDirectory
from fpa.testing import build_model, write_trajectories


def test_given_reference_and_trajectories_skip_prepare_sft_and_generate(smoke_cfg, tmp_path):
    model = build_model(tmp_path / "ref", hidden_size=64, num_heads=2, max_positions=64)
    traj = write_trajectories(tmp_path / "elsewhere" / "traj.jsonl", n_problems=4)
    cache = tmp_path / "cache"
    out = run(smoke_cfg(f"model.reference={model}", f"data.trajectories={traj}", "callbacks.eval.every_n_steps=0",
                        cache=cache), tmp_path / "run")
    assert out["paths"]["reference"] == str(model) and out["paths"]["trajectories"] == str(traj)
    assert not {"prepare", "sft", "generate"} & set(out["stage_seconds"])
    assert not (cache / "sft").exists() and not (cache / "model").exists() and not (cache / "trajectories").exists()
    assert (tmp_path / "run" / "policy" / "config.json").exists()


def _shard_set(root, records):
    shards = ShardDirectory(root).open({"test": True}, 1)
    shards.write(0, records)
    shards.mark_complete()
    return root


def _records(n=2):
    return [{"problem_id": f"p{i}", "sample_index": 0, "prompt": "1+1=", "completion": "2", "reward": 1.0,
             "schema_version": SCHEMA_VERSION} for i in range(n)]


def test_shard_sets_record_their_schema_version(tmp_path):
    root = _shard_set(tmp_path / "set", _records())
    assert json.loads((root / "manifest.json").read_text())["schema_version"] == SCHEMA_VERSION
    records, _ = load_trajectories(root)
    assert [r["schema_version"] for r in records] == [SCHEMA_VERSION] * 2


def test_a_set_of_another_version_is_refused_in_one_line(tmp_path):
    root = _shard_set(tmp_path / "set", _records())
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["schema_version"] = SCHEMA_VERSION + 1
    (root / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(SchemaVersionError) as err:
        load_trajectories(root)
    assert str(err.value).count("\n") == 0 and f"version {SCHEMA_VERSION + 1}" in str(err.value)
    assert "manifest.json" in str(err.value)
    loose = tmp_path / "loose.jsonl"
    loose.write_text(json.dumps({**_records(1)[0], "schema_version": 7}) + "\n")
    with pytest.raises(SchemaVersionError, match="record 0: trajectory schema version 7"):
        load_trajectories(loose, skip_invalid=True)  # a whole-set problem: never skipped as one bad record


def test_a_set_from_before_versions_is_migrated(tmp_path, capsys):
    root = _shard_set(tmp_path / "set", _records())
    manifest = json.loads((root / "manifest.json").read_text())
    del manifest["schema_version"]
    (root / "manifest.json").write_text(json.dumps(manifest))
    records, _ = load_trajectories(root)
    assert len(records) == 2 and "migrated to version 1" in capsys.readouterr().out
    assert json.loads((root / "manifest.json").read_text())["schema_version"] == 1  # read as version 1


def test_data_skip_invalid_applies_to_problem_files(tmp_path):
    """A malformed row of a local problem file: one RecordError line, or skipped with data.skip_invalid."""
    from testconfig import compose_config
    from fpa.config.parts import train_parts
    from fpa.data.records import RecordError

    good = Path(__file__).parent / "fixtures" / "sources" / "gsm8k_test.jsonl"
    rows = good.read_text().splitlines()
    bad = tmp_path / "gsm8k.jsonl"
    bad.write_text("\n".join([rows[0], json.dumps({"answer": "#### 3"}), "{not json", *rows[1:]]) + "\n")
    strict = train_parts(compose_config("task=gsm8k", f"task.path={bad}", "data.skip_invalid=false")).task
    with pytest.raises(RecordError, match="record 1 .*line 2.*question"):
        strict.problems("test", None)
    lenient = train_parts(compose_config("task=gsm8k", f"task.path={bad}")).task  # data.skip_invalid: true
    assert [p.answer for p in lenient.problems("test", None)] == ["18", "3", "70000"]
    assert sum(lenient.n_skipped.values()) == 2
