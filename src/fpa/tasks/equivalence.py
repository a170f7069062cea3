"""Is a predicted final answer equal to the gold one? math-verify behind a hard, thread-safe time limit.

Why a worker process: math-verify bounds its own work with ``signal.alarm``, which works only in
the main thread and only to whole seconds, and sympy can spin for minutes on inputs like
``10^{10^{10^{10}}}``. So every symbolic check runs in a persistent child process that the caller
waits on with ``Connection.poll(timeout_s)``; on timeout the child is killed and a fresh one
started. This works from any thread, and a check costs one pipe round trip rather than a process
start. The child is a plain ``python -c`` subprocess, not ``multiprocessing`` spawn, so it imports
only math-verify instead of re-running the caller's ``__main__`` (torch and all) on every restart.

Numbers take a fast path: if both sides are plain numbers (``12``, ``-0.5``, ``3/4``, ``1,000``
after :func:`~fpa.tasks.answers.normalize_number`) they are compared exactly as ``Fraction``s in
this process. Exactly: ``0.333`` does not equal ``1/3`` here, while math-verify would round.
Scale words count (``10 million`` is 10000000) and known units are dropped; a number followed
by other words (``3 or more``) never equals a plain number (math-verify would read just the 3).

Every check lands in a :class:`VerificationStats`; timeouts and errors score 0 but are counted,
so a run can report how many verdicts the verifier could not give.
"""

from __future__ import annotations

import atexit
import logging
import os
import pickle
import queue
import re
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from fractions import Fraction
from multiprocessing.connection import Connection
from typing import Callable, Literal

from fpa.tasks.answers import normalize_number, number_with_words

log = logging.getLogger(__name__)

MatchStatus = Literal["ok", "timeout", "error"]
CheckFn = Callable[[str, str], bool]

_PLAIN_NUMBER = re.compile(r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)$")
_PLAIN_FRACTION = re.compile(r"^[+-]?\d+\s*/\s*\d+$")


@dataclass(frozen=True)
class MatchResult:
    correct: bool
    status: MatchStatus = "ok"  # "timeout" / "error": the verifier gave no verdict, scored as wrong
    method: str = "none"  # "fast" (exact numbers), "math_verify", or "none" (no answer to check)
    detail: str = ""  # why, for "error"


@dataclass
class VerificationStats:
    """Counts of checks and of those the verifier could not finish. Safe to share across threads."""

    n_checked: int = 0
    n_timeout: int = 0
    n_error: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def record(self, result: MatchResult) -> None:
        with self._lock:
            self.n_checked += 1
            self.n_timeout += result.status == "timeout"
            self.n_error += result.status == "error"

    def as_dict(self) -> dict[str, int]:
        with self._lock:
            return {"n_checked": self.n_checked, "n_timeout": self.n_timeout, "n_error": self.n_error}

    def reset(self) -> None:
        with self._lock:
            self.n_checked = self.n_timeout = self.n_error = 0


def plain_number(s: str) -> Fraction | None:
    """``s`` as an exact Fraction if it is a plain integer, decimal or ``a/b``; else None."""
    s = normalize_number(s)
    if _PLAIN_NUMBER.match(s):
        return Fraction(s)
    if _PLAIN_FRACTION.match(s):
        num, den = s.split("/")
        if int(den) == 0:
            return None
        return Fraction(int(num), int(den))
    return None


def _as_latex(s: str) -> str:
    """Put a bare answer in ``$...$`` so math-verify reads it as LaTeX.

    Measured: bare ``\\dfrac{1}{2}`` and ``\\frac{\\sqrt{2}}{2}`` extract nothing, and ``\\boxed{50\\%}``
    fails where ``$50\\%$`` parses. Text that already carries a box is passed through untouched.
    """
    s = s.strip()
    if "\\boxed" in s or "\\fbox" in s:
        return s
    if s.startswith("$") and s.endswith("$"):
        s = s.strip("$")
    return f"${s}$"


def math_verify_check(predicted: str, gold: str) -> bool:
    """The symbolic check run in the worker. Errors propagate so they are counted, not hidden."""
    from math_verify import parse, verify

    # Timeouts off: the worker's caller enforces the limit, and SIGALRM would only add noise.
    gold_parsed = parse(_as_latex(gold), parsing_timeout=None, raise_on_error=True)
    if not gold_parsed:
        raise ValueError("gold answer did not parse")
    pred_parsed = parse(_as_latex(predicted), parsing_timeout=None, raise_on_error=True)
    if not pred_parsed:
        return False
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=None, raise_on_error=True))


def _warm_up_math_verify() -> None:
    """Import sympy and compile math-verify's regexes before the first timed check (~0.1-1 s)."""
    logging.getLogger("math_verify").setLevel(logging.ERROR)  # the "timeout disabled" warning
    math_verify_check("1/2", "0.5")


_BOOTSTRAP = (
    "import sys; sys.path[:0] = sys.argv[3:]\n"
    "from fpa.tasks.equivalence import _worker_loop\n"
    "_worker_loop(int(sys.argv[1]), int(sys.argv[2]))\n"
)


def _worker_loop(read_fd: int, write_fd: int) -> None:
    """Child side: receive the check and warm-up functions, then answer (pred, gold) requests."""
    inbox, outbox = Connection(read_fd, writable=False), Connection(write_fd, readable=False)
    try:
        check_fn, warm_up = inbox.recv()
        if warm_up is not None:
            warm_up()
    except BaseException as e:  # noqa: BLE001 - report any start-up failure to the parent
        outbox.send(("failed", f"{type(e).__name__}: {e}"))
        return
    outbox.send(("ready", None))
    while True:
        try:
            predicted, gold = inbox.recv()
        except (EOFError, OSError):  # parent gone
            return
        try:
            reply = ("ok", bool(check_fn(predicted, gold)))
        except Exception as e:  # noqa: BLE001
            # Only the type: math-verify warns that str() of some sympy errors can itself hang.
            reply = ("error", type(e).__name__)
        outbox.send(reply)


class _Worker:
    """One child process. Not thread-safe on its own; the pool hands it to one caller at a time."""

    def __init__(self, check_fn: CheckFn, warm_up: Callable[[], None] | None, start_timeout_s: float):
        self.check_fn, self.warm_up, self.start_timeout_s = check_fn, warm_up, start_timeout_s
        self.proc: subprocess.Popen | None = None
        self.inbox: Connection | None = None
        self.outbox: Connection | None = None
        self.ready = False

    def start(self) -> None:
        """Launch the child without waiting for it, so a restart overlaps the caller's other work."""
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        src_dir = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        # The parent's sys.path goes along so the check function (pickled by name) imports there.
        argv = [sys.executable, "-c", _BOOTSTRAP, str(to_child_r), str(from_child_w), src_dir,
                *[p for p in sys.path if p]]
        try:
            self.proc = subprocess.Popen(argv, pass_fds=(to_child_r, from_child_w), stdin=subprocess.DEVNULL)
        finally:
            os.close(to_child_r)
            os.close(from_child_w)
        self.outbox = Connection(to_child_w, readable=False)
        self.inbox = Connection(from_child_r, writable=False)
        self.ready = False
        try:
            self.outbox.send((self.check_fn, self.warm_up))
        except OSError:  # the child already exited; await_ready reports why
            pass

    def await_ready(self) -> None:
        if self.proc is None:
            self.start()
        if self.ready:
            return
        assert self.inbox is not None
        try:
            got = self.inbox.recv() if self.inbox.poll(self.start_timeout_s) else ("failed", "start-up timed out")
        except EOFError:
            got = ("failed", f"worker exited with code {self.proc.wait()}")
        if got[0] != "ready":
            self.stop()
            raise RuntimeError(f"answer-verifier worker failed to start: {got[1]}")
        self.ready = True

    def check(self, predicted: str, gold: str, timeout_s: float) -> tuple[MatchStatus, bool, str]:
        self.await_ready()
        assert self.inbox is not None and self.outbox is not None
        try:
            self.outbox.send((predicted, gold))
            if self.inbox.poll(timeout_s):
                status, value = self.inbox.recv()
                return ("ok", value, "") if status == "ok" else ("error", False, value)
            self.restart()
            return "timeout", False, f"no verdict within {timeout_s:g} s"
        except (EOFError, OSError) as e:  # the child died mid-check (segfault, OOM kill)
            self.restart()
            return "error", False, f"worker died: {type(e).__name__}"

    def restart(self) -> None:
        self.stop()
        self.start()

    def stop(self) -> None:
        for conn in (self.inbox, self.outbox):
            if conn is not None:
                conn.close()
        self.inbox = self.outbox = None
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            self.proc = None
        self.ready = False


class AnswerVerifier:
    """A pool of persistent worker processes that run a check under a hard time limit.

    Workers start lazily and are reused last-in-first-out, so a single-threaded caller keeps one
    warm worker and more start only under concurrent demand (up to ``max_workers``). ``check_fn``
    and ``warm_up`` must be picklable by reference (module-level functions).
    """

    def __init__(self, max_workers: int = 4, check_fn: CheckFn = math_verify_check,
                 warm_up: Callable[[], None] | None = _warm_up_math_verify, start_timeout_s: float = 120.0):
        if max_workers < 1:
            raise ValueError(f"max_workers must be >= 1, got {max_workers}")
        pickle.dumps((check_fn, warm_up))  # fail here, not in the child, if they cannot travel
        self._idle: queue.LifoQueue[_Worker] = queue.LifoQueue()
        self._all = [_Worker(check_fn, warm_up, start_timeout_s) for _ in range(max_workers)]
        for w in reversed(self._all):
            self._idle.put(w)

    def prestart(self, n: int = 1) -> None:
        """Start ``n`` workers now and wait until they are ready, so start-up is not paid mid-evaluation."""
        workers = [self._idle.get() for _ in range(min(n, len(self._all)))]
        try:
            for w in workers:
                if w.proc is None:
                    w.start()
            for w in workers:
                w.await_ready()
        finally:
            for w in reversed(workers):
                self._idle.put(w)

    def check(self, predicted: str, gold: str, timeout_s: float) -> tuple[MatchStatus, bool, str]:
        """(status, correct, detail) for one comparison; ``timeout_s`` bounds the check itself."""
        worker = self._idle.get()
        try:
            return worker.check(predicted, gold, timeout_s)
        finally:
            self._idle.put(worker)

    def close(self) -> None:
        for w in self._all:
            w.stop()

    def __enter__(self) -> AnswerVerifier:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


_default_verifier: AnswerVerifier | None = None
_default_lock = threading.Lock()
STATS = VerificationStats()  # every check in this process, whichever stats the caller also passed


def default_verifier() -> AnswerVerifier:
    global _default_verifier
    with _default_lock:
        if _default_verifier is None:
            _default_verifier = AnswerVerifier()
            atexit.register(_default_verifier.close)
        return _default_verifier


def answers_match(predicted: str | None, gold: str, timeout_s: float = 5.0, *,
                  stats: VerificationStats | None = None, verifier: AnswerVerifier | None = None) -> MatchResult:
    """Whether the extracted answer ``predicted`` equals ``gold``; never raises for a bad answer.

    ``predicted`` is an extracted final answer (see :func:`fpa.tasks.answers.extract_final_answer`),
    None or blank when the completion gave none (incorrect, status "ok"). A check that exceeds
    ``timeout_s`` or raises is incorrect with status "timeout" / "error", and counted. Raises only
    for bad arguments or when no worker process can be started at all (a broken environment).
    """
    if timeout_s <= 0:
        raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
    if predicted is None or not predicted.strip():
        result = MatchResult(correct=False)
    else:
        pred_num, gold_num = plain_number(predicted), plain_number(gold)
        if pred_num is not None and gold_num is not None:
            result = MatchResult(correct=pred_num == gold_num, method="fast")
        elif (pred_num is not None and number_with_words(gold)) or (gold_num is not None
                                                                     and number_with_words(predicted)):
            result = MatchResult(correct=False, method="fast")  # "3 or more" is not 3
        else:
            status, correct, detail = (verifier or default_verifier()).check(predicted, gold, timeout_s)
            result = MatchResult(correct=correct, status=status, method="math_verify", detail=detail)
            if status != "ok":
                log.debug("answer check %s for gold %r: %s", status, gold, detail)
    STATS.record(result)
    if stats is not None:
        stats.record(result)
    return result
