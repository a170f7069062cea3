"""Lock files for cache entries and run directories: one live owner builds, the others wait.

A lock is ``<name>.lock`` beside what it guards, created atomically (``O_CREAT | O_EXCL``) and
holding its owner as JSON: host, pid (and the pid's start time, against pid reuse), when it was
taken and a heartbeat the owner refreshes every :data:`HEARTBEAT_S` seconds. Who holds it:

- an owner on this host is live while its process runs (``os.kill(pid, 0)``);
- an owner on another host is live until its heartbeat is older than :data:`STALE_AFTER_S`;
- a lock file not yet readable (being written) is live for :data:`GRACE_S` seconds.

A live lock is waited for (:func:`held` polls and says once who holds it); a lock whose owner is
gone is taken over: removed under a short ``.takeover`` guard, so that of two processes finding the
same stale lock only one removes it, and never a lock taken meanwhile.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

HEARTBEAT_S = 30.0
STALE_AFTER_S = 600.0  # 10 minutes without a heartbeat: an owner on another host is gone
GRACE_S = 30.0
POLL_S = 1.0
HOST = socket.gethostname()


def lock_for(path: str | Path) -> Path:
    """The lock file of a directory: ``<dir>.lock`` beside it."""
    path = Path(path)
    return path.with_name(path.name + ".lock")


def _pid_start(pid: int) -> str | None:
    """The process's start time (Linux /proc), so a reused pid is not taken for the owner; None elsewhere."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def owner_alive(owner: dict[str, Any], now: float | None = None) -> bool:
    """Whether the process that wrote ``owner`` (a lock file's content) still holds it."""
    now = time.time() if now is None else now
    if owner.get("host") != HOST:
        return now - float(owner.get("heartbeat", 0)) < STALE_AFTER_S
    try:
        os.kill(int(owner["pid"]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        pass
    start = owner.get("pid_start")
    return start is None or _pid_start(int(owner["pid"])) in (None, start)


def _read(path: Path) -> tuple[str, dict[str, Any] | None] | None:
    """(raw text, owner or None if unreadable) of a lock file; None if there is none."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        return text, json.loads(text)
    except ValueError:
        return text, None


def _live(path: Path, owner: dict[str, Any] | None) -> bool:
    if owner is None:  # created, not yet written (or cut short): give its writer a moment
        try:
            return time.time() - path.stat().st_mtime < GRACE_S
        except FileNotFoundError:
            return False
    return owner_alive(owner)


def describe(owner: dict[str, Any] | None) -> str:
    if owner is None:
        return "held (owner not yet written)"
    since = datetime.fromtimestamp(owner.get("started", 0)).isoformat(timespec="seconds")
    beat = time.time() - float(owner.get("heartbeat", 0))
    return f"held by pid {owner.get('pid')} on {owner.get('host')} since {since} (heartbeat {beat:.0f} s ago)"


def _remove_stale(path: Path, text: str) -> None:
    """Remove the lock at ``path`` if it still reads ``text`` (the stale one), under the takeover guard."""
    guard = path.with_name(path.name + ".takeover")
    try:
        os.close(os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        with contextlib.suppress(FileNotFoundError):
            if time.time() - guard.stat().st_mtime > GRACE_S:  # its taker died inside these few lines
                guard.unlink()
        return
    try:
        now = _read(path)
        if now is not None and now[0] == text:
            path.unlink()
    finally:
        guard.unlink(missing_ok=True)


class Lock:
    """A held lock file; :meth:`release` it (``with`` does). Refreshes its heartbeat while held."""

    def __init__(self, path: Path, owner: dict[str, Any], heartbeat: bool = True) -> None:
        self.path, self.owner = path, owner
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True) if heartbeat else None
        if self._thread:
            self._thread.start()

    def _ours(self) -> bool:
        now = _read(self.path)
        return now is not None and now[1] is not None and now[1].get("token") == self.owner["token"]

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            if not self._ours():
                return
            self.owner["heartbeat"] = time.time()
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(self.owner))
            os.replace(tmp, self.path)

    def release(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()
        if self._ours():
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> "Lock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def try_acquire(path: str | Path, heartbeat: bool = True) -> Lock | None:
    """Take the lock at ``path`` if it is free or its owner is gone; None while a live owner holds it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(5):
        now = time.time()
        owner = {"host": HOST, "pid": os.getpid(), "pid_start": _pid_start(os.getpid()), "started": now,
                 "heartbeat": now, "token": f"{HOST}:{os.getpid()}:{time.time_ns()}"}
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            held = _read(path)
            if held is not None:
                if _live(path, held[1]):
                    return None
                _remove_stale(path, held[0])
            continue
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(owner))
            f.flush()
            os.fsync(f.fileno())
        return Lock(path, owner, heartbeat)
    return None  # contended all along: the caller polls again


@contextlib.contextmanager
def held(path: str | Path, poll: float | None = None) -> Iterator[Lock]:
    """Hold the lock at ``path``, waiting (and saying once who holds it) while a live process does."""
    path, told = Path(path), None
    while (lock := try_acquire(path)) is None:
        current = _read(path)
        owner = current and (current[1] or {}).get("token", current[0])
        if owner and owner != told:  # once per owner (its heartbeat changes the text)
            print(f"fpa: waiting for {path}: {describe(current[1])}", flush=True)
            told = owner
        time.sleep(POLL_S if poll is None else poll)
    with lock:
        yield lock
