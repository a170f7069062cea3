"""Non-finite rewards are bad records: named by file, record (and line) and field; skip_invalid counts them."""

from __future__ import annotations

import json
import math

import pytest

from fpa.data.records import RecordError, load_trajectories, save_trajectories

GOOD = {"problem_id": "p1", "prompt": "1+2\n", "completion": "1+2=3\n#### 3", "reward": 1.0}


@pytest.mark.parametrize("reward", [math.nan, math.inf, -math.inf])
def test_non_finite_reward_in_jsonl_is_a_record_error(tmp_path, reward):
    path = tmp_path / "t.jsonl"
    # json.dumps writes NaN / Infinity / -Infinity, and json.loads reads them back as floats.
    lines = [json.dumps(GOOD), "", json.dumps({**GOOD, "reward": reward}), json.dumps(GOOD)]
    path.write_text("\n".join(lines) + "\n")
    before = path.read_bytes()
    with pytest.raises(RecordError) as err:
        load_trajectories(path)
    e = err.value
    assert (e.path, e.index, e.line, e.field) == (str(path), 1, 3, "reward")
    msg = str(e)
    assert msg.startswith(f"{path}: record 1 (line 3): field 'reward': ") and "\n" not in msg
    assert "finite" in msg and repr(reward) in msg, msg
    records, skipped = load_trajectories(path, skip_invalid=True)
    assert (len(records), skipped) == (2, 1)
    assert all(math.isfinite(r["reward"]) for r in records)
    assert path.read_bytes() == before


@pytest.mark.parametrize("reward", [math.nan, math.inf, -math.inf])
def test_non_finite_reward_in_parquet_is_a_record_error(tmp_path, reward):
    path = save_trajectories([GOOD, GOOD, {**GOOD, "reward": reward}], tmp_path / "t.parquet")
    with pytest.raises(RecordError) as err:
        load_trajectories(path)
    e = err.value
    assert (e.index, e.line, e.field) == (2, None, "reward")
    assert str(e).startswith(f"{path}: record 2: field 'reward': ") and "finite" in str(e)
    records, skipped = load_trajectories(path, skip_invalid=True)
    assert (len(records), skipped) == (2, 1)


def test_finite_rewards_still_load(tmp_path):
    path = save_trajectories([GOOD, {**GOOD, "reward": 0}, {**GOOD, "reward": -2.5}, {**GOOD, "reward": 1e300}],
                             tmp_path / "t.parquet")
    assert load_trajectories(path)[1] == 0
