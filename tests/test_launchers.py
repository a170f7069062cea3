"""Sweeps beyond one process: the hydra/launcher presets (submitit) and the Optuna hparams_search presets.

There is no cluster here: hydra/launcher=local (submitit's local executor) takes the same path as
the SLURM one (the sweep pickled, every point started as its own process, its return value sent
back); the SLURM preset is checked by composition (one task per GPU, whole nodes per point).
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import get_class
from omegaconf import OmegaConf

from testconfig import CONF

ROOT = Path(__file__).resolve().parents[1]
LAUNCHERS = sorted((CONF / "hydra" / "launcher").glob("*.yaml"))
SEARCHES = sorted((CONF / "hparams_search").glob("*.yaml"))
# Every stage at toy size, and smaller still: the sweeps below only check that points run and report.
SMALL = ["experiment=smoke", "logger=csv", "train.max_steps=2", "benchmark.n_problems=4", "callbacks.eval.every_n_steps=0"]


def fpa_train(*args: str, timeout: int = 600) -> int:
    """Run ``python -m fpa.cli.train *args`` (this tree's package first on the path); returns its pid."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    with subprocess.Popen([sys.executable, "-m", "fpa.cli.train", *args], cwd=ROOT, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert proc.returncode == 0, out[-2000:] + err[-4000:]
    return proc.pid


@pytest.fixture(scope="module")
def warm_cache(tmp_path_factory) -> Path:
    """A stage cache holding the reference, trajectories and the reference's evaluation.

    Sweep points that run at the same time must find these built: the cache does not let two
    processes build the same entry at once (as docs/distributed.md says for parallel sweeps)."""
    tmp = tmp_path_factory.mktemp("launchers")
    fpa_train(*SMALL, f"paths.cache_dir={tmp / 'cache'}", f"hydra.run.dir={tmp / 'warm'}")
    return tmp / "cache"


def compose_with_hydra(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides), return_hydra_config=True)


def point_pass1(run_dir: Path) -> float:
    assert json.loads((run_dir / "status.json").read_text())["status"] == "finished"
    return json.loads((run_dir / "results.json").read_text())["policy"]["pass@1"]


# --- every preset composes (fast) ----------------------------------------------------------------

@pytest.mark.parametrize("preset", LAUNCHERS, ids=lambda p: p.stem)
def test_launcher_preset_composes(preset):
    cfg = compose_with_hydra(f"hydra/launcher={preset.stem}", "trainer=ddp")
    launcher = cfg.hydra.launcher
    assert get_class(launcher._target_).__name__.endswith("Launcher")
    OmegaConf.to_container(launcher, resolve=True)  # every interpolation resolves
    if "Slurm" in launcher._target_:  # Lightning under SLURM: one task per GPU, whole nodes per point
        assert launcher.tasks_per_node == launcher.gpus_per_node > 0
        assert cfg.trainer.num_nodes == launcher.nodes == 1
    else:
        assert launcher.tasks_per_node == 1  # the local executor's task variables are not SLURM's


@pytest.mark.parametrize("preset", SEARCHES, ids=lambda p: p.stem)
def test_hparams_search_preset_composes(preset):
    cfg = compose_with_hydra(f"hparams_search={preset.stem}")
    sweeper = cfg.hydra.sweeper
    assert "Optuna" in sweeper._target_ and sweeper.direction == "maximize"  # fpa-train returns pass@1
    assert cfg.data_seed == 0, "settings are chosen on data_seed 0 only"
    assert sweeper.sampler.seed is not None, "a seeded sampler: the same command proposes the same trials"
    assert sweeper.params
    parsed = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in sweeper.params.items()])
    for override in parsed:
        assert override.is_sweep_override(), override.input_line
        key = override.get_key_element()
        assert OmegaConf.select(cfg, key) is not None, f"{preset.name} searches {key}, which train has not"


# --- submitit's local executor: every sweep point its own process ---------------------------------

def test_local_launcher_runs_each_point_in_its_own_process(tmp_path, warm_cache):
    sweep_dir = tmp_path / "multirun"
    sweeper_pid = fpa_train("-m", "hydra/launcher=local", *SMALL, "fpa.lam=0,1.0", "hydra.launcher.timeout_min=10",
                     f"hydra.sweep.dir={sweep_dir}", f"paths.cache_dir={warm_cache}")
    points = sorted(p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit())
    assert [p.name for p in points] == ["0", "1"]
    pass1 = {p.name: point_pass1(p) for p in points}
    # submitit's record of each job: the local executor's job id is the pid of the process it started
    results = sorted((sweep_dir / ".submitit").glob("*/*_result.pkl"))
    assert len(results) == 2
    job_ids = {r.parent.name for r in results}
    assert len(job_ids) == 2 and str(sweeper_pid) not in job_ids
    returned = {}
    for r in results:
        outcome, job_return = pickle.loads(r.read_bytes())
        assert outcome == "success"
        returned[job_return.hydra_cfg.hydra.job.num] = job_return.return_value
    assert returned == {0: pass1["0"], 1: pass1["1"]}  # the value an Optuna sweeper would read
    lams = {p.name: yaml.safe_load((p / ".hydra" / "config.yaml").read_text())["fpa"]["lam"] for p in points}
    assert lams == {"0": 0, "1": 1.0}


# --- the Optuna sweeper ----------------------------------------------------------------------------

def test_optuna_search_two_trials(tmp_path, warm_cache):
    preset = SEARCHES[0]
    space = yaml.safe_load(preset.read_text())["hydra"]["sweeper"]["params"]
    searched = space  # the preset's own search space: λ, β and the learning rate
    assert {"fpa.lam", "objective.beta", "optimizer.lr"} <= set(searched)
    sweep_dir = tmp_path / "optuna"
    fpa_train("-m", f"hparams_search={preset.stem}", *SMALL, "hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=1",
              f"hydra.sweep.dir={sweep_dir}", f"paths.cache_dir={warm_cache}")
    best = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert set(best["best_params"]) == set(searched)
    trials = sorted(p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit())
    assert len(trials) == 2
    values = [point_pass1(t) for t in trials]
    assert best["best_value"] == max(values)  # direction: maximize
    for t in trials:
        cfg = yaml.safe_load((t / ".hydra" / "config.yaml").read_text())
        assert cfg["data_seed"] == 0 and cfg["sweep"] == preset.stem
