"""``<run>/status.json``: what state a run is in, and whether the process that owns it is alive.

A run writes ``{"status": "running", "host", "pid", "started", "heartbeat"}`` when it starts,
refreshes ``heartbeat`` every :data:`HEARTBEAT_STEPS` training steps and between stages, and ends
with ``finished``, ``failed`` or ``interrupted`` (Ctrl-C). A run killed outright (SIGKILL, a lost
node) stays ``running`` on disk; :func:`state` decides by rule whether it still is:

- on the same host: alive while the process ``pid`` exists and started no later than the run
  (a reused pid belongs to a younger process);
- on another host: alive while its heartbeat is younger than :data:`STALE_AFTER_S` seconds.

Anything else is ``interrupted``: a rerun of the same command resumes it.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

import lightning as L

HEARTBEAT_STEPS = 10
STALE_AFTER_S = 30 * 60  # another host's run with no heartbeat for this long is taken as dead


def read_status(run_dir: Path) -> dict[str, Any]:
    """The run's ``status.json`` (``{}`` if there is none or it is unreadable)."""
    try:
        data = json.loads((Path(run_dir) / "status.json").read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_status(run_dir: Path, status: str, **extra: Any) -> None:
    """Write ``status.json`` atomically; a ``running`` status names this host and process."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    now = time.time()
    data: dict[str, Any] = {"status": status}
    if status == "running":
        data.update(host=socket.gethostname(), pid=os.getpid(), started=now, heartbeat=now)
    else:
        old = read_status(run_dir)
        data.update({k: old[k] for k in ("host", "pid", "started", "settings") if k in old}, ended=now)
    data.update(extra)
    tmp = run_dir / "status.json.partial"
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, run_dir / "status.json")


def heartbeat(run_dir: Path) -> None:
    """Refresh the heartbeat of this process's running status (nothing if the status is not ours)."""
    data = read_status(run_dir)
    if data.get("status") != "running" or data.get("pid") != os.getpid() or data.get("host") != socket.gethostname():
        return
    data["heartbeat"] = time.time()
    tmp = Path(run_dir) / "status.json.partial"
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, Path(run_dir) / "status.json")


def _process_start(pid: int) -> float | None:
    """When process ``pid`` started (Linux /proc), or None where that cannot be read."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime"))
        return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def is_alive(data: dict[str, Any], now: float | None = None) -> bool:
    """Whether the process that wrote a ``running`` status still runs (the rule in the module doc)."""
    now = time.time() if now is None else now
    if data.get("status") != "running":
        return False
    pid, host = data.get("pid"), data.get("host")
    if not isinstance(pid, int) or not host:
        return False  # a status from before liveness was recorded: nothing says it is alive
    if host == socket.gethostname():
        if not _pid_alive(pid):
            return False
        start, started = _process_start(pid), data.get("started")
        return start is None or not isinstance(started, (int, float)) or start <= started + 5
    beat = data.get("heartbeat")
    return isinstance(beat, (int, float)) and now - beat < STALE_AFTER_S


def state(data: dict[str, Any]) -> str:
    """``finished`` | ``failed`` | ``running`` | ``interrupted`` | ``new`` (no status yet)."""
    status = data.get("status")
    if status is None:
        return "new"
    if status == "running":
        return "running" if is_alive(data) else "interrupted"
    return str(status)


def describe_owner(data: dict[str, Any]) -> str:
    beat = data.get("heartbeat")
    ago = f", last heartbeat {time.time() - beat:.0f} s ago" if isinstance(beat, (int, float)) else ""
    return f"pid {data.get('pid')} on host {data.get('host')}{ago}"


class Heartbeat(L.Callback):
    """Refreshes ``status.json``'s heartbeat every ``every_n_steps`` optimizer steps (rank 0)."""

    def __init__(self, run_dir: Path, every_n_steps: int = HEARTBEAT_STEPS) -> None:
        self.run_dir, self.every = Path(run_dir), every_n_steps

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.is_global_zero and trainer.global_step % self.every == 0:
            heartbeat(self.run_dir)
