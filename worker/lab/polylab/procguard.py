"""Processes a lab run starts die with it: on Ctrl-C, SIGTERM, SIGKILL, or the death of whatever started the run.

Three layers, each covering what the one before cannot:
- a run's long-lived children are started by `spawn`: each leads a session of its own (a terminal's Ctrl-C or a
  timeout's kill of the run's process group reaches only the run, which stops them in order) and carries a Linux
  parent-death signal (if the run itself is SIGKILLed, the kernel sends them SIGTERM);
- `run_guarded` turns SIGINT, SIGTERM and SIGHUP into an `Interrupted` exception in the main greenlet, so the run's
  own `finally` blocks stop what they started, then stops whatever is still running (SIGTERM, a bounded wait, then
  SIGKILL of every process left in each child's session) and dies of the signal it received, after one line;
- `python -m polylab.procguard -- CMD...` execs CMD with a parent-death signal: supervisord's programs run under it,
  so a copier never outlives a supervisord killed with -9.

The parent-death signal is Linux's: it fires when the *thread* that forked the child exits, so children are forked
from the main thread (under gevent every greenlet runs on it).
"""
from __future__ import annotations

import ctypes
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

PR_SET_PDEATHSIG = 1            # <linux/prctl.h>
INTERRUPTS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
SWEEP_S = 5.0                   # how long SIGKILLed processes get to disappear from /proc

# In the environment of every process `spawn` starts, inherited by theirs: the sweep kills only what carries it, so a
# session id reused by an unrelated process after ours exited is never touched.
MARK = "POLYLAB_SPAWNED_BY"
_token = f"{os.getpid()}.{secrets.token_hex(8)}"
_libc = ctypes.CDLL(None, use_errno=True)
# The run's children still running, in the order they started (pid -> process).
_children: dict[int, subprocess.Popen] = {}


class Interrupted(BaseException):
    """A signal asked the run to stop. Not an Exception: no `except Exception` on the way up swallows it."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Ask the kernel to send this process `sig` when its parent (the thread that forked it) exits."""
    if _libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_PDEATHSIG): {os.strerror(err)}")


def dies_with_me() -> Callable[[], None]:
    """A Popen preexec_fn: the child is sent SIGTERM when this process (its forking thread) exits."""
    parent = os.getpid()

    def preexec() -> None:
        die_with_parent(signal.SIGTERM)
        if os.getppid() != parent:      # the parent died between the fork and the prctl: the signal never comes
            os.kill(os.getpid(), signal.SIGTERM)
    return preexec


def spawn(args: Sequence[str], **popen: Any) -> subprocess.Popen:
    """Popen in a session of its own, sent SIGTERM if this process dies; `stop` or `stop_all` ends it."""
    env = {**(popen.pop("env", None) or os.environ), MARK: _token}
    proc = subprocess.Popen(args, start_new_session=True, preexec_fn=dies_with_me(), env=env, **popen)
    _children[proc.pid] = proc
    return proc


def _table() -> list[tuple[int, int, int]]:
    """(pid, parent pid, session id) of every live (not zombie) process, read from /proc."""
    rows = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:                 # exited while we looked
            continue
        # Fields after the command name, which may itself hold spaces and parentheses: state ppid pgrp session ...
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[0] != "Z":
            rows.append((int(entry.name), int(fields[1]), int(fields[3])))
    return rows


def _ours(pid: int) -> bool:
    try:
        return f"{MARK}={_token}".encode() in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:                     # gone, or another user's
        return False


def session_members(sid: int) -> list[int]:
    """The live processes of session `sid` that this process's `spawn` started, or their descendants."""
    return [pid for pid, _, session in _table() if session == sid and _ours(pid)]


def children_of(parent: int) -> list[int]:
    return [pid for pid, ppid, _ in _table() if ppid == parent]


def kill_session(sid: int, timeout: float = SWEEP_S) -> list[int]:
    """SIGKILL every process of session `sid` until none is left; returns the pids still there after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        left = session_members(sid)
        if not left or time.monotonic() > deadline:
            return left
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.05)


def stop(proc: subprocess.Popen, grace_s: float) -> list[int]:
    """SIGTERM a child started by `spawn`, give it `grace_s` to exit, then SIGKILL whatever is left in its session
    (an orphaned grandchild included). Returns the pids that would not die (none, unless the kernel refuses)."""
    try:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                pass
    finally:
        left = kill_session(proc.pid)
        try:
            proc.wait(SWEEP_S)
        except subprocess.TimeoutExpired:
            left.append(proc.pid)
        _children.pop(proc.pid, None)
    return left


def stop_all(grace_s: float) -> list[int]:
    """Stop every child still running, the last started first."""
    left: list[int] = []
    for proc in reversed(list(_children.values())):
        left += stop(proc, grace_s)
    return left


class _Handler:
    """The first interrupt is raised in the main greenlet; later ones (while the run stops) are ignored."""

    def __init__(self) -> None:
        self.armed = True

    def __call__(self, signum: int, frame: object) -> None:
        if not self.armed:
            return
        self.armed = False
        exc = Interrupted(signum)
        gevent = sys.modules.get("gevent")
        if gevent is None:
            raise exc                   # signal handlers run in the main thread
        hub = gevent.get_hub()
        root = hub.parent
        if gevent.getcurrent() is root:
            raise exc
        # Raised in another greenlet (a patched thread would swallow it) or in the hub: throw it into the main one.
        hub.loop.run_callback(root.throw, exc)


def run_guarded(prog: str, body: Callable[[], int], grace_s: float = 30.0) -> int:
    """Run body() so that an interrupt or the death of this process's parent leaves no child running.

    A signal the caller ignores stays ignored (`nohup` or a background job of a script), and a run whose SIGHUP is
    ignored was asked to outlive its parent, so it does not die with it. On an interrupt: one line on stderr, then
    death by the same signal, as a shell expects of a program it interrupted."""
    handler = _Handler()
    for sig in INTERRUPTS:
        if signal.getsignal(sig) is not signal.SIG_IGN:
            signal.signal(sig, handler)
    if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
        parent = os.getppid()
        die_with_parent(signal.SIGTERM)
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGTERM)
    rc = 0
    interrupt: Interrupted | None = None
    try:
        rc = body()
    except Interrupted as exc:
        interrupt = exc
    finally:
        handler.armed = False
        while True:
            try:
                left = stop_all(grace_s)
                break
            except Interrupted as exc:  # thrown into the stopping itself by a signal that came in another greenlet
                interrupt = exc
    if interrupt is None:
        return rc
    outcome = "every process it started is stopped" if not left else f"processes still running: {left}"
    print(f"{prog}: interrupted by {interrupt.name}; {outcome}", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    signal.signal(interrupt.signum, signal.SIG_DFL)
    os.kill(os.getpid(), interrupt.signum)
    return 128 + interrupt.signum       # only if the signal is blocked


def main(argv: Sequence[str]) -> None:
    """`python -m polylab.procguard -- CMD [ARGS...]`: exec CMD, to be sent SIGTERM when its parent dies."""
    args = list(argv[1:] if argv and argv[0] == "--" else argv)
    if not args:
        raise SystemExit("usage: python -m polylab.procguard -- CMD [ARGS...]")
    die_with_parent(signal.SIGTERM)
    os.execvp(args[0], args)


if __name__ == "__main__":
    main(sys.argv[1:])
