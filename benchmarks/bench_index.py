"""FAISS index benchmark: personagen's index (build_index / search) vs raw FAISS calls, same run.

Synthetic data: N unit vectors of DIM dimensions drawn around 2,000 random cluster centres
(noise chosen so that the mean cosine to the 10th nearest neighbour is about 0.6, as for real
sentence embeddings of a large corpus; the table prints it), queries from the same distribution.
For each index kind it reports build time, queries/s (a batch of queries, and one at a time),
recall@10 against exact search, and the same for raw FAISS built from the in-memory array with
the same parameters, plus filtered search (50% and 1% of personas allowed).

    python benchmarks/bench_index.py                      # 1M x 384, kinds flat,hnsw,ivfpq
    python benchmarks/bench_index.py --n 200000 --kinds hnsw
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa

from personagen.config import Config
from personagen.index.build import build_index, ivf_nlist
from personagen.index.search import load_index, search, search_rows
from personagen.io.bank import GROUPS, embedding_type, update_manifest, write_group
from personagen.runtime.cluster import RayTasks

MODEL_ID = "synthetic@000000000000"


def clustered(n: int, dim: int, centres: np.ndarray, seed: int, noise: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), np.float32)
    for a in range(0, n, 100_000):
        b = min(n, a + 100_000)
        x = centres[rng.integers(0, len(centres), b - a)]
        x = x + rng.normal(size=(b - a, dim)).astype(np.float32) * (noise / math.sqrt(dim))
        out[a:b] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def write_bank(bank: Path, x: np.ndarray, parts: int) -> None:
    """The vectors as a bank's embeddings, plus personas whose attributes the filters use."""
    n, dim = x.shape
    schema = GROUPS["personas"]
    attribute_type = schema.field("attributes").type
    for chunk in np.array_split(np.arange(n), parts):
        a, b = int(chunk[0]), int(chunk[-1]) + 1
        ids = pa.array([f"p{i}" for i in range(a, b)])
        values = {
            "gender": pa.array(np.where(np.arange(a, b) % 2 == 0, "female", "male")),
            "location": pa.array(np.where(np.arange(a, b) % 100 == 0, "Reykjavik", "elsewhere")),
        }
        attributes = pa.StructArray.from_arrays(
            [values.get(f.name, pa.nulls(b - a, f.type)) for f in attribute_type],
            fields=list(attribute_type),
        )
        columns = {name: pa.nulls(b - a, schema.field(name).type) for name in schema.names}
        write_group(
            bank, "personas", pa.table(columns | {"persona_id": ids, "attributes": attributes})
        )
        flat = pa.array(x[a:b].reshape(-1))
        write_group(
            bank,
            "embeddings",
            pa.table(
                {
                    "persona_id": ids,
                    "embedding": pa.FixedSizeListArray.from_arrays(flat, dim).cast(
                        embedding_type(dim)
                    ),
                    "embed_model": pa.array([MODEL_ID] * (b - a)),
                }
            ),
        )
    update_manifest(bank, embed={"model": "synthetic", "model_id": MODEL_ID, "dim": dim})


def raw_index(kind: str, x: np.ndarray, cfg: Config, seed: int) -> faiss.Index:
    """The same index built with plain FAISS calls from the in-memory array."""
    n, dim = x.shape
    c = cfg.index
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, c.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = c.hnsw_ef_construction
    else:
        index = faiss.IndexIVFPQ(
            faiss.IndexFlatIP(dim), dim, ivf_nlist(n, c), c.pq_m, 8, faiss.METRIC_INNER_PRODUCT
        )
        sample = np.random.default_rng(seed).choice(n, min(c.train_size, n), replace=False)
        index.train(x[np.sort(sample)])
    index.add(x)
    return index


def raw_search(kind: str, index: faiss.Index, x: np.ndarray, q: np.ndarray, k: int, cfg: Config):
    c = cfg.index
    if kind == "hnsw":
        index.hnsw.efSearch = max(c.hnsw_ef_search, k)
        return index.search(q, k)
    if kind == "ivfpq":
        index.nprobe = c.ivf_nprobe
        if not c.refine:
            return index.search(q, k)
        _, cand = index.search(q, k * c.refine)
        scores = np.einsum("qd,qkd->qk", q, x[np.maximum(cand, 0)])
        order = np.argsort(-scores, axis=1)[:, :k]
        return np.take_along_axis(scores, order, 1), np.take_along_axis(cand, order, 1)
    return index.search(q, k)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(
        np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth, strict=True)])
    )


def best_of(fns, repeats: int) -> list[float]:
    """Fastest of `repeats` timings of each function, run interleaved (the machine is shared)."""
    times = [math.inf] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            times[i] = min(times[i], timed(fn)[1])
    return times


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--single", type=int, default=200, help="queries timed one at a time")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3, help="timings are the best of this many")
    ap.add_argument("--kinds", default="flat,hnsw,ivfpq")
    ap.add_argument("--noise", type=float, default=1.1)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="index.KEY=VALUE")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()

    from personagen.config import load_config

    cfg = load_config(None, args.overrides)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-index-"))
    bank = work / "bank"
    shutil.rmtree(bank, ignore_errors=True)
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(2000, args.dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x, gen_s = timed(clustered, args.n, args.dim, centres, 1, args.noise)
    q = clustered(args.queries, args.dim, centres, 2, args.noise)
    (truth_scores, truth), exact_s = timed(
        faiss.knn, q, x, args.k, metric=faiss.METRIC_INNER_PRODUCT
    )
    female = np.arange(args.n) % 2 == 0
    rare = np.arange(args.n) % 100 == 0
    truth_f = faiss.knn(q, x[female], args.k, metric=faiss.METRIC_INNER_PRODUCT)[1]
    truth_f = np.flatnonzero(female)[truth_f]
    truth_r = np.flatnonzero(rare)[
        faiss.knn(q, x[rare], args.k, metric=faiss.METRIC_INNER_PRODUCT)[1]
    ]
    _, write_s = timed(write_bank, bank, x, parts=max(1, args.n // 50_000))
    print(
        f"data: n={args.n:,} dim={args.dim}; generate {gen_s:.1f}s, write bank {write_s:.1f}s, "
        f"exact search of {args.queries} queries {exact_s:.1f}s; mean cosine of the 1st / 10th "
        f"neighbour {truth_scores[:, 0].mean():.3f} / {truth_scores[:, -1].mean():.3f}; "
        f"FAISS threads {faiss.omp_get_max_threads()}",
        flush=True,
    )
    rows = []
    for kind in args.kinds.split(","):
        cfg.index.type = kind
        info, build_s = timed(build_index, bank, cfg.index, seed=cfg.seed, runner=RayTasks(cfg.ray))
        bi, load_s = timed(load_index, bank)
        number = np.array([int(p[1:]) for p in bi.ids.to_pylist()])
        raw, raw_build_s = timed(raw_index, kind, x, cfg, cfg.seed)
        singles = q[: args.single]

        def ours_batch(bi=bi):
            return search(bi, q, args.k, options=cfg.index, embedder=cfg.embed)

        def ours_rows(bi=bi):
            return search_rows(bi, q, args.k, None, cfg.index)

        def raw_batch(kind=kind, raw=raw):
            return raw_search(kind, raw, x, q, args.k, cfg)

        def ours_single(bi=bi, singles=singles):
            return [
                search(bi, v[None], args.k, options=cfg.index, embedder=cfg.embed) for v in singles
            ]

        def raw_single(kind=kind, raw=raw, singles=singles):
            return [raw_search(kind, raw, x, v[None], args.k, cfg) for v in singles]

        best = best_of([ours_batch, ours_rows, raw_batch, ours_single, raw_single], args.repeats)
        found = ours_rows()[1]
        raw_found = raw_batch()[1]
        del raw
        _, columns_s = timed(bi.columns, ["attributes"])  # once per loaded index, then cached
        filtered, f_s = timed(
            search,
            bi,
            q,
            args.k,
            filters=["attributes.gender=female"],
            options=cfg.index,
            embedder=cfg.embed,
        )
        f_rows = _rows_of(filtered, args)
        filtered, r_s = timed(
            search,
            bi,
            q,
            args.k,
            filters=["attributes.location=Reykjavik"],
            options=cfg.index,
            embedder=cfg.embed,
        )
        r_rows = _rows_of(filtered, args)
        batch_s, rows_s, raw_batch_s, single_s, raw_single_s = best
        row = {
            "kind": kind,
            "params": info["params"],
            "build_s": round(build_s, 1),
            "raw_build_s": round(raw_build_s, 1),
            "load_s": round(load_s, 2),
            "filter_columns_load_s": round(columns_s, 2),
            "qps_batch": round(args.queries / batch_s),
            "qps_batch_rows_only": round(args.queries / rows_s),
            "raw_qps_batch": round(args.queries / raw_batch_s),
            "qps_single": round(len(singles) / single_s),
            "raw_qps_single": round(len(singles) / raw_single_s),
            "recall@10": round(recall(number[found], truth), 4),
            "raw_recall@10": round(recall(raw_found, truth), 4),
            "filter50_qps": round(args.queries / f_s),
            "filter50_recall@10": round(recall(f_rows, truth_f), 4),
            "filter1_qps": round(args.queries / r_s),
            "filter1_recall@10": round(recall(r_rows, truth_r), 4),
            "index_mb": round(sum(f.stat().st_size for f in (bank / "index").iterdir()) / 2**20),
        }
        row["sweep"] = sweep(kind, bi, q, truth, number, cfg, args)
        rows.append(row)
        print(json.dumps(row), flush=True)
    print_table(rows, args)
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2))
    shutil.rmtree(work, ignore_errors=True)


SWEEPS = {
    "hnsw": [{"hnsw_ef_search": ef} for ef in (32, 64, 96, 128, 192, 256)],
    "ivfpq": [
        {"ivf_nprobe": nprobe, "refine": refine}
        for nprobe in (16, 32, 64, 128, 256)
        for refine in (0, 4, 8, 16)
    ],
}


def sweep(kind, bi, q, truth, number, cfg, args) -> list[dict]:
    """Recall and batch queries/s of the built index at other query-time parameters."""
    out = []
    for params in SWEEPS.get(kind, []):
        qcfg = cfg.index.model_copy(update=params)
        (_, found), seconds = timed(search_rows, bi, q, args.k, None, qcfg)
        out.append(
            params
            | {"qps": round(args.queries / seconds), "recall@10": recall(number[found], truth)}
        )
    return out


def _rows_of(results: pa.Table, args: argparse.Namespace) -> np.ndarray:
    """Results table -> (queries, k) persona numbers (-1 where fewer than k were found)."""
    out = np.full((args.queries, args.k), -1)
    query = results.column("query").to_numpy()
    rank = results.column("rank").to_numpy() - 1
    out[query, rank] = [int(p[1:]) for p in results.column("persona_id").to_pylist()]
    return out


def print_table(rows: list[dict], args: argparse.Namespace) -> None:
    print(f"\nn={args.n:,} dim={args.dim} k={args.k} queries={args.queries}")
    head = (
        "| kind | build s (raw) | q/s batch: ours / rows only / raw | q/s single: ours / raw "
        "| recall@10 (raw) | 50% filter q/s, recall | 1% filter q/s, recall | index MB |"
    )
    print(head)
    print("|---" * 8 + "|")
    for r in rows:
        print(
            f"| {r['kind']} | {r['build_s']} ({r['raw_build_s']}) | {r['qps_batch']} / "
            f"{r['qps_batch_rows_only']} / {r['raw_qps_batch']} | {r['qps_single']} / "
            f"{r['raw_qps_single']} | {r['recall@10']} ({r['raw_recall@10']}) | "
            f"{r['filter50_qps']}, {r['filter50_recall@10']} | {r['filter1_qps']}, "
            f"{r['filter1_recall@10']} | {r['index_mb']} |"
        )
    for r in rows:
        if r["sweep"]:
            print(f"\n{r['kind']}: query-time parameters (batch of {args.queries})")
            for point in r["sweep"]:
                print(
                    "  "
                    + ", ".join(
                        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                        for k, v in point.items()
                    )
                )


if __name__ == "__main__":
    main()
