"""A reduced end-to-end run through every stage, and the cache that lets a second run reuse them."""

import json
from pathlib import Path

import datasets

from fpa.cli.train import run


def test_smoke_pipeline_runs_every_stage_and_reuses_cache(smoke_cfg, smoke_cache, tmp_path, capsys):
    first = run(smoke_cfg("fpa.lam=1.0", cache=smoke_cache), tmp_path / "fpa")
    out = capsys.readouterr().out
    assert "| reference |" in out and "FPA-DPO (λ=1)" in out
    saved = json.loads((tmp_path / "fpa" / "results.json").read_text())
    assert saved["policy"]["pass@1"] == first["policy"]["pass@1"]
    for key in ("reference", "policy"):
        assert 0.0 <= saved[key]["pass@1"] <= 1.0 and saved[key]["n_problems"] == 8
    assert (tmp_path / "fpa" / "policy" / "config.json").exists()
    assert (tmp_path / "fpa" / "eval" / "samples" / "arith.jsonl").exists()
    # The compute ledger: every computing stage, counts the run made, totals summing the stages.
    ledger = saved["ledger"]
    assert set(ledger["stages"]) == {"sft", "generate", "train", "eval_reference", "eval_policy"}
    train = ledger["stages"]["train"]
    assert train["tokens"]["policy_forward"] == train["tokens"]["backward"] == train["tokens"]["reference_forward"] > 0
    assert train["flops"] > 0 and not train["cached"]
    gen = ledger["stages"]["generate"]
    assert gen["tokens"]["generated"] == json.loads((Path(saved["paths"]["trajectories"]) / "stats.json")
                                                    .read_text())["generated_tokens"]
    assert gen["tokens"]["policy_forward"] > gen["tokens"]["generated"] > 0  # prompts' prefill included
    assert ledger["stages"]["eval_policy"]["tokens"]["generated"] > 0
    assert ledger["total"]["flops"] == sum(s["flops"] for s in ledger["stages"].values())
    # The trajectories are a datasets-loadable set with every field the design lists.
    traj = datasets.load_dataset("parquet", data_dir=saved["paths"]["trajectories"], split="train")
    assert {"problem_id", "prompt", "completion", "extracted_answer", "reward", "generator"} <= set(traj.column_names)
    assert traj[0]["generator"]["temperature"] == 1.0
    # Training logged the diagnostics to CSV.
    metrics = next((tmp_path / "fpa").glob("csv/*/metrics.csv")).read_text().splitlines()[0].split(",")
    for col in ("train/loss", "train/logps/chosen", "train/coef/current/chosen", "train/coef/future/rejected",
                "train/rewards/accuracy", "eval/policy/pass@1"):
        assert col in metrics, col

    second = run(smoke_cfg("fpa.lam=0", cache=smoke_cache), tmp_path / "dpo")
    assert second["paths"]["reference"] == first["paths"]["reference"]
    assert second["paths"]["trajectories"] == first["paths"]["trajectories"]
    assert second["reference"] == first["reference"]  # cached evaluation of the same reference
    assert second["stage_seconds"]["sft"] < 2.0 and second["stage_seconds"]["generate"] < 2.0
    # Reused stages keep their original cost in the ledger (seconds: the cache entry's record), flagged cached.
    for name in ("sft", "generate", "eval_reference"):
        stage, before = second["ledger"]["stages"][name], first["ledger"]["stages"][name]
        assert stage["cached"] and stage["tokens"] == before["tokens"] and stage["flops"] == before["flops"], name
        assert stage["seconds"] > 0.0, name
    assert not any(second["ledger"]["stages"][n]["cached"] for n in ("train", "eval_policy"))
    # DPO at λ=0 precomputes the reference: one reference pass of its own, none in the training steps.
    pre, train = second["ledger"]["stages"]["reference_logprobs"], second["ledger"]["stages"]["train"]
    assert pre["tokens"]["reference_forward"] > 0 and pre["tokens"]["backward"] == 0 and pre["flops"] > 0
    assert train["tokens"]["reference_forward"] == 0 and train["tokens"]["backward"] > 0
