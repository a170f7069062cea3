"""status.json's liveness rule: host + pid on this host, heartbeat age on another; fpa-report uses it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

from fpa.reporting.runs import load_run
from fpa.run_status import STALE_AFTER_S, state, write_status


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_running_is_decided_by_host_pid_and_heartbeat(tmp_path):
    write_status(tmp_path, "running")
    mine = json.loads((tmp_path / "status.json").read_text())
    assert mine["host"] == socket.gethostname() and mine["pid"] == os.getpid() and state(mine) == "running"
    assert state({**mine, "pid": _dead_pid()}) == "interrupted"
    assert state({**mine, "started": 0}) == "interrupted"  # the pid now belongs to a younger process
    elsewhere = {**mine, "host": "another-node"}
    assert state({**elsewhere, "heartbeat": time.time() - 60}) == "running"
    assert state({**elsewhere, "heartbeat": time.time() - STALE_AFTER_S - 1}) == "interrupted"
    assert state({"status": "running"}) == "interrupted"  # written before liveness was recorded
    write_status(tmp_path, "finished")
    done = json.loads((tmp_path / "status.json").read_text())
    assert done["status"] == "finished" and done["pid"] == os.getpid()


def test_report_shows_a_killed_run_as_interrupted(tmp_path):
    killed, live = tmp_path / "killed", tmp_path / "live"
    for d in (killed, live):
        write_status(d, "running")
    status = json.loads((killed / "status.json").read_text())
    (killed / "status.json").write_text(json.dumps({**status, "pid": _dead_pid()}))
    assert load_run(killed).status == "interrupted"
    assert load_run(live).status == "running"
