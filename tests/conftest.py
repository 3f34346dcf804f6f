"""Shared fixtures: the ../shared data folder (skipped when absent), one local Ray per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("PERSONAGEN_SHARED_DATA", ROOT.parent / "shared" / "data"))


def shared_path(*parts: str) -> Path:
    """A path under ../shared/data; the calling test is skipped when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
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
