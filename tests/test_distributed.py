"""2 processes (CPU, gloo) with trainer=ddp and trainer=fsdp match 1 process on the same global batch:
the same loss at every step and the same updated weights. The FSDP run also writes a sharded
checkpoint, and a second run resumes from it (optimizer state included) and stays on track.

The two worker processes are this file run as a script, started the way Lightning's own launcher
starts them (LOCAL_RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT in the environment); both run the
DDP job and then the FSDP jobs, so Python starts only twice.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch

STEPS = 5  # FSDP: 4 steps, a sharded checkpoint at step 4, then a resumed run to step 5
BASE = ["callbacks.eval.every_n_steps=0", "callbacks.eval.at_end=false", "data.batch_size=4", "data.max_length=32", f"train.max_steps={STEPS}", "scheduler.warmup_steps=1",
        "scheduler.min_lr_ratio=1.0", "optimizer.lr=1e-2", "callbacks.checkpoint.every_n_train_steps=2", "train.log_every_n_steps=1",
        "objective.beta=0.1"]  # the tolerances below were set at β=0.1: larger β, larger Adam-amplified noise
CPU2 = ["trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true"]
LOSS_TOL, WEIGHT_TOL = 1e-5, 1e-4  # Adam at lr=1e-2 amplifies float32 summation-order noise


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models on a shared 2-core machine: one intra-op thread is several times faster."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class LossLog(L.Callback):
    """The global batch's loss (synced over ranks) after every step, written to ``path`` as JSON."""

    def __init__(self, path: Path) -> None:
        self.path, self.losses = Path(path), {}
        if self.path.exists():
            self.losses = json.loads(self.path.read_text())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses[str(trainer.global_step - 1)] = float(trainer.callback_metrics["train/loss"])
        if trainer.is_global_zero:
            self.path.write_text(json.dumps(self.losses))


class ShardCheck(L.Callback):
    """Under FSDP: policy and reference are both sharded, the reference has no gradient and no optimizer state."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_train_start(self, trainer, pl_module):
        from torch.distributed.tensor import DTensor

        ref, pol = list(pl_module.reference.parameters()), list(pl_module.policy.parameters())
        optimized = {id(p) for g in trainer.optimizers[0].param_groups for p in g["params"]}
        facts = {"reference_sharded": all(isinstance(p, DTensor) for p in ref),
                 "policy_sharded": all(isinstance(p, DTensor) for p in pol),
                 "reference_frozen": not any(p.requires_grad for p in ref),
                 "reference_not_optimized": not any(id(p) in optimized for p in ref),
                 "policy_optimized": all(id(p) in optimized for p in pol),
                 "local_share": sum(p.to_local().numel() for p in pol) / sum(p.numel() for p in pol)}
        if trainer.is_global_zero:
            self.path.write_text(json.dumps(facts))


def _train(cfg_path: Path, model: str, traj: Path, run_dir: Path, losses: Path, extra: list | None = None,
           counts: Path | None = None, **over) -> Path:
    from omegaconf import OmegaConf

    from fpa.config.parts import train_parts
    from fpa.stages.train import train_policy

    cfg = OmegaConf.load(cfg_path)
    for key, value in over.items():
        OmegaConf.update(cfg, key, value)
    got: dict = {}
    out = train_policy(train_parts(cfg), model, traj, run_dir, [], callbacks=[LossLog(losses), *(extra or [])],
                       counts=got)
    if counts is not None and int(os.environ.get("LOCAL_RANK", 0)) == 0:
        counts.write_text(json.dumps({k: vars(v) for k, v in got["passes"].items()}))
    return out


def worker(work: Path) -> None:
    spec = json.loads((work / "spec.json").read_text())
    model, traj = spec["model"], Path(spec["traj"])
    _train(work / "ddp.yaml", model, traj, work / "ddp", work / "ddp_losses.json", counts=work / "ddp_counts.json")
    _train(work / "fsdp.yaml", model, traj, work / "fsdp", work / "fsdp_losses.json",
           extra=[ShardCheck(work / "shards.json")], **{"train.max_steps": STEPS - 1})
    ckpt = work / "fsdp" / "checkpoints" / "last.ckpt"
    if int(os.environ.get("LOCAL_RANK", 0)) == 0:
        (work / "sharded.json").write_text(json.dumps(sorted(p.name for p in ckpt.iterdir())))
    # resumes at step 4 and extends the run to 5 steps: a settings change that is asked for explicitly
    _train(work / "fsdp.yaml", model, traj, work / "fsdp", work / "fsdp_losses.json",
           **{"train.resume_override": True})


def _weights(policy_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(policy_dir / "model.safetensors")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_match_one_process_ddp_and_fsdp(tmp_path, smoke_cfg):
    from omegaconf import OmegaConf

    from fpa.testing import build_model, write_trajectories

    model = build_model(tmp_path / "model")
    traj = write_trajectories(tmp_path / "traj.jsonl", n_problems=3)  # 12 pairs: 3 global batches of 4 per epoch
    work = tmp_path / "work"
    work.mkdir()
    (work / "spec.json").write_text(json.dumps({"model": str(model), "traj": str(traj)}))
    for name in ("ddp", "fsdp"):
        OmegaConf.save(smoke_cfg(*BASE, f"trainer={name}", *CPU2), work / f"{name}.yaml")

    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "WORLD_SIZE": "2",
           "NODE_RANK": "0", "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
               [str(Path(__file__).resolve().parents[1] / "src"), os.environ.get("PYTHONPATH", "")])}
    procs = [subprocess.Popen([sys.executable, __file__, str(work)], env={**env, "LOCAL_RANK": str(r)},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for r in range(2)]

    # meanwhile, the single-process run on the same global batch
    one = _train_one(smoke_cfg, model, traj, tmp_path)

    outs = []
    for p in procs:
        try:
            outs.append(p.communicate(timeout=300)[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-4000:]

    ref_losses, ref_w, ref_counts = one
    # The compute ledger's counts are summed over the processes: the same as one process's on the same batches.
    assert json.loads((work / "ddp_counts.json").read_text()) == ref_counts
    assert ref_counts["policy_forward"]["tokens"] > 0
    report = {}
    for name in ("ddp", "fsdp"):
        losses = json.loads((work / f"{name}_losses.json").read_text())
        assert sorted(losses, key=int) == [str(s) for s in range(STEPS)], (name, losses)
        loss_diff = max(abs(losses[k] - ref_losses[k]) for k in ref_losses)
        w = _weights(work / name / "policy")
        assert set(w) == set(ref_w)
        weight_diff = max((w[k] - ref_w[k]).abs().max().item() for k in ref_w)
        moved = max((w[k] - _weights(model)[k]).abs().max().item() for k in ref_w if k in _weights(model))
        report[name] = {"max_abs_loss_diff": loss_diff, "max_abs_weight_diff": weight_diff, "weights_moved": moved}
    print("1-vs-2-process:", json.dumps(report))
    (tmp_path / "report.json").write_text(json.dumps(report))
    for name, r in report.items():
        assert r["weights_moved"] > 1e-3, f"{name}: training did not change the weights"
        assert r["max_abs_loss_diff"] < LOSS_TOL, (name, r)
        assert r["max_abs_weight_diff"] < WEIGHT_TOL, (name, r)
    facts = json.loads((work / "shards.json").read_text())
    assert facts.pop("local_share") < 0.6, "each of 2 ranks should hold about half of the policy"
    assert all(facts.values()), facts
    # the FSDP checkpoint is sharded: one file per rank plus metadata, and it reloaded (step 5 above)
    names = json.loads((work / "sharded.json").read_text())
    assert ".metadata" in names and "meta.pt" in names
    assert len([n for n in names if n.endswith(".distcp")]) == 2, names


def _train_one(smoke_cfg, model: Path, traj: Path, tmp_path: Path):
    from fpa.config.parts import train_parts
    from fpa.stages.train import train_policy

    cfg = smoke_cfg(*BASE, "trainer=cpu")
    log = LossLog(tmp_path / "one_losses.json")
    counts: dict = {}
    policy = train_policy(train_parts(cfg), str(model), traj, tmp_path / "one", [], callbacks=[log], counts=counts)
    return dict(log.losses), _weights(policy), {k: vars(v) for k, v in counts["passes"].items()}


def test_micro_batches_with_accumulation_match_the_full_batch(tmp_path, smoke_cfg):
    from fpa.config.parts import train_parts
    from fpa.stages.train import train_policy
    from fpa.testing import build_model, write_trajectories

    model = build_model(tmp_path / "model")
    traj = write_trajectories(tmp_path / "traj.jsonl", n_problems=3)
    full = train_policy(train_parts(smoke_cfg(*BASE)), str(model), traj, tmp_path / "full", [])
    micro = train_policy(train_parts(smoke_cfg(*BASE, "data.micro_batch_size=1")), str(model), traj, tmp_path / "micro", [])
    a, b = _weights(full), _weights(micro)
    assert max((a[k] - b[k]).abs().max().item() for k in a) < WEIGHT_TOL


if __name__ == "__main__":
    torch.set_num_threads(1)
    worker(Path(sys.argv[1]))
