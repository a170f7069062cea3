"""Each kind of file the project writes, corrupted, then the same command again: repaired or one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from faults_helpers import ok, one_line, run_dir, sha, shard_sums


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def copy_run(ref, cwd: Path) -> Path:
    run = cwd / "outputs" / "runs" / ref.run.name
    shutil.copytree(ref.run, run)
    return run


def test_a_truncated_shard_is_regenerated_with_one_line(ref, tmp_path):
    out = tmp_path / "gen"
    shutil.copytree(ref.gen, out)
    manifest = json.loads((out / "manifest.json").read_text())
    bad = out / manifest["finished"]["1"]["file"]
    truncate(bad)
    again = ok(ref.generate(out))
    lines = [line for line in again.stdout.splitlines() if "regenerating" in line]
    assert lines == [f"fpa: {bad}: checksum mismatch (truncated or modified); regenerating shard 1"]
    assert shard_sums(out) == ref.gen_sums


def test_a_garbage_manifest_is_one_line_naming_it(ref, tmp_path):
    out = tmp_path / "gen"
    shutil.copytree(ref.gen, out)
    (out / "manifest.json").write_text('{"finished": {"0": ')
    line = one_line(ref.generate(out), "fpa-generate")
    assert f"{out / 'manifest.json'}: not valid JSON" in line and f"delete {out}" in line
    assert {p.name: sha(p) for p in out.glob("*.parquet")} == {p.name: sha(p) for p in ref.gen.glob("*.parquet")}


def test_a_truncated_last_ckpt_is_one_line_naming_train_resume_never(ref, tmp_path):
    run = copy_run(ref, tmp_path)
    status = json.loads((run / "status.json").read_text())
    (run / "status.json").write_text(json.dumps({**status, "status": "interrupted"}))
    (run / "results.json").unlink()
    truncate(run / "checkpoints" / "last.ckpt")
    line = one_line(ref.train(tmp_path))
    assert "last.ckpt" in line and "train.resume=never" in line and "\n" not in line
    assert sha(run / "policy" / "model.safetensors") == ref.policy_sha


def test_a_truncated_cached_model_is_one_line_naming_the_entry(ref, tmp_path):
    cache = ref.copy_cache(tmp_path / "cache")
    (weights,) = cache.glob("sft/*/model.safetensors")
    truncate(weights)
    line = one_line(ref.train(tmp_path / "cwd", "train.max_steps=2", cache=cache))
    assert str(weights) in line and f"delete the cache entry {weights.parent}" in line
    for f in ref.cache.glob("*/*/model.safetensors"):  # the other entries (the base model) untouched
        if f.parent.parent.name != "sft":
            assert sha(cache / f.relative_to(ref.cache)) == sha(f)


def test_a_garbage_cache_marker_is_not_read_and_the_run_trains(ref, tmp_path):
    cache = ref.copy_cache(tmp_path / "cache")
    (marker,) = cache.glob("sft/*/stage.json")
    marker.write_text("{garbage")
    ok(ref.train(tmp_path / "cwd", "train.max_steps=2", cache=cache))
    run = run_dir(tmp_path / "cwd")
    assert json.loads((run / "status.json").read_text())["status"] == "finished"
    assert (run / "results.json").exists()


def test_garbage_results_of_a_finished_run_is_one_line(ref, tmp_path):
    run = copy_run(ref, tmp_path)
    (run / "results.json").write_text("not json")
    line = one_line(ref.train(tmp_path))
    assert f"{run / 'results.json'}: not valid JSON" in line and "train.resume=never" in line
    assert sha(run / "policy" / "model.safetensors") == ref.policy_sha
    assert json.loads((run / "status.json").read_text())["status"] == "finished"  # still the finished run
