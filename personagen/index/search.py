"""Loading a bank's FAISS index (memory-mapped) and searching it with attribute filters.

Filters (`kept=true`, `attributes.location~japan`, ...) become a row mask, applied so that the
result is the best k among allowed rows, not a top-k that filtering then thins out:
- at most `exact_filter_max` allowed rows: exact search over those rows' vectors (exact, and
  faster than walking a graph or lists where almost every entry is rejected);
- flat: BLAS search of the top 2k/selectivity rows, filtered (exact; queries left short are
  redone with a selector), because FAISS's selector path on a flat index gives up BLAS;
- HNSW / IVF-PQ: a FAISS `IDSelectorBitmap` in `SearchParameters`, with efSearch / nprobe
  scaled by 1/selectivity so the search still meets enough allowed rows.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from personagen.errors import PersonagenError
from personagen.index.build import IDS_FILE, INDEX_DIR, INDEX_FILE, INFO_FILE, VECTORS_FILE
from personagen.index.embedder import PACKAGED, load_embedder
from personagen.index.filters import parse_filters, where_mask
from personagen.index.options import EmbedderOptions, IndexOptions
from personagen.io.bank import GROUPS, KEY, read_bank, read_manifest

log = logging.getLogger(__name__)

Filters = Sequence[str] | dict[str, object] | None


@dataclass
class BankIndex:
    """A loaded index: the FAISS index, row -> persona_id, and what it was built from."""

    index: faiss.Index
    ids: pa.Array
    info: dict[str, Any]
    folder: Path
    vectors: np.ndarray | None = None
    _embedder: Any = field(default=None, repr=False)
    _columns: pa.Table | None = field(default=None, repr=False)

    @property
    def kind(self) -> str:
        return str(self.info["kind"])

    @property
    def bank(self) -> Path:
        return self.folder.parent

    @property
    def n(self) -> int:
        return len(self.ids)

    def embedder(self, options: EmbedderOptions | None = None) -> Any:
        """The model the bank was embedded with (loaded once), to embed text queries; `options`
        say how it runs (device, batch size), never which model it is."""
        if self._embedder is None:
            embed = self.info["embed"]
            base = options or EmbedderOptions()

            model = embed["model"] if embed["model"] in PACKAGED else embed.get("path")
            query_cfg = base.model_copy(
                update={
                    "model": model,
                    "backend": embed.get("backend", base.backend),
                    "max_seq_length": embed.get("max_seq_length", base.max_seq_length),
                }
            )
            try:
                if not model:
                    raise PersonagenError("its folder is not recorded")
                embedder = load_embedder(query_cfg)
            except PersonagenError as exc:
                raise PersonagenError(
                    f"the index of {self.bank} was built with {embed.get('model_id')}, which "
                    f"cannot be loaded here ({exc}): re-embed the bank with a model you have "
                    "(`personagen embed --replace`) and re-index it"
                ) from None
            if embedder.model_id != embed["model_id"]:
                raise PersonagenError(
                    f"the index was built with {embed['model_id']} but {model} is now "
                    f"{embedder.model_id}: re-embed (`personagen embed --replace`) and re-index"
                )
            self._embedder = embedder
        return self._embedder

    def columns(self, names: Sequence[str]) -> pa.Table:
        """Bank columns aligned with index rows (loaded from the bank once, then cached)."""
        wanted = [n for n in dict.fromkeys(names) if n != KEY]
        have = [n for n in self._columns.column_names if n != KEY] if self._columns else []
        missing = [n for n in wanted if n not in have]
        if missing or self._columns is None:
            names = [*have, *missing]
            groups = {g for g, schema in GROUPS.items() if set(names) & set(schema.names)}
            table = read_bank(self.bank, columns=[KEY, *names], groups=groups | {"personas"})
            positions = pc.index_in(self.ids, value_set=table.column(KEY))
            self._columns = table.take(positions)
        return self._columns.select([KEY, *wanted])

    def exact_vectors(self, rows: np.ndarray) -> np.ndarray:
        """The stored vectors of some rows (exact for flat/HNSW storage and ivfpq's vectors.npy)."""
        if self.vectors is not None:
            return np.ascontiguousarray(self.vectors[rows], dtype=np.float32)
        return self.index.reconstruct_batch(rows.astype(np.int64))


def load_index(bank: str | Path, mmap: bool = True) -> BankIndex:
    """Load BANK/index; with `mmap` the vectors and codes stay on disk, paged in on use."""
    folder = Path(bank) / INDEX_DIR
    if not (folder / INFO_FILE).exists():
        raise PersonagenError(f"no index in {bank}: run `personagen index {bank}` first")
    info = json.loads((folder / INFO_FILE).read_text(encoding="utf-8"))
    ondisk = info["kind"] == "ivfpq" and info["params"].get("ondisk")
    flags = faiss.IO_FLAG_READ_ONLY
    if ondisk:
        flags |= faiss.IO_FLAG_ONDISK_SAME_DIR
    elif mmap:
        flags |= faiss.IO_FLAG_MMAP_IFC
    index = faiss.read_index(str(folder / INDEX_FILE), flags)
    ids = pq.read_table(folder / IDS_FILE).column(KEY).combine_chunks()
    vectors = None
    if (folder / VECTORS_FILE).exists():
        vectors = np.load(folder / VECTORS_FILE, mmap_mode="r" if mmap else None)
    if index.ntotal != len(ids):
        raise PersonagenError(
            f"index in {folder} is damaged: {index.ntotal} vectors, {len(ids)} ids"
        )
    changed = read_manifest(bank).get("embed", {}).get("changed")
    if changed and changed > info["built"]:
        log.warning(
            "the index of %s (built %s) predates embeddings added %s: run `personagen index`",
            bank,
            info["built"],
            changed,
        )
    return BankIndex(index, ids, info, folder, vectors)


# ------------------------------------------------------------------------------ searching


def search(
    bank_or_index: str | Path | BankIndex,
    queries: str | Sequence[str] | np.ndarray,
    k: int = 10,
    filters: Filters = None,
    columns: Sequence[str] = (),
    options: IndexOptions | None = None,
    embedder: EmbedderOptions | None = None,
) -> pa.Table:
    """Top-k personas per query: columns query, rank, persona_id, score (+ `columns`).

    `queries` are texts (embedded with the bank's model) or an (n, dim) array (normalised here);
    scores are cosine similarities. `filters` are where-strings (see `personagen.index.filters`)
    or a {column: value} dict. Query-time parameters come from `options` when given, else
    from the values the index was built with; `embedder` says how the query model runs.
    """
    bi = bank_or_index if isinstance(bank_or_index, BankIndex) else load_index(bank_or_index)
    icfg = options if options is not None else _built_params(bi.info)
    vectors = _query_vectors(bi, queries, embedder)
    conditions = parse_filters(filters)
    mask = None
    if conditions:
        table = bi.columns([c.column for c in conditions])
        mask = where_mask(table, conditions)
    scores, rows = search_rows(bi, vectors, k, mask, icfg)
    return _results(bi, scores, rows, columns)


def search_rows(
    bi: BankIndex, queries: np.ndarray, k: int, mask: np.ndarray | None, cfg: IndexOptions
) -> tuple[np.ndarray, np.ndarray]:
    """(scores, rows) arrays of shape (n_queries, k); row -1 where fewer than k matched."""
    if k < 1:
        raise PersonagenError(f"k must be at least 1, got {k}")
    n_q = len(queries)
    if mask is None:
        return _index_search(bi, queries, k, None, 1.0, cfg)
    allowed = int(mask.sum())
    if allowed == 0:
        return np.full((n_q, k), -np.inf, np.float32), np.full((n_q, k), -1, np.int64)
    if allowed <= cfg.exact_filter_max:
        return _exact_subset(bi, queries, k, np.flatnonzero(mask))
    if bi.kind == "flat":
        return _overfetch_flat(bi, queries, k, mask, cfg)
    return _selector_search(bi, queries, k, mask, cfg)


def _selector_search(
    bi: BankIndex, queries: np.ndarray, k: int, mask: np.ndarray, cfg: IndexOptions
) -> tuple[np.ndarray, np.ndarray]:
    bits = np.packbits(mask, bitorder="little")
    selector = faiss.IDSelectorBitmap(len(mask), faiss.swig_ptr(bits))
    return _index_search(bi, queries, k, selector, float(mask.mean()), cfg)


def _overfetch_flat(
    bi: BankIndex, queries: np.ndarray, k: int, mask: np.ndarray, cfg: IndexOptions
) -> tuple[np.ndarray, np.ndarray]:
    """Exact filtered search on a flat index at BLAS speed.

    FAISS's flat search with a selector scores vectors one by one (no BLAS), which is ~15x
    slower at 1M; the exact top `fetch` rows from BLAS contain the exact filtered top k whenever
    k of them are allowed. Queries that come up short are redone with the selector.
    """
    fetch = min(bi.n, math.ceil(2 * k / float(mask.mean())) + k)
    scores, rows = _index_search(bi, queries, fetch, None, 1.0, cfg)
    keep = (rows >= 0) & mask[np.maximum(rows, 0)]
    order = np.argsort(~keep, axis=1, kind="stable")[:, :k]
    top_rows = np.where(np.take_along_axis(keep, order, 1), np.take_along_axis(rows, order, 1), -1)
    top_scores = np.where(top_rows >= 0, np.take_along_axis(scores, order, 1), -np.inf)
    short = np.flatnonzero((top_rows < 0).any(axis=1))
    if len(short) and fetch < bi.n:
        top_scores[short], top_rows[short] = _selector_search(bi, queries[short], k, mask, cfg)
    return _pad(top_scores.astype(np.float32), top_rows, k)


def _index_search(
    bi: BankIndex,
    queries: np.ndarray,
    k: int,
    selector: Any,
    selectivity: float,
    cfg: IndexOptions,
) -> tuple[np.ndarray, np.ndarray]:
    index = bi.index
    fetch = k
    if bi.kind == "hnsw":
        ef = max(cfg.hnsw_ef_search, k)
        params = faiss.SearchParametersHNSW(efSearch=math.ceil(ef / selectivity))
    elif bi.kind == "ivfpq":
        nlist = faiss.extract_index_ivf(index).nlist
        params = faiss.SearchParametersIVF(
            nprobe=min(nlist, math.ceil(cfg.ivf_nprobe / selectivity))
        )
        if cfg.refine and bi.vectors is not None:
            fetch = k * cfg.refine
    else:
        params = faiss.SearchParameters()
    if selector is not None:
        params.sel = selector
    fetch = min(fetch, bi.n)
    scores, rows = index.search(queries, fetch, params=params)
    if fetch != k:
        scores, rows = _rerank(queries, rows, bi.vectors, k)
    return _pad(scores, rows, k)


def _rerank(
    queries: np.ndarray, rows: np.ndarray, vectors: np.ndarray, k: int, chunk: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """Exact scores of each query's candidates (from the stored vectors), best k kept."""
    scores = np.full(rows.shape, -np.inf, np.float32)
    for a in range(0, len(rows), chunk):
        block = rows[a : a + chunk]
        flat = np.maximum(block, 0).ravel()
        order = np.argsort(flat)  # read the memory-mapped rows in file order
        gathered = np.empty((len(flat), vectors.shape[1]), np.float32)
        gathered[order] = vectors[flat[order]]
        block_scores = np.einsum(
            "qd,qkd->qk", queries[a : a + chunk], gathered.reshape(*block.shape, -1)
        )
        scores[a : a + chunk] = np.where(block >= 0, block_scores, -np.inf)
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    top_rows = np.take_along_axis(rows, top, axis=1)
    top_scores = np.take_along_axis(scores, top, axis=1)
    top_rows[~np.isfinite(top_scores)] = -1
    return top_scores, top_rows


def _exact_subset(
    bi: BankIndex, queries: np.ndarray, k: int, rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    vectors = bi.exact_vectors(rows)
    scores, local = faiss.knn(
        queries, vectors, min(k, len(rows)), metric=faiss.METRIC_INNER_PRODUCT
    )
    found = np.where(local >= 0, rows[np.maximum(local, 0)], -1)
    return _pad(scores, found, k)


def _pad(scores: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    if rows.shape[1] >= k:
        return scores[:, :k], rows[:, :k]
    extra = k - rows.shape[1]
    return (
        np.pad(scores, ((0, 0), (0, extra)), constant_values=-np.inf),
        np.pad(rows, ((0, 0), (0, extra)), constant_values=-1),
    )


def _built_params(info: dict[str, Any]) -> IndexOptions:
    params = {k: v for k, v in info["params"].items() if k in IndexOptions.model_fields}
    params.pop("ivf_nlist", None)
    return IndexOptions(**params, exact_filter_max=info.get("exact_filter_max", 20_000))


def _query_vectors(
    bi: BankIndex, queries: str | Sequence[str] | np.ndarray, embedder: EmbedderOptions | None
) -> np.ndarray:
    if isinstance(queries, str):
        queries = [queries]
    if isinstance(queries, np.ndarray):
        vectors = np.atleast_2d(np.asarray(queries, np.float32))
        if vectors.shape[1] != bi.info["dim"]:
            raise PersonagenError(
                f"query vectors have {vectors.shape[1]} dimensions, the index {bi.info['dim']}"
            )
        vectors = np.ascontiguousarray(vectors)
        faiss.normalize_L2(vectors)
        return vectors
    return bi.embedder(embedder).encode(list(queries))


def _results(
    bi: BankIndex, scores: np.ndarray, rows: np.ndarray, columns: Sequence[str]
) -> pa.Table:
    found = rows >= 0
    query_no, rank = np.nonzero(found)
    flat_rows = rows[found]
    table = pa.table(
        {
            "query": pa.array(query_no.astype(np.int32)),
            "rank": pa.array((rank + 1).astype(np.int32)),
            KEY: bi.ids.take(pa.array(flat_rows)),
            "score": pa.array(scores[found].astype(np.float32)),
        }
    )
    if columns:
        extra = bi.columns(columns).take(pa.array(flat_rows))
        for name in extra.column_names:
            if name != KEY:
                table = table.append_column(extra.schema.field(name), extra.column(name))
    return table
