"""Interrupting the soak leaves nothing running: Ctrl-C to its process group, SIGTERM, SIGKILL, a timeout's SIGKILL
of its parent shell's process group, its parent shell alone killed, and the soak killed together with its supervisord.

Black-box: the real `python -m polylab.soak` (simulator, supervisord, the copier and its alert listener) in a temporary
directory, interrupted seconds after its copier runs; then /proc must hold no process that came from it, by ancestry
as seen just before the interrupt, or by its command line, working directory or environment naming the directory.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from support import eventually

MARK = "SOAK_INTERRUPT_TEST_DIR"        # set in the soak's environment: every process it starts inherits it
STARTUP_S = 180                         # simulator, credentials, supervisord and a copier, on a loaded machine
# Every process the soak started has exited, from the interrupt on: the copier's drain bounded by supervisord's
# stopwaitsecs (15 s in the soak) when it misses the stop in a respawn, then the listener's, supervisord's and the
# simulator's exits on a loaded machine.
GONE_S = 40
# Interrupted in the chaos (a kill -9 done, the source stream and supervisorctl calls under way); the others as soon
# as the copier runs.
AT_CHAOS = ("sigint_to_group", "sigterm")


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    start: int                          # clock ticks after boot: a pid reused later is another process
    cmdline: str
    mentions_dir: bool


def _processes(tmp: Path) -> dict[int, Proc]:
    """Every live process readable in /proc (zombies excluded: they run nothing)."""
    mark = f"{MARK}={tmp}".encode()
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[0] == "Z":
            continue
        try:
            cwd = os.readlink(entry / "cwd")
            environ = (entry / "environ").read_bytes()
        except OSError:                 # another user's process, or gone
            cwd, environ = "", b""
        mentions = str(tmp) in cmdline or cwd.startswith(str(tmp)) or mark in environ.split(b"\0")
        table[int(entry.name)] = Proc(int(entry.name), int(fields[1]), int(fields[19]), cmdline, mentions)
    return table


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def _descendants(root: int, table: dict[int, Proc]) -> list[Proc]:
    found, todo = [], [root]
    while todo:
        parent = todo.pop()
        for p in table.values():
            if p.ppid == parent:
                found.append(p)
                todo.append(p.pid)
    return found


def _left(tmp: Path, before: list[Proc]) -> list[Proc]:
    """What still runs of the soak: a process it had started (same pid and start time) or one naming its directory."""
    me = os.getpid()
    table = _processes(tmp)
    same = [table[p.pid] for p in before if p.pid in table and table[p.pid].start == p.start]
    named = [p for p in table.values() if p.mentions_dir and p.pid != me]
    return sorted(set(same) | set(named), key=lambda p: p.pid)


def _copier_under_supervisord(tmp: Path) -> Proc | None:
    table = _processes(tmp)
    for p in table.values():
        parent = table.get(p.ppid)
        if p.mentions_dir and "-m copier run" in p.cmdline and "procguard" not in p.cmdline \
                and parent is not None and "supervisord" in parent.cmdline:
            return p
    return None


SOAKS = {"soak": ["polylab.soak", "--compressed-seconds", "40"], "soak-week": ["polylab.soakweek", "--days", "1"]}


def _soak_cmd(workdir: Path, which: str = "soak") -> list[str]:
    module, *args = SOAKS[which]
    return [sys.executable, "-m", module, *args, "--workdir", str(workdir)]


def _launch(how: str, tmp: Path, which: str = "soak") -> tuple[subprocess.Popen, int]:
    """The process the test holds and the soak's pid (the same unless a shell sits between them)."""
    env = {**os.environ, MARK: str(tmp)}
    soak = _soak_cmd(tmp / "soak", which)
    shell = ["bash", "-c", " ".join(soak) + '; rc=$?; echo "soak exited $rc"; exit $rc']
    # A shell stays the soak's parent (the command after the soak keeps bash from exec'ing it).
    argv = {"timeout_kills_group": ["timeout", "-s", "KILL", "600", *shell],
            "parent_shell_killed": shell}.get(how, soak)
    with open(tmp / "soak.out", "wb") as out, open(tmp / "soak.err", "wb") as err:
        launcher = subprocess.Popen(argv, cwd=tmp, env=env, stdout=out, stderr=err, start_new_session=True)
    if argv is soak:
        return launcher, launcher.pid
    under = eventually(lambda: next((p for p in _descendants(launcher.pid, _processes(tmp))
                                     if p.cmdline.startswith(f"{sys.executable} -m polylab.soak")), None),
                       30, 0.1, "the soak under its shell")
    return launcher, under.pid


def _interrupt(how: str, launcher: subprocess.Popen, soak_pid: int, tmp: Path) -> None:
    if how == "sigint_to_group":
        os.killpg(launcher.pid, signal.SIGINT)          # what a terminal's Ctrl-C does
    elif how == "sigterm":
        os.kill(soak_pid, signal.SIGTERM)
    elif how == "sigkill":
        os.kill(soak_pid, signal.SIGKILL)
    elif how == "timeout_kills_group":
        # SIGALRM is timeout's own timer: it SIGKILLs the shell, then its whole process group (the soak included).
        os.kill(launcher.pid, signal.SIGALRM)
    elif how == "parent_shell_killed":
        os.kill(launcher.pid, signal.SIGKILL)          # the shell only: the soak is orphaned, not signalled
    elif how == "sigkill_with_supervisord":
        supervisord = next(p for p in _processes(tmp).values()
                           if p.mentions_dir and "supervisord -c" in p.cmdline)
        os.kill(supervisord.pid, signal.SIGKILL)
        os.kill(soak_pid, signal.SIGKILL)


def _kill_leftovers(tmp: Path) -> None:
    """A failed case must not leave its processes on the machine: SIGKILL what names the test's directory."""
    for p in _left(tmp, []):
        try:
            os.kill(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _started(tmp: Path, launcher: subprocess.Popen) -> list[Proc]:
    """What the soak runs now: its descendants, and a daemon it started that is no longer one (it names the
    directory)."""
    table = _processes(tmp)
    return list({*_descendants(launcher.pid, table), *(p for p in table.values() if p.mentions_dir)})


def _interrupt_and_wait(how: str, launcher: subprocess.Popen, soak_pid: int, tmp: Path, before: list[Proc]) -> str:
    """Interrupt the soak, require every process of it gone within GONE_S, and return its stderr (no traceback)."""
    _interrupt(how, launcher, soak_pid, tmp)
    try:
        launcher.wait(GONE_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the soak had not exited {GONE_S} s after {how}; its stderr ends:\n"
                    + "\n".join(_read(tmp / "soak.err").splitlines()[-15:]) + "\nsupervisord.log ends:\n"
                    + "\n".join(_read(tmp / "soak" / "supervisord.log").splitlines()[-15:]))
    try:
        eventually(lambda: not _left(tmp, before), GONE_S, 0.2, "every process of the soak to exit")
    except TimeoutError:
        pytest.fail(f"still running after {how}: " + "; ".join(f"{p.pid} {p.cmdline[:120]}"
                                                               for p in _left(tmp, before)))
    err = (tmp / "soak.err").read_text()
    assert "Traceback" not in err
    return err


def _clean_up(tmp: Path, launcher: subprocess.Popen) -> None:
    _kill_leftovers(tmp)
    if launcher.poll() is None:
        launcher.kill()
        launcher.wait()


@pytest.mark.parametrize("how", ["sigint_to_group", "sigterm", "sigkill", "timeout_kills_group", "parent_shell_killed",
                                 "sigkill_with_supervisord"])
def test_soak_interrupted_leaves_no_process(tmp_path, how):
    launcher, soak_pid = _launch(how, tmp_path)
    try:
        eventually(lambda: _copier_under_supervisord(tmp_path), STARTUP_S, 0.2, "a copier running under supervisord")
        if how in AT_CHAOS:
            eventually(lambda: "terminated by SIGKILL" in _read(tmp_path / "soak" / "supervisord.log"), STARTUP_S, 0.2,
                       "the soak's first kill -9 of the copier")
        before = _started(tmp_path, launcher)
        started = " | ".join(p.cmdline for p in before)
        for part in ("polysim.cli serve", "supervisord -c", "copier.alert_listener"):     # the copier may be down
            assert part in started, f"{part} not running before the interrupt: {started}"
        err = _interrupt_and_wait(how, launcher, soak_pid, tmp_path, before)
        if how in ("sigint_to_group", "sigterm", "parent_shell_killed"):
            signame = "SIGINT" if how == "sigint_to_group" else "SIGTERM"
            assert err.splitlines()[-1] == f"soak: interrupted by {signame}; every process it started is stopped"
        if how in ("sigint_to_group", "sigterm"):
            assert launcher.returncode == -(signal.SIGINT if how == "sigint_to_group" else signal.SIGTERM)
    finally:
        _clean_up(tmp_path, launcher)


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_soak_week_interrupted_leaves_no_process(tmp_path, how):
    """The week-long soak runs under the same guard: interrupted once its copier runs, nothing of it is left."""
    launcher, soak_pid = _launch(how, tmp_path, "soak-week")
    try:
        eventually(lambda: _copier_under_supervisord(tmp_path), STARTUP_S, 0.2, "a copier running under supervisord")
        before = _started(tmp_path, launcher)
        assert "supervisord -c" in " | ".join(p.cmdline for p in before)
        err = _interrupt_and_wait(how, launcher, soak_pid, tmp_path, before)
        if how == "sigterm":
            assert err.splitlines()[-1] == "soak-week: interrupted by SIGTERM; every process it started is stopped"
            assert launcher.returncode == -signal.SIGTERM
    finally:
        _clean_up(tmp_path, launcher)
