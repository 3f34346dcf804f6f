"""`personagen index BANK` and `personagen search BANK QUERY`: the FAISS index of a bank.

Building is `personagen.index.build.build_index`; large flat and IVF-PQ builds are cut into
shards that run as Ray tasks (`index.shards`, or one per CPU of the cluster from
`index.shard_min` vectors on). Searching embeds the query with the bank's model and applies the
`--where` filters before the top k.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa

from personagen.config import Config
from personagen.index.build import build_index
from personagen.index.search import search
from personagen.runtime.cluster import RayTasks


def index(cfg: Config, bank: str | Path) -> dict[str, Any]:
    """Build BANK/index from the bank's embeddings (replacing an older index); returns its info."""
    return build_index(Path(bank).resolve(), cfg.index, seed=cfg.seed, runner=RayTasks(cfg.ray))


def search_bank(
    cfg: Config, bank: str | Path, text: str, k: int, where: list[str], columns: list[str]
) -> pa.Table:
    """The top-`k` personas for `text` among those meeting `where`, with `columns`."""
    return search(
        bank, text, k, filters=where, columns=columns, options=cfg.index, embedder=cfg.embed
    )
