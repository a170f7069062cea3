"""Kill-and-resume: a run stopped mid-way and resumed from its last checkpoint reproduces the
uninterrupted run exactly (data order, optimizer, scheduler, RNG: the model has dropout)."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from safetensors.torch import load_file

from fpa.resume import ShardedBatchSampler, find_last
from fpa.config.parts import train_parts
from fpa.stages.train import train_policy
from fpa.testing import KillSwitch, Killed, build_model, write_trajectories


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models on a shared 2-core machine: one intra-op thread is several times faster."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class Recorder(KillSwitch):
    """Per optimizer step: the loss, the learning rate and the examples the step saw."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step - 1
        self.steps[step] = {"loss": outputs["loss"].detach().clone(),
                            "lr": trainer.optimizers[0].param_groups[0]["lr"],
                            "rows": batch["input_ids"].clone(), "epoch": trainer.current_epoch}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    # 4 problems × 4 pairs = 16 pairs; batches of 5 → 3 steps per epoch (5, 5, 5; the 16th pair of
    # each epoch's order is dropped: fpa.resume serves full batches only)
    return build_model(root / "model", dropout=0.2), write_trajectories(root / "traj.jsonl", n_problems=4)


def _run(smoke_cfg, inputs, run_dir, recorder, **over):
    model, traj = inputs
    extra = [f"++train.{k}={v}" for k, v in over.items()]
    cfg = smoke_cfg("callbacks.eval.every_n_steps=0", "callbacks.eval.at_end=false", "data.batch_size=5", "data.max_length=32", "train.max_steps=9", "scheduler.warmup_steps=2",
                    "scheduler.min_lr_ratio=0.1", "callbacks.checkpoint.every_n_train_steps=2", "train.log_every_n_steps=1", *extra)
    return train_policy(train_parts(cfg), str(model), traj, run_dir, [CSVLogger(str(run_dir), name="csv")], callbacks=[recorder])


def test_kill_and_resume_reproduces_the_uninterrupted_run(smoke_cfg, inputs, tmp_path, recwarn):
    full = Recorder()
    _run(smoke_cfg, inputs, tmp_path / "full", full)
    assert sorted(full.steps) == list(range(9)) and full.steps[8]["epoch"] == 2

    run = tmp_path / "killed"
    first = Recorder(kill_at=5)  # last checkpoint: step 4, in the middle of epoch 1
    with pytest.raises(Killed):
        _run(smoke_cfg, inputs, run, first)
    assert torch.load(find_last(run / "checkpoints"), weights_only=True)["global_step"] == 4
    second = Recorder(kill_at=7)  # resumes at step 4; last checkpoint: step 6, the end of epoch 1
    with pytest.raises(Killed):
        _run(smoke_cfg, inputs, run, second)
    third = Recorder()
    policy = _run(smoke_cfg, inputs, run, third)

    assert sorted(first.steps) == [0, 1, 2, 3, 4]
    assert sorted(second.steps) == [4, 5, 6] and sorted(third.steps) == [6, 7, 8]
    for rec in (first, second, third):
        for step, got in rec.steps.items():
            want = full.steps[step]
            assert torch.equal(got["rows"], want["rows"]), f"step {step}: different examples"
            assert got["lr"] == want["lr"], f"step {step}: lr {got['lr']} != {want['lr']}"
            assert torch.equal(got["loss"], want["loss"]), f"step {step}: loss {got['loss']} != {want['loss']}"
    final, resumed = load_file(tmp_path / "full" / "policy" / "model.safetensors"), load_file(policy / "model.safetensors")
    assert all(torch.equal(final[k], resumed[k]) for k in final)
    assert not [w for w in recwarn if "not resumable" in str(w.message)]


def test_resume_never_starts_over_and_must_needs_a_checkpoint(smoke_cfg, inputs, tmp_path):
    from fpa.guards import ConfigError

    with pytest.raises(ConfigError, match="no checkpoint"):
        _run(smoke_cfg, inputs, tmp_path / "fresh", Recorder(), resume="must")
    rec = Recorder(kill_at=3)
    with pytest.raises(Killed):
        _run(smoke_cfg, inputs, tmp_path / "again", rec, max_steps=4)
    again = Recorder()
    _run(smoke_cfg, inputs, tmp_path / "again", again, max_steps=2, resume="never")
    assert sorted(again.steps) == [0, 1]


@pytest.mark.parametrize("n,batch,ranks", [(12, 5, 1), (12, 3, 2), (11, 2, 2), (7, 2, 3)])
def test_sharded_batches_union_is_the_single_process_order(n, batch, ranks):
    one = ShardedBatchSampler(n, batch * ranks, seed=3)
    shards = [ShardedBatchSampler(n, batch, seed=3, num_replicas=ranks, rank=r) for r in range(ranks)]
    for s in [one, *shards]:
        s.sampler.set_epoch(1)
    per_rank = [list(s) for s in shards]
    assert len({len(p) for p in per_rank}) == 1 and len(per_rank[0]) == len(shards[0])
    for k, whole in enumerate(list(one)[:len(per_rank[0])]):
        assert sum((p[k] for p in per_rank), []) == whole
    shards[0].start = 1
    assert list(shards[0]) == per_rank[0][1:]


def test_resuming_with_other_settings_is_refused_naming_the_keys(smoke_cfg, inputs, tmp_path):
    from fpa.guards import CheckpointError

    run = tmp_path / "changed"
    with pytest.raises(Killed):
        _run(smoke_cfg, inputs, run, Recorder(kill_at=3))
    model, traj = inputs
    base = ["callbacks.eval.every_n_steps=0", "callbacks.eval.at_end=false", "data.batch_size=5", "data.max_length=32",
            "train.max_steps=9", "scheduler.warmup_steps=2", "scheduler.min_lr_ratio=0.1",
            "callbacks.checkpoint.every_n_train_steps=2", "train.log_every_n_steps=1"]
    changed = train_parts(smoke_cfg(*base, "optimizer.lr=1e-2"))
    lr = train_parts(smoke_cfg(*base)).optimizer.lr
    with pytest.raises(CheckpointError, match=rf"optimizer.lr {lr!r} → 0.01; set train.resume_override=true"):
        train_policy(changed, str(model), traj, run, [])
    # Only the result matters: a different checkpoint interval or log cadence resumes.
    steps = Recorder()
    _run(smoke_cfg, inputs, run, steps, log_every_n_steps=3)
    assert min(steps.steps) == 2
    # And resume_override=true resumes anyway.
    with pytest.raises(Killed):
        _run(smoke_cfg, inputs, tmp_path / "again", Recorder(kill_at=3))
    forced = Recorder()
    train_policy(train_parts(smoke_cfg(*base, "optimizer.lr=1e-2", "train.resume_override=true")), str(model), traj,
                 tmp_path / "again", [], callbacks=[forced])
    assert min(forced.steps) == 2
