"""Ingest benchmark: `personagen ingest` on the shared Blog Authorship Corpus sample, side by side
with a plain single-process loop doing the same work on the same files, measured in one run
(repeats interleaved, so that both see the same machine load).

    python benchmarks/bench_ingest.py [--src ../shared/data/blogs/blogs] [--repeats 3]

Three ways, each in a fresh process (interpreter start and imports included):
- plain loop: for each file, decode, parse and clean it (`read_blog_file`), window the posts,
  redact them, count the window's tokens; then the histories table, written as one Parquet
  file. No Ray, no personagen ingest code beyond the same parsing functions.
- `personagen ingest` (the CLI, a local Ray of 2 CPUs started by it).
- the ingest in a running Ray: Ray started first (timed apart), then `ingest` timed, as a build
  meets it (`personagen build` starts Ray before its stream).
Prints wall time (median), CPU seconds of the process tree, MB/s, posts/s and peak memory.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _measure import run_measured

ROOT = Path(__file__).resolve().parents[1]

PLAIN = """
import json, sys, time
from pathlib import Path
import pyarrow as pa, pyarrow.parquet as pq
from personagen.config import load_config
from personagen.io.blogs import read_blog_file
from personagen.text.redact import redact
from personagen.text.windowing import count_tokens, window_posts
cfg = load_config().ingest
rows, posts_read = [], 0
for path in sorted(Path(sys.argv[1]).glob("*.xml")):
    blog = read_blog_file(path)
    posts_read += blog.n_posts_raw
    w = window_posts(blog.posts, cfg.window.strategy, cfg.window.max_tokens, cfg.window.max_windows)
    for window in w.windows:
        posts = [
            {"date": p["date"], "text": redact(p["text"], cfg.redact.types)[0]}
            for p in window.posts
        ]
        rows.append({
            "history_id": f"{blog.user_id}/{window.window_id}", "user_id": blog.user_id,
            "window_id": window.window_id, "posts": posts, "n_posts": len(posts),
            "n_tokens": sum(count_tokens(p["text"]) for p in posts), "source": str(path),
            "gender": blog.gender, "age": blog.age, "industry": blog.industry, "sign": blog.sign,
        })
pq.write_table(pa.Table.from_pylist(rows), Path(sys.argv[2]) / "histories.parquet")
print(json.dumps({"posts_read": posts_read}))
"""

IN_RAY = """
import json, sys, time
from personagen.commands.ingest import ingest
from personagen.config import load_config
from personagen.runtime.cluster import init_ray
cfg = load_config(overrides=["ray.num_cpus=2"])
start = time.perf_counter()
init_ray(cfg.ray)
ray_s = time.perf_counter() - start
start = time.perf_counter()
summary = ingest(cfg, sys.argv[1], sys.argv[2])
print(json.dumps({"posts_read": summary.counts["posts_read"], "ray_s": ray_s,
                  "ingest_s": time.perf_counter() - start}))
"""

WAYS = (
    "plain single-process loop",
    "personagen ingest (CLI, Ray start)",
    "ingest in a running Ray",
)


def command(way: str, src: Path, out: str) -> list[str]:
    if way == WAYS[0]:
        return [sys.executable, "-c", PLAIN, str(src), out]
    if way == WAYS[1]:
        cli = [sys.executable, "-m", "personagen", "ingest", str(src), "--out", out]
        return [*cli, "--set", "ray.num_cpus=2"]
    return [sys.executable, "-c", IN_RAY, str(src), out]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--src", default=str(ROOT.parent / "shared" / "data" / "blogs" / "blogs"))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    src = Path(args.src)
    if not src.is_dir():
        sys.exit(f"no corpus at {src}: pass --src")
    files = list(src.glob("*.xml"))
    megabytes = sum(f.stat().st_size for f in files) / 2**20
    print(f"{time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs, load {os.getloadavg()}")
    results: dict[str, list[dict[str, float]]] = {way: [] for way in WAYS}
    for _ in range(args.repeats):
        for way in WAYS:
            with tempfile.TemporaryDirectory() as out:
                measured = run_measured(command(way, src, out))
                if measured.returncode != 0:
                    sys.exit(f"{way} failed:\n{measured.stderr[-3000:]}")
                if way == WAYS[1]:
                    summary = json.loads((Path(out) / "summary.json").read_text())
                    report = {"posts_read": summary["counts"]["posts_read"]}
                    assert summary["counts"]["files_failed"] == 0
                else:
                    report = json.loads(measured.stdout.strip().splitlines()[-1])
                wall = report.get("ingest_s", measured.wall_s)
                results[way].append(
                    {
                        "wall_s": wall,
                        "process_s": measured.wall_s,
                        "cpu_s": measured.cpu_s,
                        "peak_mb": measured.peak_rss_mb,
                        "posts": report["posts_read"],
                        "ray_s": report.get("ray_s", 0.0),
                    }
                )
    print(f"{len(files)} files, {megabytes:.1f} MB, median of {args.repeats} interleaved runs")
    print(
        f"{'':36} {'wall s':>7} {'(all)':>6} {'Ray st':>7} {'CPU s':>6} {'MB/s':>6} "
        f"{'posts/s':>8} {'peak MB':>8}"
    )
    walls = {}
    for way, runs in results.items():
        med = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
        walls[way] = med["wall_s"]
        print(
            f"{way:36} {med['wall_s']:7.2f} {med['process_s']:6.1f} {med['ray_s']:7.2f} "
            f"{med['cpu_s']:6.1f} {megabytes / med['wall_s']:6.1f} "
            f"{med['posts'] / med['wall_s']:8.0f} {med['peak_mb']:8.0f}"
        )
        print(f"{'':36} walls: " + ", ".join(f"{r['wall_s']:.2f}" for r in runs))
    plain = walls[WAYS[0]]
    print(
        f"wall against the plain loop: CLI {walls[WAYS[1]] / plain:.2f}x, "
        f"in a running Ray {walls[WAYS[2]] / plain:.2f}x; load now {os.getloadavg()}"
    )


if __name__ == "__main__":
    main()
