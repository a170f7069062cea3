"""Every shipped objective config trains one step of the smoke experiment, with FPA off and on."""

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from fpa.guards import ConfigError
from fpa.config.parts import train_parts
from fpa.stages.train import train_policy
from fpa.testing import build_model, write_trajectories

OBJECTIVES = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "conf" / "objective").glob("*.yaml"))


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("objective-steps")
    return build_model(root / "model"), write_trajectories(root / "traj.jsonl", n_problems=6)


@pytest.mark.parametrize("lam", [0.0, 1.0])
@pytest.mark.parametrize("name", OBJECTIVES)
def test_one_smoke_step(name, lam, assets, smoke_cfg, tmp_path):
    model, trajectories = assets
    cfg = smoke_cfg(f"objective={name}", f"fpa.lam={lam}", "train.max_steps=1", "data.batch_size=4", "callbacks.eval.every_n_steps=0", "callbacks.eval.at_end=false")
    try:
        parts = train_parts(cfg)
    except ConfigError as err:
        # FPA is refused only where it cannot change anything: coefficients independent of the policy.
        assert lam > 0 and name in ("sft", "rft") and "does nothing" in str(err)
        return
    out = train_policy(parts, str(model), trajectories, tmp_path / "run", loggers=False)
    before = AutoModelForCausalLM.from_pretrained(model)
    after = AutoModelForCausalLM.from_pretrained(out)
    moved = [not torch.equal(a, b) for a, b in zip(before.parameters(), after.parameters())]
    assert any(moved), f"{name} (λ={lam}): one step changed no parameter"
