"""Ray wiring for the sharded Sinkhorn: one actor per shard, each holding its persona blocks.

The actors are `ShardHost`s (see `personagen.align.sharded`): they build their part of the
kernel graph in parallel and, every iteration, refit their personas' potentials and return
per-block atom sums.
Only the atom potentials (K floats) go out and K floats per block come back, so the traffic per
iteration does not grow with the number of personas.
"""

from __future__ import annotations

import functools

import numpy as np
import ray

from personagen.align.sharded import ShardFactory, ShardHost, Shards, shard_blocks
from personagen.config import RayConfig
from personagen.runtime.cluster import available_cpus, init_ray

_RemoteHost = ray.remote(ShardHost)


class RayShards(Shards):
    """`Shards` whose hosts are Ray actors; `close()` ends them."""

    remote = True

    def __init__(self, actors: list, n_atoms: int, sizes: list[int]) -> None:
        self.actors = actors
        super().__init__(self._invoke, n_atoms, sizes)

    def _invoke(self, name: str, *args: object) -> list:
        refs = [ray.put(a) if isinstance(a, np.ndarray) and a.size > 4096 else a for a in args]
        return ray.get([getattr(actor, name).remote(*refs) for actor in self.actors])

    def close(self) -> None:
        for actor in self.actors:
            ray.kill(actor)
        self.actors = []


def ray_shards(cfg: RayConfig, shards: int | None = None) -> ShardFactory:
    """A `ShardFactory` that spreads the persona blocks over `shards` Ray actors (default: one
    per CPU of the cluster), on the Ray `cfg` names (started when first needed)."""
    return functools.partial(_ray_shards, cfg=cfg, shards=shards)


def _ray_shards(
    x: np.ndarray,
    capacity: np.ndarray,
    block_rows: int,
    n_atoms: int,
    dtype: type = np.float64,
    *,
    cfg: RayConfig,
    shards: int | None,
) -> RayShards:
    init_ray(cfg)
    cpus = available_cpus()
    ranges = shard_blocks(x.shape[0], block_rows, shards or cpus)
    # More shards than CPUs share them (a fraction each) instead of waiting for a free CPU.
    host = _RemoteHost.options(num_cpus=min(1.0, cpus / len(ranges)))
    actors = [
        host.remote(ray.put(np.ascontiguousarray(x[a:b])), capacity[a:b], a, block_rows, 1, dtype)
        for a, b in ranges
    ]
    return RayShards(actors, n_atoms, [b - a for a, b in ranges])
