"""fpa-eval on a tiny reference: results JSON, markdown table, stored samples, checkpoints, determinism."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from testconfig import compose_config
from fpa.cli.eval import main, run
from fpa.models.loading import load_model
from fpa.models.tiny import build_tiny_model

SMALL = ["benchmark=arith", "task.n_terms=2", "task.max_operand=9", "benchmark.n_problems=3", "benchmark.k=2",
         "benchmark.pass_at=[1,2]", "benchmark.maj_at=[2]", "benchmark.max_new_tokens=6",
         "benchmark.benchmarks.arith_long.max_new_tokens=6", "benchmark.batch_size=8", "progress=false"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("tiny-ref")
    build_tiny_model(out, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32, max_positions=64)
    return str(out)


def samples_of(out: Path) -> dict[str, list[str]]:
    return {p.stem: [json.loads(line)["completion"] for line in p.read_text().splitlines()]
            for p in sorted((out / "samples").glob("*.jsonl"))}


def test_fpa_eval_writes_json_table_and_samples_deterministically(tiny, tmp_path, monkeypatch, capsys):
    report = run(compose_config(f"model_path={tiny}", *SMALL, name="eval"), tmp_path / "a")
    out = tmp_path / "a"
    saved = json.loads((out / "results.json").read_text())
    assert saved["suite"] == "arith" and set(saved["benchmarks"]) == {"arith", "arith_long"}
    arith = saved["benchmarks"]["arith"]
    assert set(arith["metrics"]) == {"pass@1", "pass@2", "maj@2", "process"} and arith["n_problems"] == 3
    assert arith["n_samples"] == 6 and arith["settings"]["seed"] == 1234
    assert arith["samples_file"] == "samples/arith.jsonl"
    assert saved["sampling"]["seed"] == 1234 and saved["model"]["kind"] == "directory"
    assert set(saved["average"]) == {"pass@1", "pass@2", "maj@2"}
    assert report["average"] == saved["average"]
    table = (out / "results.md").read_text()
    assert "| benchmark | problems | pass@1 | pass@2 | maj@2 | process | unverified |" in table
    assert "| arith | 3 |" in table and "| arith_long | 3 |" in table and "**average**" in table
    rows = [json.loads(line) for line in (out / "samples" / "arith.jsonl").read_text().splitlines()]
    assert len(rows) == 6
    assert {"problem_id", "prompt", "answer", "completion", "extracted", "correct", "finish_reason"} <= set(rows[0])

    # The console entry point (Hydra main, command-line overrides) with the same seed: the same completions.
    monkeypatch.setattr(sys, "argv", ["fpa-eval", f"model_path={tiny}", *SMALL, f"out_dir={tmp_path / 'b'}",
                                      f"hydra.run.dir={tmp_path / 'hydra'}", "hydra/job_logging=none",
                                      "hydra/hydra_logging=none"])
    main()
    assert "| arith | 3 |" in capsys.readouterr().out
    assert samples_of(tmp_path / "b") == samples_of(out)

    # Another seed: other completions (recorded as such).
    run(compose_config(f"model_path={tiny}", *SMALL, "benchmark.seed=99", name="eval"), tmp_path / "c")
    assert samples_of(tmp_path / "c") != samples_of(out)
    assert json.loads((tmp_path / "c" / "results.json").read_text())["sampling"]["seed"] == 99


def test_fpa_eval_reads_a_lightning_checkpoint(tiny, tmp_path):
    model = load_model(tiny)
    state = {f"policy.{k}": v for k, v in model.state_dict().items()}
    state.update({f"reference.{k}": v for k, v in model.state_dict().items()})
    ckpt = tmp_path / "last.ckpt"
    torch.save({"state_dict": state, "hyper_parameters": {}, "global_step": 3}, ckpt)

    with pytest.raises(SystemExit, match="base_model"):
        run(compose_config(f"model_path={ckpt}", *SMALL, name="eval"), tmp_path / "x")
    run(compose_config(f"model_path={ckpt}", f"base_model={tiny}", *SMALL, name="eval"), tmp_path / "ckpt")
    saved = json.loads((tmp_path / "ckpt" / "results.json").read_text())
    assert saved["model"]["kind"] == "checkpoint" and saved["model"]["base_model"] == tiny
    assert (tmp_path / "ckpt" / "model" / "config.json").exists()
    run(compose_config(f"model_path={tiny}", *SMALL, name="eval"), tmp_path / "dir")
    assert samples_of(tmp_path / "ckpt") == samples_of(tmp_path / "dir")  # same weights, same seed


def test_fpa_eval_requires_a_model(tmp_path):
    from fpa.guards import ConfigError

    with pytest.raises(ConfigError, match="model_path"):
        run(compose_config(*SMALL, name="eval"), tmp_path)
