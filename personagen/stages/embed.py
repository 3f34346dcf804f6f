"""The embed stage: persona texts -> L2-normalised float32 vectors (the bank's `embeddings` group).

What is embedded: by default the persona's narrative alone (`embed.text=narrative`): it is the
persona itself (what the simulation prompts with and what queries describe), while `attributes`
are the miner's lossy extraction of the same narrative. `attributes+narrative` puts a compact
attribute line first, so the facts queries filter on most (place, occupation, age) are inside the
model's token window even when a long narrative is cut (MiniLM reads 256 word pieces; the summary
counts the texts that were longer).

Batch functions (the actor pools are `personagen.runtime.embed`): `embed_rows` for a table of
texts, `embed_chained` inside the build's stream, `split_embedded` at the sink. A row whose text
is empty, or whose vector cannot be computed or is not finite, becomes a failure with the reason.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from personagen.index.embedder import Embedder
from personagen.io.bank import KEY, conform, embedding_type, group_schema
from personagen.llm.usage import USAGE_FIELDS

log = logging.getLogger(__name__)

STAGE = "embed"
GROUP = "embeddings"

_ATTRIBUTE_LABELS = (
    ("age_range", "Age"),
    ("gender", "Gender"),
    ("occupation", "Occupation"),
    ("location", "Location"),
    ("interests", "Interests"),
    ("values", "Values"),
)


# ------------------------------------------------------------------------------ the text


def persona_text(narrative: str | None, attributes: dict[str, Any] | None, mode: str) -> str:
    """The text embedded for one persona ("" when there is nothing to embed)."""
    narrative = (narrative or "").strip()
    if mode == "narrative" or not narrative:
        return narrative
    parts = []
    for key, label in _ATTRIBUTE_LABELS:
        value = (attributes or {}).get(key)
        if isinstance(value, list):
            value = ", ".join(str(v) for v in value if v)
        if value:
            parts.append(f"{label}: {value}.")
    return " ".join(parts) + "\n" + narrative if parts else narrative


def persona_texts(personas: pa.Table, mode: str) -> list[str]:
    narratives = personas.column("narrative").to_pylist()
    attributes = (
        personas.column("attributes").to_pylist()
        if "attributes" in personas.column_names
        else [None] * len(narratives)
    )
    return [persona_text(n, a, mode) for n, a in zip(narratives, attributes, strict=True)]


# ------------------------------------------------------------------------ the batch function


def embed_rows(batch: pa.Table, embedder: Embedder) -> pa.Table:
    """(persona_id, text) rows -> (persona_id, embedding, embed_model, error, truncated).

    A batch that fails as a whole is retried row by row, so one bad text costs only its own row.
    """
    ids = batch.column(KEY).to_pylist()
    texts = batch.column("text").to_pylist()
    vectors = np.zeros((len(texts), embedder.dim), np.float32)
    errors: list[str | None] = [None] * len(texts)
    try:
        vectors[:] = embedder.encode(texts)
    except Exception as exc:
        log.warning("batch of %d failed (%s); retrying row by row", len(texts), exc)
        for i, text in enumerate(texts):
            try:
                vectors[i] = embedder.encode([text])[0]
            except Exception as row_exc:
                errors[i] = f"encode failed: {type(row_exc).__name__}: {row_exc}"
    norms = np.linalg.norm(vectors, axis=1)
    for i in np.flatnonzero(~np.isfinite(vectors).all(axis=1) | (np.abs(norms - 1) > 1e-3)):
        errors[i] = errors[i] or f"bad vector (norm {norms[i]:.3g}, finite={np.isfinite(norms[i])})"
    truncated = embedder.too_long(texts)
    flat = pa.array(vectors.reshape(-1), pa.float32())
    return pa.table(
        {
            KEY: pa.array(ids, pa.string()),
            "embedding": pa.FixedSizeListArray.from_arrays(flat, embedder.dim),
            "embed_model": pa.array([embedder.model_id] * len(ids), pa.string()),
            "error": pa.array(errors, pa.string()),
            "truncated": pa.array(truncated, pa.bool_()),
        }
    )


def embed_chained(
    batch: pa.Table, embedder: Embedder, mode: str, after: str
) -> tuple[pa.Table, dict[str, int]]:
    """The embed step inside a chained stream (`personagen build`): rows that passed `after`
    get the `embeddings` columns, every row gets the stage bookkeeping columns the bank sink
    routes by (`embed__error`, `embed__attempts`, zero token usage), like an LLM stage's.
    Returns the batch and its progress counts."""
    reached = pc.and_(
        pc.is_null(batch.column(f"{after}__error")),
        pc.is_valid(batch.column(f"{after}__attempts")),
    )
    rows = batch.filter(reached)
    texts = pa.array(persona_texts(rows, mode), pa.string())
    embedded = embed_rows(pa.table({KEY: rows.column(KEY), "text": texts}), embedder)
    mask = reached.to_numpy(zero_copy_only=False)
    at = pa.array(np.cumsum(mask) - 1, mask=~mask)  # row -> its embedded row (null: none)
    for name in ("embedding", "embed_model"):
        batch = batch.append_column(name, embedded.column(name).take(at))
    batch = batch.append_column(f"{STAGE}__error", embedded.column("error").take(at))
    ones = pc.if_else(reached, pa.scalar(1, pa.int32()), pa.scalar(None, pa.int32()))
    batch = batch.append_column(f"{STAGE}__attempts", ones)
    zeros = pa.array(np.zeros(batch.num_rows, np.int64))
    for name in USAGE_FIELDS:
        batch = batch.append_column(f"{STAGE}__{name}", zeros)
    failed = pc.sum(pc.is_valid(embedded.column("error"))).as_py() or 0
    counts = {
        f"{STAGE}:rows": rows.num_rows,
        f"{STAGE}:failed": failed,
        f"{STAGE}:skipped": batch.num_rows - rows.num_rows,
    }
    return batch, counts


def split_embedded(
    table: pa.Table,
) -> tuple[dict[str, pa.Table], Counter[str], list[dict[str, Any]]]:
    """Sink side: good rows -> the embeddings group; failed rows -> failure records."""
    counts: Counter[str] = Counter()
    failed = pc.is_valid(table.column("error"))
    counts["truncated"] = pc.sum(table.column("truncated")).as_py() or 0
    records = [
        {"persona_id": pid, "reason": reason}
        for pid, reason in zip(
            table.column(KEY).filter(failed).to_pylist(),
            table.column("error").filter(failed).to_pylist(),
            strict=True,
        )
    ]
    counts["failed"] = len(records)
    good = table.filter(pc.invert(failed))
    counts["embedded"] = good.num_rows
    if good.num_rows == 0:
        return {}, counts, records
    dim = good.schema.field("embedding").type.list_size
    good = good.set_column(
        good.schema.get_field_index("embedding"),
        pa.field("embedding", embedding_type(dim)),
        good.column("embedding").cast(embedding_type(dim)),
    )
    return {GROUP: conform(good, group_schema(GROUP, dim))}, counts, records
