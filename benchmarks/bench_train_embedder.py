"""Embedder training benchmark: held-out retrieval before and after `personagen train-embedder`.

Personas: one per blogger of ../shared/data/blogs, a persona-length excerpt of their posts (the
first 180 words, as in bench_embed.py). Queries (`--queries`):

- `stub` (default): the stub LLM server (tests/llm_test_server.py, in process) answers each query
  request with keyword queries, six distinctive words of the persona text each
  (tests/synthetic.keyword_queries). Deterministic and about the persona's own content, but a
  lexical query style: the numbers say how well training teaches the model that style, not how
  well it understands a researcher's description of a person.
- `embedded`: the embedded SmolLM2-135M writes the queries through the real query stage (slow,
  and a 135M model's queries are noisy: often generic, sometimes copied from the prompt).

The queries are written once into the bank; every configuration then trains the packaged MiniLM
from scratch on the same pairs, split by persona (seeded), and is evaluated on the same held-out
queries against a corpus of all the personas:

    mnrl             MultipleNegativesRankingLoss + 1 hard negative, semantically filtered (default)
    mnrl-unfiltered  the same with the hardest negative, unfiltered (filters off)
    mnrl-in-batch    in-batch negatives only (no mined negative)
    gist             GISTEmbed guided by the frozen base model + 1 filtered hard negative

    python benchmarks/bench_train_embedder.py [--personas 400] [--queries stub|embedded]
        [--epochs 1] [--configs mnrl,mnrl-unfiltered,mnrl-in-batch,gist] [--json F] [-v]

`-v` logs the runs' progress (query writing, training steps with ETA, held-out metrics).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))

from bench_embed import blog_texts  # noqa: E402
from llm_test_server import Faults, LLMTestServer  # noqa: E402
from synthetic import embed_and_index, query_writer  # noqa: E402

from personagen.commands.train_embedder import train_embedder  # noqa: E402
from personagen.config import load_config  # noqa: E402
from personagen.io.bank import GROUPS, KEY, write_group  # noqa: E402
from personagen.logs import setup_logging  # noqa: E402

CONFIGS = {
    "mnrl": {},
    "mnrl-unfiltered": {"false_negative_max": 1.0, "relative_margin": 1.0},
    "mnrl-in-batch": {"negatives": 0},
    "gist": {"loss": "gist"},
}


def write_bank(bank: Path, texts: list[str]) -> None:
    n = len(texts)
    schema = GROUPS["personas"]
    columns = {name: pa.nulls(n, schema.field(name).type) for name in schema.names}
    columns[KEY] = pa.array([f"b{i:04d}/0" for i in range(n)])
    columns["narrative"] = pa.array(texts)
    write_group(bank, "personas", pa.table(columns))
    embed_and_index(bank)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--personas", type=int, default=400)
    ap.add_argument("--queries", choices=["stub", "embedded"], default="stub")
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--json", default=None)
    ap.add_argument("-v", "--verbose", action="store_true", help="log progress")
    args = ap.parse_args()
    setup_logging(False)
    logging.getLogger("personagen").setLevel(logging.INFO if args.verbose else logging.WARNING)

    texts, _ = blog_texts(args.personas)
    work = Path(tempfile.mkdtemp(prefix="bench-train-"))
    bank = work / "bank"
    write_bank(bank, texts)
    print(f"{len(texts)} personas, {os.cpu_count()} threads, queries: {args.queries}")
    sets = [
        "ray.num_cpus=2",
        "ray.object_store_mb=512",
        "llm.timeout_s=240",
        "llm.embedded.n_ctx=2048",
        f"train_embedder.epochs={args.epochs}",
        f"train_embedder.threads={os.cpu_count()}",
    ]
    server = None
    if args.queries == "stub":
        server = LLMTestServer(Faults(), query_writer).start()
        sets += [f"llm.base_url={server.base_url}", "llm.concurrency=16"]
    rows = []
    try:
        for name in args.configs.split(","):
            cfg = load_config(None, sets)
            cfg.train_embedder = cfg.train_embedder.model_copy(update=CONFIGS[name])
            start = time.perf_counter()
            summary = train_embedder(cfg, bank, work / f"model-{name}", overwrite=True)
            c, outputs = summary.counts, summary.outputs
            training = json.loads((outputs["out"] / "training.json").read_text())
            rows.append(
                {
                    "config": name,
                    "pairs": c["train_pairs"],
                    "heldout_queries": c["heldout_queries"],
                    "hard_negatives": c["hard_negatives"],
                    "dropped_false_negatives": c["dropped_false_negatives"],
                    "steps": c["steps"],
                    "train_s": training["train_s"],
                    "wall_s": round(time.perf_counter() - start, 1),
                    "before": outputs["before"],
                    "after": outputs["after"],
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(work)  # the bank and one saved model per configuration

    base = rows[0]["before"]
    print(
        f"\n{len(texts)} personas; {rows[0]['pairs']} training pairs, "
        f"{rows[0]['heldout_queries']} held-out queries; corpus = all personas"
    )
    print(f"{'model':<18}{'recall@1':>10}{'recall@10':>11}{'MRR@10':>9}{'steps':>7}{'train s':>9}")
    b = base
    print(f"{'base MiniLM':<18}{b['recall@1']:>10.3f}{b['recall@10']:>11.3f}{b['mrr@10']:>9.3f}")
    for row in rows:
        a = row["after"]
        print(
            f"{row['config']:<18}{a['recall@1']:>10.3f}{a['recall@10']:>11.3f}{a['mrr@10']:>9.3f}"
            f"{row['steps']:>7}{row['train_s']:>9.0f}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"personas": len(texts), "runs": rows}, indent=2))


if __name__ == "__main__":
    main()
