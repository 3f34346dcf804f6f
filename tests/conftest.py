"""Shared fixtures: the ../shared data folder (skipped when absent), one local Ray per session.

`PERSONAGEN_SHARED_DATA` points the tests at another copy of the data; with
`PERSONAGEN_REQUIRE_SHARED_DATA=1` (set by CI) a test whose data is absent fails instead of
being skipped. A test that reads the data must carry the `shared_data` marker, or it fails.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("PERSONAGEN_SHARED_DATA", ROOT.parent / "shared" / "data"))
REQUIRE_SHARED_DATA = os.environ.get("PERSONAGEN_REQUIRE_SHARED_DATA") == "1"

_running: pytest.Item | None = None
"""The test being run (read by `shared_path`)."""


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    global _running
    _running = item
    try:
        return (yield)
    finally:
        _running = None


def shared_path(*parts: str) -> Path:
    """A path under ../shared/data for a test marked `shared_data`; the test is skipped when
    the path is absent (fails with PERSONAGEN_REQUIRE_SHARED_DATA=1)."""
    if _running is None or _running.get_closest_marker("shared_data") is None:
        where = _running.nodeid if _running is not None else "code outside a running test"
        pytest.fail(
            f"{where} reads the shared data without the shared_data marker (mark the test; "
            "import the helper as `from conftest import shared_path`)",
            pytrace=False,
        )
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        if REQUIRE_SHARED_DATA:
            pytest.fail(
                f"the shared data set {path} is absent (PERSONAGEN_REQUIRE_SHARED_DATA=1)",
                pytrace=False,
            )
        pytest.skip(f"needs the shared data set {path} (absent on this machine)")
    return path


@pytest.fixture(scope="session")
def ray_local():
    """A small local Ray instance shared by the tests of one session."""
    import ray

    from personagen.config import RayConfig
    from personagen.runtime.cluster import init_ray

    init_ray(RayConfig(num_cpus=2, object_store_mb=512))
    yield ray
    ray.shutdown()
