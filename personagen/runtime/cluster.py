"""Connecting to Ray: a local instance by default, a cluster with `ray.address` or RAY_ADDRESS."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import TypeVar

from personagen.config import RayConfig

T = TypeVar("T")
R = TypeVar("R")

log = logging.getLogger(__name__)


def init_ray(cfg: RayConfig) -> None:
    """Start or join Ray once per process; a no-op when Ray is already initialised.

    Without `ray.address` or RAY_ADDRESS a new local instance is started, even when another Ray
    runs on this machine (`ray.init()` alone would join it); `ray.address=auto` joins it.
    """
    import ray

    if ray.is_initialized():
        return
    address = cfg.address or os.environ.get("RAY_ADDRESS")
    if address:
        log.info("connecting to Ray cluster at %s", address)
        ray.init(address=address, log_to_driver=True)
    else:
        store = cfg.object_store_mb * 2**20 if cfg.object_store_mb else None
        ray.init(
            address="local",
            num_cpus=cfg.num_cpus,
            object_store_memory=store,
            include_dashboard=False,
            log_to_driver=True,
            configure_logging=False,
        )
    _quiet_ray_data()


def _quiet_ray_data() -> None:
    """Keep Ray Data's progress bars, drop its per-operator chatter from our console."""
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = True
    ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)


def available_cpus() -> int:
    import ray

    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def ray_map(fn: Callable[[T], R], items: Sequence[T], num_cpus: float = 1) -> list[R]:
    """`fn` over `items` as Ray tasks (one CPU each by default), results in item order."""
    import ray

    task = ray.remote(num_cpus=num_cpus)(fn)
    return ray.get([task.remote(item) for item in items])


class RayTasks:
    """Jobs (e.g. index shards) as Ray tasks of one CPU each; Ray starts when first needed."""

    def __init__(self, cfg: RayConfig) -> None:
        self.cfg = cfg

    def cpus(self) -> int:
        init_ray(self.cfg)
        return available_cpus()

    def map(self, fn: Callable[[T], R], jobs: Sequence[T]) -> list[R]:
        init_ray(self.cfg)
        return ray_map(fn, jobs)
