"""The embed stage on Ray Data: actor pools of the embedding model (one model per actor).

Two uses: `embed_table` embeds a table of (persona_id, text) rows into BANK/embeddings
(`personagen embed`), and `map_embed_stage` adds the embed step to a build's stream, after
mining. The batch functions are `personagen.stages.embed`.
"""

from __future__ import annotations

import functools
import logging
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa

from personagen.config import EmbedConfig
from personagen.errors import PersonagenError
from personagen.index.embedder import load_embedder
from personagen.runtime.cluster import available_cpus
from personagen.runtime.progress import run_with_progress
from personagen.runtime.sinks import PartSink
from personagen.stages.embed import GROUP, embed_chained, embed_rows, split_embedded

log = logging.getLogger(__name__)


class EmbedActor:
    """One model per Ray actor; called on batches of (persona_id, text)."""

    def __init__(self, cfg: EmbedConfig, threads: int) -> None:
        self.embedder = load_embedder(cfg, threads)

    def __call__(self, batch: pa.Table) -> pa.Table:
        return embed_rows(batch, self.embedder)


class ChainedEmbedActor:
    """The embed step inside a chained stream (see `embed_chained`), reporting progress."""

    def __init__(self, cfg: EmbedConfig, threads: int, after: str, progress: Any = None) -> None:
        self.embedder = load_embedder(cfg, threads)
        self.mode = cfg.text
        self.after = after
        self.progress = progress

    def __call__(self, batch: pa.Table) -> pa.Table:
        batch, counts = embed_chained(batch, self.embedder, self.mode, self.after)
        if self.progress is not None:
            self.progress.add.remote(counts)
        return batch


def actor_layout(cfg: EmbedConfig, cpus: int, gpus: int) -> tuple[int, int, int]:
    """(actors, CPU threads per actor, GPUs per actor).

    On CPUs, by default one single-threaded actor per core (benchmarks/RESULTS.md: on 2 cores
    two 1-thread actors beat one 2-thread actor); on `cuda`, one actor per GPU.
    """
    threads = min(cfg.threads, cpus)
    if cfg.device.startswith("cuda") and cfg.backend == "torch":
        if gpus < 1:
            raise PersonagenError(f"embed.device={cfg.device} but the Ray cluster has no GPU")
        return cfg.actors or gpus, threads, 1
    return cfg.actors or max(1, cpus // threads), threads, 0


def _cluster_gpus() -> int:
    import ray

    return int(ray.cluster_resources().get("GPU", 0))


def map_embed_stage(
    ds: Any,
    cfg: EmbedConfig,
    after: str,
    progress: Any = None,
    actor_cpus: float | None = None,
    batch_size: int | None = None,
) -> Any:
    """Add the embed step to a chained Ray dataset (see `ChainedEmbedActor`). On CPUs it runs
    one actor unless `embed.actors` says otherwise: it shares the cores with the LLM stages and
    is far faster than they are; on GPUs, one actor per GPU. `actor_cpus` is what each actor
    claims from Ray's scheduler (default: its threads); `batch_size` caps `embed.batch_size`, so
    that rows are not held back waiting for a full batch in a stream of small blocks."""
    import ray

    actors, threads, gpus_each = actor_layout(cfg, available_cpus(), _cluster_gpus())
    if not gpus_each:
        actors = cfg.actors or 1
    return ds.map_batches(
        ChainedEmbedActor,
        fn_constructor_kwargs={
            "cfg": cfg,
            "threads": threads,
            "after": after,
            "progress": progress,
        },
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=threads if actor_cpus is None else actor_cpus,
        num_gpus=gpus_each,
        batch_size=min(cfg.batch_size, batch_size or cfg.batch_size),
        batch_format="pyarrow",
    )


def embed_table(
    bank: Path, todo: pa.Table, cfg: EmbedConfig
) -> tuple[Counter[str], list[dict[str, Any]]]:
    """Embed (persona_id, text) rows into BANK/embeddings; returns the counters and the
    failure records of the rows that could not be embedded."""
    import ray

    actors, threads, gpus_each = actor_layout(cfg, available_cpus(), _cluster_gpus())
    size = cfg.batch_size
    log.info(
        "embedding %d personas with %s: %d actors x %d threads%s, batches of %d",
        todo.num_rows,
        cfg.model,
        actors,
        threads,
        " + 1 GPU" if gpus_each else "",
        size,
    )
    ds = ray.data.from_arrow(list(_slices(todo, size)))
    ds = ds.map_batches(
        EmbedActor,
        fn_constructor_kwargs={"cfg": cfg, "threads": threads},
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=threads,
        num_gpus=gpus_each,
        batch_size=size,
        batch_format="pyarrow",
    )
    sink = PartSink(bank, split_embedded, GROUP)
    # Writing a part takes milliseconds: the writes claim no CPU slot, so they never wait for
    # cores the actors hold (with the actors holding every core Ray could not schedule them),
    # and one writer per actor keeps up without starting a crowd of worker processes.
    write = functools.partial(
        ds.write_datasink, sink, ray_remote_args={"num_cpus": 0}, concurrency=actors
    )
    run_with_progress(write, bank / GROUP, todo.num_rows, "embed")
    return sink.counts, sink.records


def _slices(table: pa.Table, size: int) -> Iterable[pa.Table]:
    for offset in range(0, table.num_rows, size):
        yield table.slice(offset, size)
