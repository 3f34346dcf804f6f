"""FAISS index over a bank's persona embeddings: build (sharded on Ray for large banks), load
memory-mapped, and search with attribute filters.

Layout of BANK/index/::

    index.faiss     the FAISS index; FAISS id = row number
    ids.parquet     persona_id of each row
    vectors.npy     (ivfpq) the exact vectors, memory-mapped: re-ranking and filtered search
    lists.ivfdata   (ivfpq, index.ondisk) the inverted lists, on disk
    info.json       kind, size, parameters, the embedding model (queries must use the same)

Kinds (inner product on L2-normalised vectors = cosine): `flat` (exact) for small banks, `hnsw`
up to millions (fast, all vectors in RAM or page cache), `ivfpq` beyond (48-byte codes in RAM,
exact vectors on disk for re-ranking the top k x refine). The thresholds are in IndexConfig and
benchmarks/RESULTS.md says why.

Sharded builds (flat, ivfpq): the driver trains once (IVF-PQ on a seeded sample), Ray tasks each
add a contiguous run of rows to a copy of the trained index and write it, and the driver merges
them in row order with `merge_from`, or for `index.ondisk` with `faiss.contrib.ondisk`. HNSW
graphs cannot be merged in FAISS, so HNSW is built on one node (FAISS uses all its cores).

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
import os
import shutil
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from personagen.adapt.filters import parse_filters, where_mask
from personagen.config import Config, EmbedConfig, IndexConfig
from personagen.errors import PersonagenError
from personagen.io.bank import (
    GROUPS,
    KEY,
    part_files,
    read_bank,
    read_manifest,
    update_manifest,
)

log = logging.getLogger(__name__)

INDEX_DIR = "index"
INDEX_FILE = "index.faiss"
IDS_FILE = "ids.parquet"
VECTORS_FILE = "vectors.npy"
IVFDATA_FILE = "lists.ivfdata"
INFO_FILE = "info.json"
KINDS = ("flat", "hnsw", "ivfpq")

Filters = Sequence[str] | dict[str, object] | None


# ------------------------------------------------------------------------- rows and vectors


@dataclass
class RowPlan:
    """Which rows of which embedding part files become index rows, in index-row order.

    The latest copy of each persona wins, as in `read_group`; only ids are read here, so the
    plan of a bank of millions fits in the driver while vectors stream from the files.
    """

    files: list[Path]
    rows: list[np.ndarray]
    ids: pa.Array
    dim: int
    embed_model: str

    @property
    def n(self) -> int:
        return len(self.ids)

    def offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum([len(r) for r in self.rows])]).astype(np.int64)

    def shards(self, count: int) -> list[list[int]]:
        """Files grouped into at most `count` contiguous runs of about equal row counts."""
        offsets = self.offsets()
        bounds = np.searchsorted(offsets[1:], np.linspace(0, self.n, count + 1)[1:-1], "left")
        groups: list[list[int]] = [[] for _ in range(count)]
        for i in range(len(self.files)):
            groups[int(np.searchsorted(bounds, i, "right"))].append(i)
        return [g for g in groups if g]


def plan_rows(bank: str | Path) -> RowPlan:
    files = part_files(Path(bank) / "embeddings")
    if not files:
        raise PersonagenError(f"no embeddings in {bank}: run `personagen embed {bank}` first")
    ids, file_no, row_no, models = [], [], [], set()
    for i, file in enumerate(files):
        table = pq.read_table(file, columns=[KEY, "embed_model"])
        ids.append(table.column(KEY))
        file_no.append(np.full(table.num_rows, i, np.int32))
        row_no.append(np.arange(table.num_rows, dtype=np.int64))
        models.update(pc.unique(table.column("embed_model")).to_pylist())
    if len(models) != 1:
        raise PersonagenError(
            f"embeddings of several models in {bank} ({', '.join(sorted(map(str, models)))}): "
            "re-embed with `personagen embed --replace`"
        )
    all_ids = pa.chunked_array(ids).combine_chunks()
    position = pa.array(np.arange(len(all_ids), dtype=np.int64))
    last = (
        pa.table({KEY: all_ids, "pos": position})
        .group_by(KEY, use_threads=False)
        .aggregate([("pos", "max")])
        .column("pos_max")
        .to_numpy()
    )
    keep = np.sort(last)
    files_of, rows_of = np.concatenate(file_no)[keep], np.concatenate(row_no)[keep]
    rows = [rows_of[files_of == i] for i in range(len(files))]
    dim = pq.read_schema(files[0]).field("embedding").type.list_size
    return RowPlan(files, rows, all_ids.take(pa.array(keep)), dim, models.pop())


def read_vectors(files: Sequence[Path], rows: Sequence[np.ndarray], dim: int) -> np.ndarray:
    """The selected rows of each file's `embedding` column as one (n, dim) float32 array."""
    parts = []
    for file, wanted in zip(files, rows, strict=True):
        column = pq.read_table(file, columns=["embedding"]).column("embedding").combine_chunks()
        flat = column.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim)
        parts.append(flat[wanted])
    if not parts:
        return np.zeros((0, dim), np.float32)
    return np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)


# ------------------------------------------------------------------------------ index kinds


def choose_kind(n: int, cfg: IndexConfig) -> str:
    if cfg.type != "auto":
        return cfg.type
    if n <= cfg.flat_max:
        return "flat"
    return "hnsw" if n <= cfg.hnsw_max else "ivfpq"


def ivf_nlist(n: int, cfg: IndexConfig) -> int:
    """About 4 sqrt(n) lists (a power of two), at most one per 39 training vectors (FAISS's floor
    for k-means), so raise `train_size` for banks far beyond ten million."""
    if cfg.ivf_nlist is not None:
        return cfg.ivf_nlist
    wanted = round(math.log2(max(1.0, 4 * math.sqrt(n))))
    trainable = math.floor(math.log2(max(1, min(n, cfg.train_size) // 39)))
    return 2 ** min(wanted, trainable)


def new_index(kind: str, dim: int, n: int, cfg: IndexConfig) -> faiss.Index:
    """An empty (untrained) index of `kind` for `n` vectors of `dim`."""
    if kind == "flat":
        return faiss.IndexFlatIP(dim)
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = cfg.hnsw_ef_construction
        return index
    if kind == "ivfpq":
        if dim % cfg.pq_m:
            divisors = [m for m in range(1, dim + 1) if dim % m == 0 and m <= 96]
            raise PersonagenError(f"index.pq_m={cfg.pq_m} must divide {dim}: one of {divisors}")
        quantizer = faiss.IndexFlatIP(dim)
        return faiss.IndexIVFPQ(
            quantizer, dim, ivf_nlist(n, cfg), cfg.pq_m, 8, faiss.METRIC_INNER_PRODUCT
        )
    raise PersonagenError(f"unknown index type {kind!r}; types: {', '.join(KINDS)}")


def add_rows(index: faiss.Index, vectors: np.ndarray, first_row: int) -> None:
    """Add vectors as rows first_row.. : IVF stores these ids; flat and HNSW number rows in the
    order they are added (shards are merged in row order, which keeps the numbering)."""
    if isinstance(index, faiss.IndexIVF):
        ids = np.arange(first_row, first_row + len(vectors), dtype=np.int64)
        index.add_with_ids(vectors, ids)
    else:
        index.add(vectors)


# ------------------------------------------------------------------------------ building


@dataclass
class ShardJob:
    """One shard: a run of files, the first index row it holds, where to write it."""

    files: list[Path]
    rows: list[np.ndarray]
    first_row: int
    dim: int
    trained: Path
    out: Path
    vectors: Path | None
    threads: int = 1


def build_shard(job: ShardJob) -> Path:
    """Add a shard's rows to a copy of the trained index and write it (a Ray task, or local)."""
    faiss.omp_set_num_threads(job.threads)
    index = faiss.read_index(str(job.trained))
    vectors = read_vectors(job.files, job.rows, job.dim)
    add_rows(index, vectors, job.first_row)
    if job.vectors is not None:
        store = np.lib.format.open_memmap(job.vectors, mode="r+")
        store[job.first_row : job.first_row + len(vectors)] = vectors
        store.flush()
        del store
    tmp = job.out.with_name(f".tmp-{job.out.name}")
    faiss.write_index(index, str(tmp))
    os.replace(tmp, job.out)
    return job.out


def build_index(bank: str | Path, cfg: Config) -> dict[str, Any]:
    """Build BANK/index from the bank's embeddings (replacing an older index); returns its info."""
    start = time.perf_counter()
    bank = Path(bank)
    plan = plan_rows(bank)
    icfg = cfg.index
    kind = choose_kind(plan.n, icfg)
    shards = _shard_count(plan, kind, cfg)
    staging = bank / f".{INDEX_DIR}.staging-{uuid.uuid4().hex[:8]}"
    staging.mkdir(parents=True)
    try:
        index = new_index(kind, plan.dim, plan.n, icfg)
        vectors_path = None
        if kind == "ivfpq":
            _train(index, plan, cfg.seed, icfg.train_size)
            vectors_path = staging / VECTORS_FILE
            np.lib.format.open_memmap(
                vectors_path, mode="w+", dtype=np.float32, shape=(plan.n, plan.dim)
            ).flush()
        if shards == 1 and not (kind == "ivfpq" and icfg.ondisk):
            _add_all(index, plan, vectors_path)
        else:
            index = _build_sharded(index, plan, kind, shards, staging, vectors_path, cfg)
        faiss.write_index(index, str(staging / INDEX_FILE))
        pq.write_table(pa.table({KEY: plan.ids}), staging / IDS_FILE)
        info = _info(bank, plan, kind, index, shards, icfg, time.perf_counter() - start)
        (staging / INFO_FILE).write_text(json.dumps(info, indent=2), encoding="utf-8")
        _swap_in(staging, bank / INDEX_DIR)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    update_manifest(bank, index=info)
    return info


def _shard_count(plan: RowPlan, kind: str, cfg: Config) -> int:
    if kind == "hnsw":
        if cfg.index.shards not in (None, 1):
            log.info("HNSW graphs cannot be merged: building on one node, ignoring index.shards")
        return 1
    if cfg.index.shards is not None:
        wanted = cfg.index.shards
    elif plan.n < cfg.index.shard_min:
        wanted = 1
    else:
        from personagen.cluster import available_cpus, init_ray

        init_ray(cfg.ray)
        wanted = available_cpus()
    return max(1, min(wanted, len(plan.files)))


def _train(index: faiss.Index, plan: RowPlan, seed: int, size: int) -> None:
    rng = np.random.default_rng(seed)
    picked = np.sort(rng.choice(plan.n, size=min(size, plan.n), replace=False))
    offsets = plan.offsets()
    rows = [
        plan.rows[i][picked[(picked >= offsets[i]) & (picked < offsets[i + 1])] - offsets[i]]
        for i in range(len(plan.files))
    ]
    sample = read_vectors(plan.files, rows, plan.dim)
    log.info(
        "training IVF-PQ (%d lists) on %d vectors",
        faiss.extract_index_ivf(index).nlist,
        len(sample),
    )
    index.train(sample)


ADD_CHUNK = 262_144
"""Vectors per FAISS add call: large enough for FAISS's threads, small enough for memory."""


def _add_all(index: faiss.Index, plan: RowPlan, vectors_path: Path | None) -> None:
    """Stream the plan's vectors into `index` (and the vector store), logging rate and ETA."""
    store = np.lib.format.open_memmap(vectors_path, mode="r+") if vectors_path else None
    progress = _Progress(plan.n)
    first, files, rows, pending = 0, [], [], 0
    for i, (file, wanted) in enumerate(zip(plan.files, plan.rows, strict=True)):
        files.append(file)
        rows.append(wanted)
        pending += len(wanted)
        if pending < ADD_CHUNK and i < len(plan.files) - 1:
            continue
        vectors = read_vectors(files, rows, plan.dim)
        add_rows(index, vectors, first)
        if store is not None:
            store[first : first + len(vectors)] = vectors
        first += len(vectors)
        progress.update(first)
        files, rows, pending = [], [], 0
    if store is not None:
        store.flush()


class _Progress:
    """Log lines with vectors/s and ETA for index builds (long for HNSW on millions)."""

    def __init__(self, total: int) -> None:
        self.total, self.start = total, time.perf_counter()

    def update(self, done: int) -> None:
        elapsed = time.perf_counter() - self.start
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - done) / rate if rate else float("nan")
        log.info(
            "indexed %s/%s vectors (%.0f/s, ETA %.0fs)", f"{done:,}", f"{self.total:,}", rate, eta
        )


def _build_sharded(
    trained: faiss.Index,
    plan: RowPlan,
    kind: str,
    shards: int,
    staging: Path,
    vectors_path: Path | None,
    cfg: Config,
) -> faiss.Index:
    trained_path = staging / "trained.faiss"
    faiss.write_index(trained, str(trained_path))
    offsets = plan.offsets()
    jobs = [
        ShardJob(
            files=[plan.files[i] for i in group],
            rows=[plan.rows[i] for i in group],
            first_row=int(offsets[group[0]]),
            dim=plan.dim,
            trained=trained_path,
            out=staging / f"shard-{s:04d}.faiss",
            vectors=vectors_path,
        )
        for s, group in enumerate(plan.shards(shards))
    ]
    log.info("building %s index in %d shards", kind, len(jobs))
    if len(jobs) == 1:
        paths = [build_shard(jobs[0])]
    else:
        import ray

        from personagen.cluster import init_ray

        init_ray(cfg.ray)
        task = ray.remote(num_cpus=1)(build_shard)
        paths = ray.get([task.remote(job) for job in jobs])
    merged = faiss.read_index(str(trained_path))
    if kind == "ivfpq" and cfg.index.ondisk:
        from faiss.contrib.ondisk import merge_ondisk

        merge_ondisk(merged, [str(p) for p in paths], str(staging / IVFDATA_FILE))
    else:
        for path in paths:
            shard = faiss.read_index(str(path))
            if isinstance(merged, faiss.IndexIVF):
                merged.merge_from(shard, 0)
            else:
                merged.merge_from(shard)
    for path in [*paths, trained_path]:
        path.unlink()
    return merged


def _info(
    bank: Path,
    plan: RowPlan,
    kind: str,
    index: faiss.Index,
    shards: int,
    cfg: IndexConfig,
    build_s: float,
) -> dict[str, Any]:
    embed = read_manifest(bank).get("embed", {})
    if embed.get("model_id") != plan.embed_model:
        raise PersonagenError(
            f"manifest says the bank is embedded with {embed.get('model_id')}, the vectors say "
            f"{plan.embed_model}: re-run `personagen embed --replace`"
        )
    params: dict[str, Any] = {}
    if kind == "hnsw":
        params = {
            "hnsw_m": cfg.hnsw_m,
            "hnsw_ef_construction": cfg.hnsw_ef_construction,
            "hnsw_ef_search": cfg.hnsw_ef_search,
        }
    elif kind == "ivfpq":
        params = {
            "ivf_nlist": faiss.extract_index_ivf(index).nlist,
            "ivf_nprobe": cfg.ivf_nprobe,
            "pq_m": cfg.pq_m,
            "refine": cfg.refine,
            "ondisk": cfg.ondisk,
        }
    keys = ("model", "path", "model_id", "fingerprint", "backend", "dim", "text", "max_seq_length")
    return {
        "format": 1,
        "kind": kind,
        "n": plan.n,
        "dim": plan.dim,
        "metric": "inner_product (cosine on L2-normalised vectors)",
        "params": params,
        "shards": shards,
        "exact_filter_max": cfg.exact_filter_max,
        "embed": {k: embed.get(k) for k in keys},
        "build_s": round(build_s, 3),
        "built": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _swap_in(staging: Path, final: Path) -> None:
    """Replace `final` by `staging` with two renames (readers never see a half-written index)."""
    old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
    if final.exists():
        final.rename(old)
    staging.rename(final)
    shutil.rmtree(old, ignore_errors=True)


# ------------------------------------------------------------------------------ loading


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

    def embedder(self, cfg: EmbedConfig | None = None) -> Any:
        """The model the bank was embedded with (loaded once), to embed text queries."""
        if self._embedder is None:
            from personagen.adapt.embedder import PACKAGED, load_embedder

            embed = self.info["embed"]
            base = cfg or EmbedConfig()

            model = embed["model"] if embed["model"] in PACKAGED else embed["path"]
            query_cfg = base.model_copy(
                update={
                    "model": model,
                    "backend": embed["backend"],
                    "max_seq_length": embed["max_seq_length"],
                }
            )
            embedder = load_embedder(query_cfg)
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
    cfg: Config | None = None,
) -> pa.Table:
    """Top-k personas per query: columns query, rank, persona_id, score (+ `columns`).

    `queries` are texts (embedded with the bank's model) or an (n, dim) array (normalised here);
    scores are cosine similarities. `filters` are where-strings (see `personagen.adapt.filters`)
    or a {column: value} dict. Query-time parameters come from `cfg.index` when given, else
    from the values the index was built with.
    """
    bi = bank_or_index if isinstance(bank_or_index, BankIndex) else load_index(bank_or_index)
    icfg = cfg.index if cfg is not None else _built_params(bi.info)
    vectors = _query_vectors(bi, queries, cfg)
    conditions = parse_filters(filters)
    mask = None
    if conditions:
        table = bi.columns([c.column for c in conditions])
        mask = where_mask(table, conditions)
    scores, rows = search_rows(bi, vectors, k, mask, icfg)
    return _results(bi, scores, rows, columns)


def search_rows(
    bi: BankIndex, queries: np.ndarray, k: int, mask: np.ndarray | None, cfg: IndexConfig
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
    bi: BankIndex, queries: np.ndarray, k: int, mask: np.ndarray, cfg: IndexConfig
) -> tuple[np.ndarray, np.ndarray]:
    bits = np.packbits(mask, bitorder="little")
    selector = faiss.IDSelectorBitmap(len(mask), faiss.swig_ptr(bits))
    return _index_search(bi, queries, k, selector, float(mask.mean()), cfg)


def _overfetch_flat(
    bi: BankIndex, queries: np.ndarray, k: int, mask: np.ndarray, cfg: IndexConfig
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
    cfg: IndexConfig,
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


def _built_params(info: dict[str, Any]) -> IndexConfig:
    params = {k: v for k, v in info["params"].items() if k in IndexConfig.model_fields}
    params.pop("ivf_nlist", None)
    return IndexConfig(**params, exact_filter_max=info.get("exact_filter_max", 20_000))


def _query_vectors(
    bi: BankIndex, queries: str | Sequence[str] | np.ndarray, cfg: Config | None
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
    return bi.embedder(cfg.embed if cfg is not None else None).encode(list(queries))


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
