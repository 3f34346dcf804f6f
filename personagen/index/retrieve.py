"""Candidate retrieval for `personagen adapt`: top-k personas for a query, with filters, and a
description of what was found (how many, how similar), for the console and the report."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from personagen.errors import PersonagenError
from personagen.index.filters import parse_filters, where_mask
from personagen.index.options import EmbedderOptions, IndexOptions
from personagen.index.search import load_index, search

QUANTILES = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)
QUANTILE_NAMES = ("min", "p10", "p25", "median", "p75", "p90", "max")


@dataclass
class Retrieval:
    """The candidates (persona_id, rank, similarity, narrative, attributes, in rank order) and
    `stats`: bank and filter sizes, k, counts, and the similarity distribution."""

    table: pa.Table
    stats: dict[str, Any]


def retrieve(
    bank: str | Path,
    query: str,
    k: int,
    filters: Sequence[str],
    min_similarity: float | None = None,
    *,
    options: IndexOptions | None = None,
    embedder: EmbedderOptions | None = None,
) -> Retrieval:
    """The top-`k` personas of `bank` for `query` among those that meet every filter; those
    below `min_similarity` (cosine) are counted and left out."""
    if not query.strip():
        raise PersonagenError("the query is empty: describe the personas to retrieve")
    bi = load_index(bank)
    conditions = parse_filters(list(filters))
    allowed = bi.n
    if conditions:
        allowed = int(where_mask(bi.columns([c.column for c in conditions]), conditions).sum())
    found = search(
        bi,
        query,
        k,
        list(filters),
        columns=["narrative", "attributes"],
        options=options,
        embedder=embedder,
    )
    found = found.drop_columns(["query"])
    found = found.rename_columns(["similarity" if n == "score" else n for n in found.column_names])
    scores = found.column("similarity").to_numpy(zero_copy_only=False).astype(np.float64)
    below = np.zeros(len(scores), bool) if min_similarity is None else scores < min_similarity
    table = found.filter(pa.array(~below))
    stats = {
        "query": query,
        "bank_personas": bi.n,
        "index": bi.kind,
        "model_id": bi.info["embed"]["model_id"],
        "filters": [str(c) for c in conditions],
        "allowed_by_filters": allowed,
        "k": k,
        "retrieved": len(scores),
        "below_min_similarity": int(below.sum()),
        "min_similarity": min_similarity,
        "candidates": table.num_rows,
        "similarity": similarity_summary(scores),
        "similarity_candidates": similarity_summary(scores[~below]),
    }
    return Retrieval(table, stats)


def similarity_summary(scores: np.ndarray, bins: int = 10) -> dict[str, Any]:
    """Count, mean, quantiles and a histogram (`bins` equal-width bins over the range)."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.size == 0:
        return {"n": 0}
    lo, hi = float(scores.min()), float(scores.max())
    counts, edges = np.histogram(scores, bins=bins, range=(lo, hi if hi > lo else lo + 1e-6))
    return {
        "n": int(scores.size),
        "mean": float(scores.mean()),
        **dict(zip(QUANTILE_NAMES, np.quantile(scores, QUANTILES).tolist(), strict=True)),
        "histogram": {"edges": edges.tolist(), "counts": counts.tolist()},
    }


def describe_similarity(stats: dict[str, Any]) -> list[str]:
    """Console lines: what was retrieved and its similarity distribution as a text histogram."""
    sim = stats["similarity"]
    lines = [
        f"retrieved {stats['retrieved']:,} of k={stats['k']:,} personas for {stats['query']!r} "
        f"({stats['allowed_by_filters']:,} of {stats['bank_personas']:,} meet the filters"
        f"{': ' + ', '.join(stats['filters']) if stats['filters'] else ''}; "
        f"{stats['index']} index, {stats['model_id']})"
    ]
    if stats["below_min_similarity"]:
        lines.append(
            f"{stats['below_min_similarity']:,} below min similarity {stats['min_similarity']:g}: "
            f"{stats['candidates']:,} candidates"
        )
    if sim["n"] == 0:
        return lines
    lines.append(
        "cosine similarity: "
        + ", ".join(f"{name} {sim[name]:.3f}" for name in ("min", "p10", "median", "p90", "max"))
    )
    counts, edges = sim["histogram"]["counts"], sim["histogram"]["edges"]
    widest = max(counts) or 1
    for count, a, b in zip(counts, edges[:-1], edges[1:], strict=True):
        lines.append(f"  {a:6.3f}-{b:6.3f} {'#' * round(30 * count / widest):<30} {count:,}")
    return lines
