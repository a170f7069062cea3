"""Concurrent cache builds: one process builds, the others wait; only orphans of dead owners are cleaned."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

from fpa.stages import locks
from fpa.stages.cache import cached_stage

BUILDER = """
import json, os, sys, time
from pathlib import Path
from fpa.stages.cache import cached_stage

cache, log = Path(sys.argv[1]), Path(sys.argv[2])

def build(tmp):
    (tmp / "owner").write_text(str(os.getpid()))
    with open(log, "a") as f:
        f.write(f"{os.getpid()}\\n")
    time.sleep(3)
    if (tmp / "owner").read_text() != str(os.getpid()):
        raise SystemExit("my .partial was deleted or taken under me")
    (tmp / "weights").write_text("built")

path, cached = cached_stage(cache, "model", "k1", {"x": 1}, build)
print(json.dumps({"path": str(path), "cached": cached, "weights": (path / "weights").read_text()}))
"""


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def owner(pid: int, host: str = locks.HOST, age: float = 0.0) -> dict:
    t = time.time() - age
    return {"host": host, "pid": pid, "started": t, "heartbeat": t, "token": f"{host}:{pid}:{t}"}


def test_two_processes_building_one_key_build_it_once(tmp_path):
    cache, log = tmp_path / "cache", tmp_path / "builds.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    procs = [subprocess.Popen([sys.executable, "-c", BUILDER, str(cache), str(log)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outs]
    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    assert len(log.read_text().split()) == 1  # the build ran once
    assert sorted(r["cached"] for r in results) == [False, True]
    assert {r["path"] for r in results} == {str(cache / "model" / "k1")}
    assert {r["weights"] for r in results} == {"built"}
    waiter = next(out for (out, _), r in zip(outs, results) if r["cached"])
    assert f"fpa: waiting for {cache / 'model' / 'k1.lock'}: held by pid " in waiter
    assert sorted(p.name for p in (cache / "model").iterdir()) == ["k1"]  # no lock, no .partial left
    assert (cache / "model" / "k1" / "stage.json").exists()


def test_a_stale_lock_is_taken_over_and_orphans_cleaned(tmp_path, capsys):
    stage = tmp_path / "model"
    stage.mkdir()
    gone = dead_pid()
    for key in ("k1", "k2"):  # left by a process that died mid-build
        (stage / f"{key}.partial").mkdir()
        (stage / f"{key}.partial" / "junk").write_text("half")
        (stage / f"{key}.lock").write_text(json.dumps(owner(gone)))
    (stage / "k3.partial").mkdir()  # being built by a live process (this one)
    (stage / "k3.lock").write_text(json.dumps(owner(os.getpid())))
    (stage / "k4.partial").mkdir()  # left by an fpa from before locks

    built = []
    path, cached = cached_stage(tmp_path, "model", "k1", {}, lambda tmp: built.append(sorted(os.listdir(tmp))))
    assert (path, cached) == (stage / "k1", False) and built == [[]]  # its .partial was emptied first
    assert sorted(p.name for p in stage.iterdir()) == ["k1", "k3.lock", "k3.partial"]
    out = capsys.readouterr().out
    assert f"fpa: removed {stage / 'k2.partial'}" in out and f"fpa: removed {stage / 'k4.partial'}" in out


def test_who_holds_a_lock():
    assert locks.owner_alive(owner(os.getpid()))
    assert not locks.owner_alive(owner(dead_pid()))
    assert not locks.owner_alive({**owner(os.getpid()), "pid_start": "1"})  # the pid was reused
    assert locks.owner_alive(owner(1, host="elsewhere", age=locks.STALE_AFTER_S - 60))
    assert not locks.owner_alive(owner(1, host="elsewhere", age=locks.STALE_AFTER_S + 60))


def test_a_waiter_waits_for_a_live_holder(tmp_path, capsys):
    path = tmp_path / "k.lock"
    first = locks.try_acquire(path)
    assert first is not None and locks.try_acquire(path) is None  # live: not taken over
    threading.Timer(1.0, first.release).start()
    start = time.perf_counter()
    with locks.held(path, poll=0.1) as second:
        assert time.perf_counter() - start >= 0.9 and json.loads(path.read_text())["token"] == second.owner["token"]
    assert not path.exists()
    assert capsys.readouterr().out.count(f"fpa: waiting for {path}: held by pid {os.getpid()}") == 1
