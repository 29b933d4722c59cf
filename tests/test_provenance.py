"""What a run measured beyond its commit: a saved run with an untracked or modified server or benchmark test is
dirty and lists them; the A/B serves each side from its own commit only, and refuses a selection whose files are
not committed."""

import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from fixtures.drive.server import REPO_ROOT, ServerStartError, start_server
from fixtures.drive.spec import ServerSpec
from fixtures.track.provenance import uncommitted


def git(cwd, *args):
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def repo(tmp_path):
    root = tmp_path / "repo"
    for folder in ("servers", "tests/bench", "fixtures"):
        (root / folder).mkdir(parents=True)
    (root / "servers" / "old.py").write_text("A = 1\n")
    (root / "tests" / "bench" / "test_old.py").write_text("B = 1\n")
    (root / "fixtures" / "harness.py").write_text("C = 1\n")
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "-c", "user.name=t", "-c", "user.email=t@localhost", "commit", "-q", "-m", "first")
    return root


def test_untracked_and_modified_servers_and_benchmark_tests_are_listed_and_the_harness_is_not(repo):
    assert uncommitted(repo) == []
    (repo / "servers" / "mine.py").write_text("class MyAPI: ...\n")
    (repo / "tests" / "bench" / "test_old.py").write_text("B = 2\n")
    (repo / "fixtures" / "harness.py").write_text("C = 2\n")
    assert uncommitted(repo) == ["servers/mine.py (untracked)", "tests/bench/test_old.py (modified)"]


def test_a_saved_run_with_an_untracked_server_is_dirty_and_names_it(repo, monkeypatch):
    """git describe --dirty (pytest-benchmark's commit_info) sees no untracked file: the run said dirty: False."""
    from fixtures import plugin
    from fixtures.drive import server

    (repo / "servers" / "mine.py").write_text("class MyAPI: ...\n")
    monkeypatch.setattr(server, "REPO_ROOT", repo)
    config = SimpleNamespace(stash={})
    output = {"commit_info": {"id": "abc", "dirty": False}}
    plugin.pytest_benchmark_update_json(config, [], output)
    assert output["commit_info"]["dirty"] is True
    assert output["commit_info"]["uncommitted_benchmark_files"] == ["servers/mine.py (untracked)"]


def test_a_server_started_from_another_commit_s_tree_never_imports_this_checkout_s_files(tmp_path):
    """The venv's editable install maps `servers` to this checkout: a module that another commit's tree lacks was
    served from here (an A/B's base side served the working copy's untracked server). Here a worktree of HEAD
    without servers/noop.py: its server must fail to start, not serve this checkout's noop."""
    tree = tmp_path / "tree"
    git(REPO_ROOT, "worktree", "add", "--detach", "--quiet", str(tree), "HEAD")
    try:
        (tree / "servers" / "noop.py").unlink()
        spec = ServerSpec(name="noop-elsewhere", module="servers.noop", startup_timeout_s=60)
        with pytest.raises(ServerStartError, match="No module named servers.noop|No module named 'servers.noop'"):
            start_server(spec, tmp_path / "logs", root=tree).stop()
    finally:
        git(REPO_ROOT, "worktree", "remove", "--force", str(tree))


def test_the_a_b_refuses_a_selection_whose_files_are_not_committed(tmp_path):
    """A new server and its test, not committed: both sides would serve the committed tree, which lacks them (or,
    before, the working copy on both sides). Exit 2, saying to commit, before any server starts."""
    listed = git(REPO_ROOT, "ls-files", "-co", "--exclude-standard", "-z").split("\0")
    copy = tmp_path / "copy"
    for name in filter(None, listed):
        if (REPO_ROOT / name).is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO_ROOT / name, copy / name)
    git(copy, "init", "-q")
    git(copy, "add", "-A")
    git(copy, "-c", "user.name=t", "-c", "user.email=t@localhost", "commit", "-q", "-m", "copy")
    test = (REPO_ROOT / "tests" / "bench" / "test_embedding.py").read_text().replace("name=None", "")
    (copy / "tests" / "bench" / "test_mine.py").write_text(test.replace('api="servers.embedding:EmbeddingAPI"',
                                                                        'api="servers.mine:EmbeddingAPI"'))
    shutil.copy2(REPO_ROOT / "servers" / "embedding.py", copy / "servers" / "mine.py")
    done = subprocess.run([sys.executable, "-m", "fixtures.ab", "HEAD", "-k", "mine_batching-c8"], cwd=copy,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    assert "servers/mine.py (untracked)" in done.stderr and "tests/bench/test_mine.py (untracked)" in done.stderr
    assert "commit them first" in done.stderr and "saved" not in done.stdout
    assert not list((copy / ".benchmarks").glob("**/*.json"))
