"""fpa-eval never unpickles code: a crafted .ckpt is refused in one line, a real checkpoint still converts."""

from __future__ import annotations

import os
import pickle

import pytest
import torch
from safetensors.torch import load_file

from testconfig import compose_config
from fpa.cli.eval import checkpoint_to_model_dir, run
from fpa.resume import find_last
from fpa.safe_load import check_checkpoint
from fpa.testing import build_model, write_trajectories


class Evil:
    def __init__(self, marker) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)



def _crafted(path, marker, how: str):
    payload = {"state_dict": {}, "hyper_parameters": {"policy_path": "x"}, "x": Evil(marker)}
    if how == "torch.save":
        torch.save(payload, path)
    elif how == "legacy":
        torch.save(payload, path, _use_new_zipfile_serialization=False)
    else:  # a bare pickle, as any script would write it
        path.write_bytes(pickle.dumps(payload))
    return path


@pytest.mark.parametrize("how", ["torch.save", "legacy", "pickle"])
def test_crafted_checkpoint_is_refused_and_runs_nothing(tmp_path, how):
    marker = tmp_path / "pwned"
    ckpt = _crafted(tmp_path / "last.ckpt", marker, how)
    with pytest.raises(SystemExit) as err:
        checkpoint_to_model_dir(ckpt, tmp_path / "model", base_model=None)
    msg = str(err.value)
    assert msg.startswith(f"fpa-eval: refusing to load {ckpt}: ") and "\n" not in msg, msg
    assert not marker.exists()
    assert not (tmp_path / "model").exists()
    # The entry point's run() refuses it the same way, before any model is loaded.
    with pytest.raises(SystemExit, match="refusing to load"):
        run(compose_config(f"model_path={ckpt}", "benchmark=arith", "benchmark.n_problems=1", "progress=false",
                           name="eval"), tmp_path / "out")
    assert not marker.exists()
    # The training-side check (mmap) gives the same one-line refusal for every file format.
    with pytest.raises(Exception, match="refusing to load") as err:
        check_checkpoint(ckpt)
    assert "\n" not in str(err.value) and not marker.exists()


def test_a_real_lightning_checkpoint_still_converts(smoke_cfg, tmp_path):
    from fpa.config.parts import train_parts
    from fpa.stages.train import train_policy

    model = build_model(tmp_path / "base")
    traj = write_trajectories(tmp_path / "traj.jsonl", n_problems=3)
    cfg = smoke_cfg("callbacks.eval.every_n_steps=0", "callbacks.eval.at_end=false", "data.batch_size=4", "data.max_length=32", "train.max_steps=2",
                    "callbacks.checkpoint.every_n_train_steps=1")
    policy = train_policy(train_parts(cfg), str(model), traj, tmp_path / "run", [])
    ckpt = find_last(tmp_path / "run" / "checkpoints")
    assert ckpt is not None and ckpt.is_file()
    out, base = checkpoint_to_model_dir(ckpt, tmp_path / "converted", base_model=None)
    assert base == str(model)  # read from the checkpoint's hyper-parameters
    converted, trained = load_file(out / "model.safetensors"), load_file(policy / "model.safetensors")
    assert set(converted) == set(trained)
    assert all(torch.equal(converted[k], trained[k]) for k in trained)  # the checkpoint's policy, exactly
    assert (out / "tokenizer_config.json").exists() or any(out.glob("*token*"))
