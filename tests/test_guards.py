"""Fail fast and stay inert: the NaN guard, the out-of-memory hint, and pickles that are refused."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import lightning as L
import pytest
import torch

from fpa.guards import NonFiniteLossError, OutOfMemoryHint, UnsafeFileError
from fpa.module import OfflineRLModule
from fpa.resume import find_last
from fpa.safe_load import check_checkpoint, torch_load
from fpa.config.parts import train_parts
from fpa.stages.train import train_policy
from fpa.testing import build_model, write_trajectories


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("guards")
    return build_model(root / "model"), write_trajectories(root / "traj.jsonl", n_problems=3)


def _cfg(smoke_cfg, *extra):
    return smoke_cfg("callbacks.eval.every_n_steps=0", "callbacks.eval.at_end=false", "data.batch_size=4", "data.max_length=32", "train.max_steps=6", "callbacks.checkpoint.every_n_train_steps=1",
                     *extra)


class InjectNaN(L.Callback):
    def __init__(self, at: int) -> None:
        self.at = at

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.at:
            with torch.no_grad():
                pl_module.policy.get_output_embeddings().weight[3, 0] = float("nan")


def test_nan_loss_stops_naming_step_and_batch_and_keeps_the_last_good_checkpoint(smoke_cfg, inputs, tmp_path):
    model, traj = inputs
    with pytest.raises(NonFiniteLossError) as err:
        train_policy(train_parts(_cfg(smoke_cfg)), str(model), traj, tmp_path, [], callbacks=[InjectNaN(at=3)])
    msg = str(err.value)
    print(msg)
    assert "NaN" in msg and "at step 3" in msg and "batch 0" in msg and "epoch 1" in msg, msg
    assert "problems ['p" in msg and "last.ckpt" in msg, msg
    last = find_last(tmp_path / "checkpoints")
    ckpt = torch.load(last, weights_only=True)
    assert ckpt["global_step"] == 3  # the bad step was never taken nor saved
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values())
    assert not any(k.startswith("reference.") for k in ckpt["state_dict"])  # the frozen reference is not saved
    assert ckpt["hyper_parameters"]["policy_path"] == str(model)


def test_out_of_memory_names_the_knobs(smoke_cfg, inputs, tmp_path, monkeypatch):
    model, traj = inputs

    def oom(self, batch, batch_idx):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(OfflineRLModule, "training_step", oom)
    with pytest.raises(OutOfMemoryHint) as err:
        train_policy(train_parts(_cfg(smoke_cfg)), str(model), traj, tmp_path, [])
    msg = str(err.value)
    for knob in ("data.micro_batch_size", "module.chunk_size", "module.gradient_checkpointing", "trainer=fsdp"):
        assert knob in msg, msg
    assert "\n" not in msg


class Evil:
    """Unpickling this runs ``touch <marker>``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_malicious_checkpoint_is_refused_before_anything_loads(smoke_cfg, inputs, tmp_path, monkeypatch):
    model, traj = inputs
    marker = tmp_path / "pwned"
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    torch.save({"state_dict": {}, "payload": Evil(marker)}, tmp_path / "run" / "checkpoints" / "last.ckpt")
    monkeypatch.setattr("fpa.module.load_model", lambda *a, **k: pytest.fail("a model was loaded"))
    with pytest.raises(UnsafeFileError, match="refusing to load .*last.ckpt"):
        train_policy(train_parts(_cfg(smoke_cfg)), str(model), traj, tmp_path / "run", [])
    assert not marker.exists()


def test_malicious_sharded_checkpoint_metadata_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    ckpt = tmp_path / "last.ckpt"
    ckpt.mkdir()
    (ckpt / ".metadata").write_bytes(pickle.dumps(Evil(marker)))  # read with plain pickle.load by torch DCP
    torch.save({"global_step": 1}, ckpt / "meta.pt")
    with pytest.raises(UnsafeFileError, match="metadata"):
        check_checkpoint(ckpt)
    assert not marker.exists()
    (ckpt / ".metadata").unlink()
    torch.save({"global_step": 1, "x": Evil(marker)}, ckpt / "meta.pt")
    with pytest.raises(UnsafeFileError):
        check_checkpoint(ckpt)
    assert not marker.exists()


def test_malicious_weights_in_a_model_cache_are_refused(inputs, tmp_path):
    from fpa.models.loading import load_model

    model, _ = inputs
    marker = tmp_path / "pwned"
    cache = tmp_path / "model"
    cache.mkdir()
    (cache / "config.json").write_text((Path(model) / "config.json").read_text())
    torch.save({"model.embed_tokens.weight": Evil(marker)}, cache / "pytorch_model.bin")
    with pytest.raises(Exception):
        load_model(str(cache))
    assert not marker.exists()
    with pytest.raises(UnsafeFileError):
        torch_load(cache / "pytorch_model.bin")
    assert not marker.exists()


def test_presets_keep_remote_code_off():
    from fpa.config.compose import compose, options
    from fpa.config.parts import train_parts

    for name in options("model"):
        assert train_parts(compose("train", [f"model={name}"])).model.trust_remote_code is False, name
