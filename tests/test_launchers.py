"""Sweeps beyond one process: the hydra/launcher presets (submitit) and the Optuna hparams_search presets.

There is no cluster here: hydra/launcher=local (submitit's local executor) takes the same path (the
sweep pickled, every point started as its own process, its return value sent back), and
hydra/launcher=slurm runs against stand-ins for sbatch/srun/sacct that start the tasks locally with
the SLURM_* variables, which is what Lightning reads.
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

from conftest import CONF

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


# --- the SLURM launcher, against a stand-in sbatch/srun on this machine -------------------------

FAKE_SBATCH = r'''"""Fake sbatch: runs the script's array tasks one after another, in the background, with SLURM_* set."""
import os, re, subprocess, sys, random
script = sys.argv[-1]
text = open(script).read()
jid = random.randint(100000, 999999)
arr = re.search(r"#SBATCH --array=(\d+)-(\d+)", text)
idx = range(int(arr.group(1)), int(arr.group(2)) + 1) if arr else [None]
ntasks = int(re.search(r"#SBATCH --ntasks-per-node=(\d+)", text).group(1))
print(f"Submitted batch job {jid}", flush=True)
if os.fork() == 0:
    os.setsid()
    dn = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2): os.dup2(dn, fd)
    for n, i in enumerate(idx):
        env = {**os.environ, "SLURM_JOB_ID": str(jid + n + 1), "FAKE_NTASKS": str(ntasks), "SLURM_JOB_NAME": "train",
               "SLURM_JOB_NODELIST": "localhost", "SLURM_NODELIST": "localhost", "SLURM_JOB_NUM_NODES": "1", "SLURM_NNODES": "1"}
        if i is not None:
            env.update(SLURM_ARRAY_JOB_ID=str(jid), SLURM_ARRAY_TASK_ID=str(i))
        subprocess.run(["bash", script], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os._exit(0)
'''
FAKE_SRUN = r'''"""Fake srun: FAKE_NTASKS copies of the command, SLURM_PROCID/LOCALID set, output per task."""
import os, subprocess, sys
args = sys.argv[1:]
out = err = None
while args and args[0].startswith("--"):
    a = args.pop(0)
    if a in ("--output", "--error"):
        v = args.pop(0)
        if a == "--output": out = v
        else: err = v
n = int(os.environ.get("FAKE_NTASKS", "1"))
jid = os.environ.get("SLURM_ARRAY_JOB_ID")
j = f"{jid}_{os.environ['SLURM_ARRAY_TASK_ID']}" if jid else os.environ["SLURM_JOB_ID"]
import time
for _ in range(1200):  # submitit moves the job's pickle into place once sbatch has answered
    if os.path.exists(os.path.join(args[-1].replace("%j", j), f"{j}_submitted.pkl")):
        break
    time.sleep(0.1)
procs = []
for t in range(n):
    env = {**os.environ, "SLURM_NTASKS": str(n), "SLURM_NTASKS_PER_NODE": str(n), "SLURM_PROCID": str(t),
           "SLURM_LOCALID": str(t), "SLURM_NODEID": "0", "SLURM_STEP_ID": "0"}
    sub = lambda p: p.replace("%A", jid or j).replace("%a", os.environ.get("SLURM_ARRAY_TASK_ID", "")).replace("%j", j).replace("%t", str(t))
    o = open(sub(out), "w")
    e = open(sub(err), "w") if err else subprocess.STDOUT
    procs.append(subprocess.Popen(args, env=env, stdout=o, stderr=e))
sys.exit(max(p.wait() for p in procs))
'''


def fake_slurm(bin_dir: Path) -> Path:
    """sbatch (runs the job array here, one element after another), srun (starts the tasks with the
    SLURM_* variables a cluster sets) and an empty sacct: submitit finds results by their files."""
    bin_dir.mkdir()
    for name, body in (("sbatch", FAKE_SBATCH), ("srun", FAKE_SRUN)):
        (bin_dir / name).write_text(f"#!{sys.executable}\n{body}")
    (bin_dir / "sacct").write_text("#!/bin/sh\necho 'JobID|State|NodeList'\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    return bin_dir


def test_slurm_launcher_points_are_lightning_process_groups(tmp_path, warm_cache, monkeypatch):
    """hydra/launcher=slurm as on a cluster, 2 points x 2 tasks (ddp on CPU, gloo): each point's tasks
    form one process group through Lightning's SLURM environment, and rank 0 writes the results."""
    monkeypatch.setenv("PATH", f"{fake_slurm(tmp_path / 'bin')}{os.pathsep}{os.environ['PATH']}")
    sweep_dir = tmp_path / "multirun"
    fpa_train("-m", "hydra/launcher=slurm", "hydra.launcher.gpus_per_node=2", "hydra.launcher.cpus_per_task=1",
              "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true",
              *SMALL, "fpa.lam=0,1.0", f"hydra.sweep.dir={sweep_dir}", f"paths.cache_dir={warm_cache}", timeout=300)
    script = next((sweep_dir / ".submitit").glob("*/*_submission.sh")).read_text()
    assert "#SBATCH --ntasks-per-node=2" in script and "#SBATCH --gpus-per-node=2" in script
    assert "#SBATCH --array=0-1" in script and "srun " in script
    for n in ("0", "1"):
        assert point_pass1(sweep_dir / n) is not None
        logs = sorted((sweep_dir / ".submitit").glob(f"*_{n}/*_log.err"))
        members = sorted(ln for log in logs for ln in log.read_text().splitlines() if "MEMBER:" in ln)
        assert members == ["Initializing distributed: GLOBAL_RANK: 0, MEMBER: 1/2",
                           "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2"], logs
