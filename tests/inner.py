"""The environment of a pytest session that a functional test starts: the outer session's PYTEST_ variables left
out (an xdist worker's would confuse the inner pytest), and the cache that lets every such session of one
`make test` measure the device peaks and the client ceiling once (fixtures/measure/inner_session_cache.py)."""

import os
from pathlib import Path

from fixtures.measure.inner_session_cache import INNER_SESSION_CACHE_ENV


def inner_session_env(tmp_path: Path, drop: tuple = ("PYTEST_",)) -> dict:
    """tmp_path: the calling test's; its session's temporary root (shared by xdist's workers) holds the cache."""
    root = tmp_path.parent.parent if "PYTEST_XDIST_WORKER" in os.environ else tmp_path.parent
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    return env | {INNER_SESSION_CACHE_ENV: str(root / "inner-session-cache")}
