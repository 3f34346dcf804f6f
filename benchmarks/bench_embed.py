"""Embedding benchmark: the Ray embed stage vs plain `model.encode`, and the ONNX backends.

Texts: persona-length excerpts (about 180 words) of real blogs from ../shared/data/blogs, one per
blogger; queries: the opening 30 words of a later post of the same blogger. In one run:

1. Throughput of plain sentence-transformers `encode` (all cores, and one core), and of the
   embed stage (`personagen.commands.embed.embed` on a bank of these texts) for several
   actor/thread/batch layouts. The stage's steady rate excludes actor start and model loading:
   it is the extra texts over the extra seconds between a run on a quarter of the texts and a
   run on all of them. Plain encode (all cores) is timed right before and after each layout,
   and the ratio uses their mean.
2. Backends torch / onnx / onnx-int8 (when onnxruntime is installed): texts/s of plain encode,
   agreement of each backend's top-10 with the fp32 model's top-10 for the queries, and the task
   recall@10 (is the query's own blogger among the top 10).

    python benchmarks/bench_embed.py                # 1000 texts
    python benchmarks/bench_embed.py --texts 300 --layouts 2x1x256
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from personagen.commands.embed import embed
from personagen.config import Config, EmbedConfig, RayConfig
from personagen.index.embedder import load_embedder
from personagen.io.bank import GROUPS, write_group
from personagen.io.blogs import read_blog_file
from personagen.runtime.cluster import init_ray

BLOGS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "blogs" / "blogs"


def blog_texts(n: int, words: int = 180) -> tuple[list[str], list[str]]:
    """(documents, queries): one excerpt per blogger with enough text, and a later-post query."""
    if not BLOGS.is_dir():
        sys.exit(f"needs the shared blog data at {BLOGS} (absent on this machine)")
    docs, queries = [], []
    for path in sorted(BLOGS.glob("*.xml")):
        posts = [p["text"].split() for p in read_blog_file(path).posts]
        body = [w for p in posts[:-1] for w in p]
        if len(body) < words or len(posts) < 2 or len(posts[-1]) < 30:
            continue
        docs.append(" ".join(body[:words]))
        queries.append(" ".join(posts[-1][:30]))
        if len(docs) == n:
            break
    return docs, queries


def plain_rate(texts: list[str], cfg: EmbedConfig, threads: int) -> tuple[float, np.ndarray]:
    embedder = load_embedder(cfg, threads=threads)
    embedder.encode(texts[:32])
    start = time.perf_counter()
    vectors = embedder.encode(texts)
    return len(texts) / (time.perf_counter() - start), vectors


def write_bank(bank: Path, texts: list[str]) -> None:
    schema = GROUPS["personas"]
    n = len(texts)
    columns = {name: pa.nulls(n, schema.field(name).type) for name in schema.names}
    columns["persona_id"] = pa.array([f"b{i}" for i in range(n)])
    columns["narrative"] = pa.array(texts)
    write_group(bank, "personas", pa.table(columns))


def stage_seconds(texts: list[str], layout: str, work: Path) -> float:
    actors, threads, batch = (int(v) for v in layout.split("x"))
    cfg = Config()
    cfg.embed.actors, cfg.embed.threads, cfg.embed.batch_size = actors, threads, batch
    bank = work / f"bank-{layout}-{len(texts)}"
    shutil.rmtree(bank, ignore_errors=True)
    write_bank(bank, texts)
    start = time.perf_counter()
    summary = embed(cfg, bank)
    seconds = time.perf_counter() - start
    assert summary.counts["embedded"] == len(texts), summary.counts
    shutil.rmtree(bank)
    return seconds


def top10(corpus: np.ndarray, queries: np.ndarray) -> np.ndarray:
    return np.argsort(-(queries @ corpus.T), axis=1)[:, :10]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--texts", type=int, default=1000)
    ap.add_argument(
        "--layouts",
        default="2x1x256,1x2x256,2x1x64",
        help="actors x threads x batch_size of the stage runs",
    )
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    docs, queries = blog_texts(args.texts)
    cpus = torch.get_num_threads()
    print(f"{len(docs)} texts, {cpus} cores; torch {torch.__version__}", flush=True)
    base = EmbedConfig()
    out: dict = {"texts": len(docs), "cores": cpus}

    # 1. throughput: plain encode, then the stage
    rate_all, reference = plain_rate(docs, base, cpus)
    rate_one, _ = plain_rate(docs, base, 1)
    out["plain"] = {"all_cores": round(rate_all, 1), "one_core": round(rate_one, 1)}
    too_long = load_embedder(base, threads=1).too_long(docs)
    print(
        f"plain encode: {rate_all:.1f} texts/s on {cpus} cores, {rate_one:.1f} on one core; "
        f"{sum(too_long)} of {len(docs)} texts exceed 256 tokens",
        flush=True,
    )
    init_ray(RayConfig(num_cpus=cpus, object_store_mb=512))
    work = Path(tempfile.mkdtemp(prefix="bench-embed-"))
    stage_seconds(docs[:16], "1x1x16", work)  # warm-up: Ray's worker processes start once
    out["stage"] = []
    quarter = len(docs) // 4
    for layout in args.layouts.split(","):
        # plain encode right before and after each layout's runs: the machine is shared, so
        # only measurements taken close together compare
        before = plain_rate(docs, base, cpus)[0]
        small = stage_seconds(docs[:quarter], layout, work)
        full = stage_seconds(docs, layout, work)
        plain = (before + plain_rate(docs, base, cpus)[0]) / 2
        steady = (len(docs) - quarter) / (full - small) if full > small else float("nan")
        row = {
            "layout": layout,
            "plain_texts_s": round(plain, 1),
            "steady_texts_s": round(steady, 1),
            "vs_plain": round(steady / plain, 3),
            "end_to_end_texts_s": round(len(docs) / full, 1),
            "end_to_end_vs_plain": round(len(docs) / full / plain, 3),
        }
        out["stage"].append(row)
        print(json.dumps(row), flush=True)
    shutil.rmtree(work, ignore_errors=True)

    # 2. backends: speed and retrieval quality against fp32 torch
    q_ref = load_embedder(base, threads=cpus).encode(queries)
    ref_top = top10(reference, q_ref)
    backends = ["torch"]
    if importlib.util.find_spec("onnxruntime") is not None:
        backends += ["onnx", "onnx-int8"]
    out["backends"] = []
    for backend in backends:
        cfg = base.model_copy(update={"backend": backend})
        rate, vectors = plain_rate(docs, cfg, cpus)
        q_vec = load_embedder(cfg, threads=cpus).encode(queries)
        top = top10(vectors, q_vec)
        agreement = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(top, ref_top, strict=True)])
        own = np.mean([i in row for i, row in enumerate(top)])
        row = {
            "backend": backend,
            "texts_s": round(rate, 1),
            "speedup_vs_torch": round(rate / out["backends"][0]["texts_s"], 2)
            if out["backends"]
            else 1.0,
            "min_cosine_to_fp32": round(float((vectors * reference).sum(1).min()), 4),
            "top10_agreement": round(float(agreement), 4),
            "task_recall@10": round(float(own), 4),
        }
        out["backends"].append(row)
        print(json.dumps(row), flush=True)
    print_tables(out)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


def print_tables(out: dict) -> None:
    print(
        f"\nplain encode: {out['plain']['all_cores']} texts/s ({out['cores']} cores), "
        f"{out['plain']['one_core']} texts/s (1 core)"
    )
    print(
        "| stage layout (actors x threads x batch) | plain encode texts/s (around it) "
        "| stage steady texts/s | steady vs plain | end-to-end texts/s | end-to-end vs plain |"
    )
    print("|---|---|---|---|---|---|")
    for r in out["stage"]:
        print(
            f"| {r['layout']} | {r['plain_texts_s']} | {r['steady_texts_s']} | {r['vs_plain']} | "
            f"{r['end_to_end_texts_s']} | {r['end_to_end_vs_plain']} |"
        )
    print(
        "\n| backend | texts/s | speed-up vs torch | min cosine to fp32 | top-10 agreement "
        "| task recall@10 |"
    )
    print("|---|---|---|---|---|---|")
    for r in out["backends"]:
        print(
            f"| {r['backend']} | {r['texts_s']} | {r['speedup_vs_torch']} | "
            f"{r['min_cosine_to_fp32']} | {r['top10_agreement']} | {r['task_recall@10']} |"
        )


if __name__ == "__main__":
    main()
