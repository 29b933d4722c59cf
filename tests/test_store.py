"""The history store in git (fixtures/track/store.py), against a local bare repository as the remote: racing
publishers lose no run, a re-run is another sample of its commit, a crashed session and a pull request publish
nothing, and a pull on a fresh clone reproduces the change points the publisher saw."""

import copy
import json
import subprocess
import threading

import pytest

from fixtures.track.changepoints import change_points, per_commit
from fixtures.track.history import load_history, series
from fixtures.track.store import StoreError, main as store_main, publish, pull, run_path_in_store, session_record, store_run_files
from tests.test_changepoints import STEP_AT, COMMITS, write_runs
from tests.test_history import real_run  # noqa: F401  (the fixture: a real saved run)


@pytest.fixture
def remote(tmp_path):
    bare = tmp_path / "remote.git"
    subprocess.run(["git", "init", "-q", "--bare", str(bare)], check=True)
    return bare


def branch_files(bare, branch="benchmarks"):
    done = subprocess.run(["git", "--git-dir", str(bare), "ls-tree", "-r", "--name-only", branch],
                          capture_output=True, text=True)
    return sorted(done.stdout.split()) if done.returncode == 0 else []


def saved(tmp_path, real_run, name, commit, when):  # noqa: F811
    run = copy.deepcopy(real_run)
    run["commit_info"] = {**run["commit_info"], "id": commit}
    run["datetime"] = when
    path = tmp_path / name
    path.write_text(json.dumps(run))
    return path


def test_a_real_saved_run_says_its_session_finished_and_lands_where_asv_would_put_it(real_run):  # noqa: F811
    assert real_run["session"] == {"status": "OK", "complete": True}
    path = run_path_in_store(real_run, "github-hosted-cpu", "123", 2)
    assert str(path).startswith(f"runs/github-hosted-cpu/{real_run['datetime'][:7]}/")
    assert path.name == f"{real_run['commit_info']['id']}-123-2.json"
    assert session_record(pytest.ExitCode.INTERRUPTED) == {"status": "INTERRUPTED", "complete": False}
    assert session_record(pytest.ExitCode.TESTS_FAILED)["complete"]  # failed tests are a whole report


def test_two_publishers_racing_lose_no_run(tmp_path, remote, real_run):  # noqa: F811
    runs = [saved(tmp_path, real_run, f"run{i}.json", "a" * 40, f"2026-11-30T10:0{i}:00") for i in range(3)]
    errors = []

    def publisher(i):
        try:
            publish(runs[i], str(remote), f"runner-{i}", f"run{i}", environ={})
        except StoreError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=publisher, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors
    assert [name.split("/")[1] for name in branch_files(remote)] == ["runner-0", "runner-1", "runner-2"]


def test_a_rerun_of_one_commit_is_two_samples_of_that_commit(tmp_path, remote, real_run):  # noqa: F811
    first = saved(tmp_path, real_run, "first.json", "b" * 40, "2026-11-30T10:00:00")
    again = saved(tmp_path, real_run, "again.json", "b" * 40, "2026-11-30T11:00:00")
    publish(first, str(remote), "runner", "1", environ={})
    publish(again, str(remote), "runner", "1", attempt=2, environ={})  # the same CI run, retried
    with pytest.raises(StoreError, match="immutable"):
        publish(again, str(remote), "runner", "1", attempt=2, environ={})
    fresh = tmp_path / "fresh"
    assert len(pull(str(remote), fresh)) == 2
    runs = load_history(fresh)
    benchmark_id = next(iter(runs[0].benchmarks))
    points = series(runs, benchmark_id, "rps")
    assert len(points) == 2 and len(per_commit(points)) == 1 and per_commit(points)[0][0].commit == "b" * 40


def test_a_crashed_session_and_a_pull_request_publish_nothing(tmp_path, remote, real_run):  # noqa: F811
    crashed = copy.deepcopy(real_run)
    crashed["session"] = session_record(pytest.ExitCode.INTERRUPTED)
    path = tmp_path / "crashed.json"
    path.write_text(json.dumps(crashed))
    with pytest.raises(StoreError, match="did not finish its report"):
        publish(path, str(remote), "runner", "1", environ={})
    whole = saved(tmp_path, real_run, "whole.json", "c" * 40, "2026-11-30T10:00:00")
    with pytest.raises(StoreError, match="pull_request event never publishes"):
        publish(whole, str(remote), "runner", "1", environ={"GITHUB_EVENT_NAME": "pull_request"})
    assert branch_files(remote) == []
    # From the command line: no machine id, no publish (never the hostname).
    assert store_main(["publish", "--remote", str(remote), "--run", str(whole), "--storage", str(tmp_path)]) == 2


def test_pull_on_a_fresh_clone_reproduces_the_change_points_the_publisher_saw(tmp_path, remote, real_run):  # noqa: F811
    publisher = tmp_path / "publisher"
    write_runs(publisher, real_run, [100.0] * (STEP_AT - 1) + [80.0] * (COMMITS - STEP_AT + 1), seed=0)
    for i, path in enumerate(sorted(publisher.glob("*/*.json"))):
        publish(path, str(remote), "runner", str(i), environ={}, storage=publisher)
    seen = change_points(load_history(publisher), subject_of=lambda commit: "")
    assert seen  # the step at commit 8
    fresh = tmp_path / "fresh-clone" / ".benchmarks"
    assert len(pull(str(remote), fresh)) == COMMITS
    assert change_points(load_history(fresh), subject_of=lambda commit: "") == seen
    # A pull beside the runs saved here counts each run once.
    pull(str(remote), publisher)
    assert len(store_run_files(publisher)) == COMMITS and len(load_history(publisher)) == COMMITS
    assert change_points(load_history(publisher), subject_of=lambda commit: "") == seen


def test_the_checkouts_included_auth_header_reaches_the_scratch_repositories(tmp_path):
    # actions/checkout@v6 writes the token to a file outside the repository, included by includeIf.gitdir.
    from fixtures.track.store import credentials_of

    repo = tmp_path / "checkout"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    included = tmp_path / "runner-temp" / "git-credentials.config"
    included.parent.mkdir()
    included.write_text('[http "https://github.com/"]\n\textraheader = AUTHORIZATION: basic c2VjcmV0\n')
    subprocess.run(["git", "config", f"includeIf.gitdir:{repo}/.git.path", str(included)], cwd=repo, check=True)
    assert credentials_of(repo) == ("-c", "http.https://github.com/.extraheader=AUTHORIZATION: basic c2VjcmV0")
    assert credentials_of(tmp_path) == ()  # not a repository: nothing to carry
