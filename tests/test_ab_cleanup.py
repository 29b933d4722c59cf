"""Nothing outlives the A/B: `python -m fixtures.ab` killed (a cancelled CI job sends SIGTERM, then SIGKILL) while
starting its servers, while measuring and while cleaning up leaves no server process and no git worktree. Two
classifier servers once outlived their A/B (re-parented to init: paused with SIGSTOP, they kept the SIGTERM their
parent's death sent pending), and its worktrees stayed registered."""

import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil

from fixtures.drive.server import REPO_ROOT

PHASES = ("starting", "measuring", "cleaning up")


def registered_worktrees() -> set:
    listed = subprocess.run(["git", "worktree", "list", "--porcelain"], cwd=REPO_ROOT, capture_output=True, text=True).stdout
    return {line.split(" ", 1)[1] for line in listed.splitlines() if line.startswith("worktree ")}


def wait_for(condition, timeout_s: float, poll_s: float = 0.25):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(poll_s)
    return None


def descendants(ab: psutil.Process) -> list:
    try:
        return ab.children(recursive=True)
    except psutil.Error:
        return []


def scratch_of(ab: psutil.Process):
    """The A/B's worktrees folder, once its janitor runs (`--janitor REPO SCRATCH PID`) and a worktree is in it."""
    for child in descendants(ab):
        try:
            command = child.cmdline()
        except psutil.Error:
            continue
        if "--janitor" in command:
            scratch = command[command.index("--janitor") + 2]
            return scratch if any(path.startswith(scratch) for path in registered_worktrees()) else None
    return None


def paused_servers(ab: psutil.Process) -> list:
    """The A/B's server processes, once one side's is stopped (SIGSTOP: the side not timed)."""
    found = []
    for child in descendants(ab):
        try:
            if "servers.classifier" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.Error:
            pass
    mains = [p for p in found if p.ppid() == ab.pid]
    return found if len(mains) == 2 and any(p.status() == psutil.STATUS_STOPPED for p in mains) else []


def kill_while(phase: str, storage: Path) -> tuple:
    """Start an A/A, kill it in `phase`; (phase, the processes it had started, its worktrees folder)."""
    process = subprocess.Popen([sys.executable, "-m", "fixtures.ab", "HEAD", "HEAD", "-k", "cpu-baseline-c1", "--launches", "3",
                                "--pairs", "2", "--storage", str(storage)], cwd=REPO_ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ab = psutil.Process(process.pid)
    try:
        scratch = wait_for(lambda: scratch_of(ab), 180)
        assert scratch, f"{phase}: the A/B made no worktree"
        if phase != "starting":  # measuring: one side paused while the other's rounds run
            assert wait_for(lambda: paused_servers(ab), 240), f"{phase}: no side of the A/B was ever paused"
        started = descendants(ab)
        if phase == "cleaning up":  # SIGTERM starts the A/B's own cleanup, SIGKILL cuts it short
            process.send_signal(signal.SIGTERM)
            time.sleep(0.3)
        process.kill()
        process.wait(timeout=30)
        return phase, started, scratch
    finally:
        if process.poll() is None:
            process.kill()


def test_an_a_b_killed_while_starting_measuring_or_cleaning_up_leaves_no_server_and_no_worktree(tmp_path):
    """The three A/As run at once (each its own worktrees, servers and janitor), then each is checked."""
    with ThreadPoolExecutor(len(PHASES)) as pool:
        killed = list(pool.map(lambda phase: kill_while(phase, tmp_path / phase.replace(" ", "_")), PHASES))
    for phase, started, scratch in killed:
        gone = wait_for(lambda: not [p for p in started if p.is_running() and p.status() != psutil.STATUS_ZOMBIE], 60)
        assert gone, f"{phase}: {[(p.pid, p.status(), p.cmdline()[:4]) for p in started if p.is_running()]}"
        assert wait_for(lambda: not any(path.startswith(scratch) for path in registered_worktrees()), 30), \
            f"{phase}: worktrees left under {scratch}"
        assert not Path(scratch).exists(), f"{phase}: {scratch} left"
