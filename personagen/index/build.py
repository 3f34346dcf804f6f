"""Building the FAISS index over a bank's persona embeddings (sharded for large banks).

Layout of BANK/index/::

    index.faiss     the FAISS index; FAISS id = row number
    ids.parquet     persona_id of each row
    vectors.npy     (ivfpq) the exact vectors, memory-mapped: re-ranking and filtered search
    lists.ivfdata   (ivfpq, index.ondisk) the inverted lists, on disk
    info.json       kind, size, parameters, the embedding model (queries must use the same)

Kinds (inner product on L2-normalised vectors = cosine): `flat` (exact) for small banks, `hnsw`
up to millions (fast, all vectors in RAM or page cache), `ivfpq` beyond (48-byte codes in RAM,
exact vectors on disk for re-ranking the top k x refine). The thresholds are in IndexOptions and
benchmarks/RESULTS.md says why.

Sharded builds (flat, ivfpq): the driver trains once (IVF-PQ on a seeded sample), tasks (Ray
tasks when the caller maps them there, see `personagen.runtime.cluster.ray_map`) each add a
contiguous run of rows to a copy of the trained index and write it, and the driver merges
them in row order with `merge_from`, or for `index.ondisk` with `faiss.contrib.ondisk`. HNSW
graphs cannot be merged in FAISS, so HNSW is built on one node (FAISS uses all its cores).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from personagen.errors import PersonagenError
from personagen.index.options import IndexOptions
from personagen.io.bank import KEY, damaged, part_files, read_manifest, update_manifest

log = logging.getLogger(__name__)

INDEX_DIR = "index"
INDEX_FILE = "index.faiss"
IDS_FILE = "ids.parquet"
VECTORS_FILE = "vectors.npy"
IVFDATA_FILE = "lists.ivfdata"
INFO_FILE = "info.json"
KINDS = ("flat", "hnsw", "ivfpq")


class ShardRunner(Protocol):
    """Where shard builds run: `cpus()` to share them among, `map(build_shard, jobs)` to run
    them (the shard files, in job order)."""

    def cpus(self) -> int: ...

    def map(self, fn: Callable[[ShardJob], Path], jobs: list[ShardJob]) -> list[Path]: ...


class LocalShards:
    """Shards built one after the other in this process."""

    def cpus(self) -> int:
        return 1

    def map(self, fn: Callable[[ShardJob], Path], jobs: list[ShardJob]) -> list[Path]:
        return [fn(job) for job in jobs]


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
        try:
            table = pq.read_table(file, columns=[KEY, "embed_model"])
        except (pa.ArrowException, OSError) as exc:
            raise damaged(Path(bank) / "embeddings", exc) from None
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


def choose_kind(n: int, cfg: IndexOptions) -> str:
    if cfg.type != "auto":
        return cfg.type
    if n <= cfg.flat_max:
        return "flat"
    return "hnsw" if n <= cfg.hnsw_max else "ivfpq"


def ivf_nlist(n: int, cfg: IndexOptions) -> int:
    """About 4 sqrt(n) lists (a power of two), at most one per 39 training vectors (FAISS's floor
    for k-means), so raise `train_size` for banks far beyond ten million."""
    if cfg.ivf_nlist is not None:
        return cfg.ivf_nlist
    wanted = round(math.log2(max(1.0, 4 * math.sqrt(n))))
    trainable = math.floor(math.log2(max(1, min(n, cfg.train_size) // 39)))
    return 2 ** min(wanted, trainable)


def new_index(kind: str, dim: int, n: int, cfg: IndexOptions) -> faiss.Index:
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


def build_index(
    bank: str | Path,
    options: IndexOptions,
    *,
    seed: int = 0,
    runner: ShardRunner | None = None,
) -> dict[str, Any]:
    """Build BANK/index from the bank's embeddings (replacing an older index); returns its info.

    Large flat and IVF-PQ builds are cut into `index.shards` shards (default: one per CPU of
    the `runner` from `index.shard_min` vectors on), built by the runner."""
    start = time.perf_counter()
    bank = Path(bank)
    runner = runner or LocalShards()
    plan = plan_rows(bank)
    kind = choose_kind(plan.n, options)
    shards = shard_count(plan, kind, options, runner)
    staging = bank / f".{INDEX_DIR}.staging-{uuid.uuid4().hex[:8]}"
    staging.mkdir(parents=True)
    try:
        index = new_index(kind, plan.dim, plan.n, options)
        vectors_path = None
        if kind == "ivfpq":
            _train(index, plan, seed, options.train_size)
            vectors_path = staging / VECTORS_FILE
            np.lib.format.open_memmap(
                vectors_path, mode="w+", dtype=np.float32, shape=(plan.n, plan.dim)
            ).flush()
        if shards == 1 and not (kind == "ivfpq" and options.ondisk):
            _add_all(index, plan, vectors_path)
        else:
            jobs = _shard_jobs(index, plan, shards, staging, vectors_path)
            log.info("building %s index in %d shards", kind, len(jobs))
            paths = runner.map(build_shard, jobs)
            index = _merge(jobs[0].trained, paths, kind, options.ondisk, staging)
        faiss.write_index(index, str(staging / INDEX_FILE))
        pq.write_table(pa.table({KEY: plan.ids}), staging / IDS_FILE)
        info = _info(bank, plan, kind, index, shards, options, time.perf_counter() - start)
        (staging / INFO_FILE).write_text(json.dumps(info, indent=2), encoding="utf-8")
        _swap_in(staging, bank / INDEX_DIR)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    update_manifest(bank, index=info)
    return info


def shard_count(plan: RowPlan, kind: str, options: IndexOptions, runner: ShardRunner) -> int:
    if kind == "hnsw":
        if options.shards not in (None, 1):
            log.info("HNSW graphs cannot be merged: building on one node, ignoring index.shards")
        return 1
    if options.shards is not None:
        wanted = options.shards
    elif plan.n < options.shard_min:
        wanted = 1
    else:
        wanted = runner.cpus()
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


def _shard_jobs(
    trained: faiss.Index,
    plan: RowPlan,
    shards: int,
    staging: Path,
    vectors_path: Path | None,
) -> list[ShardJob]:
    trained_path = staging / "trained.faiss"
    faiss.write_index(trained, str(trained_path))
    offsets = plan.offsets()
    return [
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


def _merge(
    trained_path: Path, paths: list[Path], kind: str, ondisk: bool, staging: Path
) -> faiss.Index:
    """The shards merged in row order into the trained index (inverted lists on disk for
    IVF-PQ with `ondisk`); the shard files are removed."""
    merged = faiss.read_index(str(trained_path))
    if kind == "ivfpq" and ondisk:
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
    cfg: IndexOptions,
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
