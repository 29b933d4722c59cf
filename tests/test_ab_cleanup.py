"""Nothing outlives the A/B: `python -m fixtures.ab` killed (a cancelled CI job sends SIGTERM, then SIGKILL) while
starting its servers, while measuring and while cleaning up leaves no server process and no git worktree. Two
classifier servers once outlived their A/B (re-parented to init: paused with SIGSTOP, they kept the SIGTERM their
parent's death sent pending), and its worktrees stayed registered."""

import signal
import subprocess
import sys
import time

import psutil
import pytest

from fixtures.drive.server import REPO_ROOT

# Not marked slow: make test hands slow files out first, and these A/Bs' servers beside a timed inner session (the
# new-LitAPI test's rounds) pushed its round-to-round CV past its bound (0.108 > 0.10); after them they wait less.

def ab_worktrees() -> set:
    listed = subprocess.run(["git", "worktree", "list", "--porcelain"], cwd=REPO_ROOT, capture_output=True, text=True).stdout
    return {line.split(" ", 1)[1] for line in listed.splitlines() if line.startswith("worktree ") and "litserve-bench-ab-" in line}


def wait_for(condition, timeout_s: float, poll_s: float = 0.25):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(poll_s)
    return None


def servers_of(ab: psutil.Process, sides: int = 2) -> list:
    """The A/B's server processes (main and workers), once `sides` sides' main processes run."""
    try:
        found = [p for p in ab.children(recursive=True) if "servers.classifier" in " ".join(p.cmdline())]
    except psutil.Error:
        return []
    return found if sum(1 for p in found if p.ppid() == ab.pid) >= sides else []


@pytest.mark.parametrize("phase", ["starting", "measuring", "cleaning up"])
def test_a_killed_a_b_leaves_no_server_and_no_worktree(tmp_path, phase):
    before = ab_worktrees()
    process = subprocess.Popen([sys.executable, "-m", "fixtures.ab", "HEAD", "HEAD", "-k", "cpu-baseline-c1", "--launches", "3",
                                "--pairs", "2", "--storage", str(tmp_path / "storage")], cwd=REPO_ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ab = psutil.Process(process.pid)
    try:
        ours = wait_for(lambda: ab_worktrees() - before, 120)
        assert ours, "the A/B made no worktree"
        if phase == "starting":  # the first server's process runs, not yet ready (its model loads for seconds)
            assert wait_for(lambda: servers_of(ab, sides=1), 120, 0.1), "the A/B started no server"
            started = ab.children(recursive=True)
            process.kill()
        else:
            assert wait_for(lambda: servers_of(ab), 180), "the A/B's servers never started"
            # measuring: one side's server paused (SIGSTOP) while the other's rounds run
            paused = wait_for(lambda: [p for p in servers_of(ab) if p.status() == psutil.STATUS_STOPPED], 120, 0.2)
            assert paused, "no side was paused"
            started = ab.children(recursive=True)
            if phase == "measuring":
                process.kill()
            else:  # SIGTERM starts the A/B's own cleanup, SIGKILL cuts it short
                process.send_signal(signal.SIGTERM)
                time.sleep(0.3)
                process.kill()
        process.wait(timeout=30)
        survivors = wait_for(lambda: not [p for p in started if p.is_running() and p.status() != psutil.STATUS_ZOMBIE], 30)
        assert survivors, [(p.pid, p.cmdline()) for p in started if p.is_running()]
        assert wait_for(lambda: not (ab_worktrees() & ours), 30), f"worktrees left: {ab_worktrees() & ours}"
    finally:
        if process.poll() is None:
            process.kill()
