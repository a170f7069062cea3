"""Corrupted shards: a shard truncated after it was written is regenerated on resume, refused on read."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from fpa.data.records import load_trajectories
from fpa.data.shards import CorruptShardError, ShardDirectory
from fpa.stages import locks
from test_locks import dead_pid
from test_generation import SETTINGS, DiesAfter, Killed, task_setup, tiny, whole, write  # noqa: F401 (fixtures)

GOOD = {"problem_id": "p1", "prompt": "1+2\n", "completion": "1+2=3\n#### 3", "reward": 1.0}


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def snapshot(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(root.glob("*.parquet"))}


def regenerated_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if "regenerating shard" in line]


def test_truncated_shard_of_a_complete_set_is_regenerated(tmp_path, tiny, task_setup, whole, capsys):
    run = tmp_path / "run"
    write(run, tiny, task_setup)
    before, expected = snapshot(run), load_trajectories(run)[0]
    checksums = {i: e["sha256"] for i, e in ShardDirectory(run).manifest["finished"].items()}
    bad = run / ShardDirectory(run).shard_name(1)
    truncate(bad)
    capsys.readouterr()

    loads = []
    report = write(run, tiny, task_setup, loads=loads)  # returns normally
    lines = regenerated_lines(capsys.readouterr().out)
    assert lines == [f"fpa: {bad}: checksum mismatch (truncated or modified); regenerating shard 1"]
    assert loads == [1] and report["n_trajectories"] == len(expected)
    assert snapshot(run) == before  # byte for byte what was there before the truncation
    shards = ShardDirectory(run)
    assert shards.complete and not shards.verify()
    assert {i: e["sha256"] for i, e in shards.manifest["finished"].items()} == checksums
    assert load_trajectories(run)[0] == expected


def test_truncated_shard_of_an_incomplete_set_is_regenerated(tmp_path, tiny, task_setup, whole, capsys):
    run = tmp_path / "run"
    with pytest.raises(Killed):
        write(run, tiny, task_setup, wrap=lambda g: DiesAfter(g, 2))
    bad = run / ShardDirectory(run).shard_name(0)
    truncate(bad)
    capsys.readouterr()

    write(run, tiny, task_setup)
    assert regenerated_lines(capsys.readouterr().out) == [
        f"fpa: {bad}: checksum mismatch (truncated or modified); regenerating shard 0"]
    assert snapshot(run) == snapshot(whole)
    assert load_trajectories(run)[0] == load_trajectories(whole)[0]


def test_reading_a_truncated_shard_is_one_clear_error(tmp_path):
    shards = ShardDirectory(tmp_path).open({"x": 1}, n_shards=2)
    shards.write(0, [GOOD])
    bad = shards.write(1, [GOOD, GOOD])
    truncate(bad)
    with pytest.raises(CorruptShardError) as err:
        load_trajectories(tmp_path, skip_invalid=True)  # a whole-shard problem: never skipped as a bad record
    msg = str(err.value)
    assert msg.startswith(f"{bad}: checksum mismatch (truncated or modified); rerun fpa-generate") and "\n" not in msg
    assert "fpa-train" in msg


def test_manifests_from_before_checksums_are_checked_by_row_count(tmp_path):
    shards = ShardDirectory(tmp_path).open({"x": 1}, n_shards=2)
    shards.write(0, [GOOD])
    bad = shards.write(1, [GOOD, GOOD])
    manifest = json.loads(shards.manifest_path.read_text())
    for entry in manifest["finished"].values():
        del entry["sha256"], entry["bytes"]
    shards.manifest_path.write_text(json.dumps(manifest))
    assert len(load_trajectories(tmp_path)[0]) == 3  # intact: accepted without checksums

    manifest["finished"]["1"]["n_records"] = 5
    shards.manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(CorruptShardError, match="2 rows, the manifest recorded 5"):
        load_trajectories(tmp_path)
    manifest["finished"]["1"]["n_records"] = 2
    shards.manifest_path.write_text(json.dumps(manifest))
    truncate(bad)
    with pytest.raises(CorruptShardError, match=f"{bad.name}: not a readable Parquet file"):
        load_trajectories(tmp_path)


def test_fpa_train_regenerates_a_truncated_shard_of_its_cached_set(tmp_path, tiny, capsys):
    from testconfig import compose_config
    from fpa.cli.generate import model_to_sample
    from fpa.config.parts import train_parts
    from fpa.stages import sample

    parts = train_parts(compose_config("experiment=smoke", f"paths.cache_dir={tmp_path / 'cache'}",
                                       "generate.n_problems=4", "generate.k=2", "generate.max_new_tokens=6",
                                       "generate.batch_size=4", "generate.shard_size=2"))
    _, key = model_to_sample(parts, tiny)
    inputs = sample.trajectory_inputs(key, parts.task, parts.model.prompt, parts.generate, parts.sft_skip,
                                      parts.data_seed)
    key = sample.stage_key("trajectories", sample.VERSION, **inputs)
    lock = locks.lock_for(parts.cache_dir / "trajectories" / key)
    lock.parent.mkdir(parents=True)
    lock.write_text(json.dumps({"host": locks.HOST, "pid": dead_pid(), "started": 0, "heartbeat": 0, "token": "x"}))
    path, _ = sample.generate_trajectories(tiny, inputs, parts.cache_dir)  # a stale lock: taken over
    assert (path / "stage.json").exists() and not lock.exists()
    before, expected = snapshot(path), load_trajectories(path)[0]
    bad = path / ShardDirectory(path).shard_name(0)
    truncate(bad)
    capsys.readouterr()

    holder = locks.try_acquire(lock)  # another live writer of the set: waited for, not resumed into
    threading.Timer(1.5, holder.release).start()
    again, _ = sample.generate_trajectories(tiny, inputs, parts.cache_dir)  # the marker exists: still verified
    assert again == path
    out = capsys.readouterr().out
    assert f"fpa: waiting for {lock}: held by pid {os.getpid()}" in out
    assert regenerated_lines(out) == [f"fpa: {bad}: checksum mismatch (truncated or modified); regenerating shard 0"]
    assert snapshot(path) == before and load_trajectories(path)[0] == expected
