"""Ingest benchmark: the whole `personagen ingest` (Ray start included) on the shared Blog
Authorship Corpus sample, side by side with a plain single-process parse of the same files doing
the same work (decode, parse, clean, window, redact).

    python benchmarks/bench_ingest.py [--src ../shared/data/blogs/blogs] [--repeats 3]

Prints a table of wall time, MB/s, posts/s and peak memory (process tree, Ray workers included).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

from _measure import run_measured

ROOT = Path(__file__).resolve().parents[1]

PLAIN = """
import sys, time
from pathlib import Path
from personagen.config import load_config
from personagen.io.blogs import read_blog_file
from personagen.text.redact import redact
from personagen.text.windowing import window_posts
cfg = load_config().ingest
posts = 0
for path in sorted(Path(sys.argv[1]).glob("*.xml")):
    blog = read_blog_file(path)
    posts += blog.n_posts_raw
    w = window_posts(blog.posts, cfg.window.strategy, cfg.window.max_tokens, cfg.window.max_windows)
    for window in w.windows:
        for post in window.posts:
            redact(post["text"], cfg.redact.types)
print(posts)
"""


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

    rows = []
    for label, cmd in [
        ("plain single process", [sys.executable, "-c", PLAIN, str(src)]),
        ("personagen ingest (Ray, 2 CPUs)", None),
    ]:
        walls, peaks, posts = [], [], 0
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory() as out:
                run = cmd or [
                    sys.executable,
                    "-m",
                    "personagen",
                    "ingest",
                    str(src),
                    "--out",
                    out,
                    "--set",
                    "ray.num_cpus=2",
                ]
                measured = run_measured(run)
                if measured.returncode != 0:
                    sys.exit(f"{label} failed:\n{measured.stderr[-3000:]}")
                if cmd:
                    posts = int(measured.stdout.strip())
                else:
                    summary = json.loads((Path(out) / "summary.json").read_text())
                    posts = summary["counts"]["posts_read"]
                    assert summary["counts"]["files_failed"] == 0
                walls.append(measured.wall_s)
                peaks.append(measured.peak_rss_mb)
        wall = statistics.median(walls)
        rows.append((label, wall, megabytes / wall, posts / wall, max(peaks)))

    print(f"{len(files)} files, {megabytes:.1f} MB, median of {args.repeats} runs")
    print(f"{'':34} {'wall s':>8} {'MB/s':>8} {'posts/s':>9} {'peak MB':>9}")
    for label, wall, mbs, pps, peak in rows:
        print(f"{label:34} {wall:8.2f} {mbs:8.1f} {pps:9.0f} {peak:9.0f}")
    print(f"ratio ingest/plain wall: {rows[1][1] / rows[0][1]:.2f}x  (target: ingest <= 15 s)")


if __name__ == "__main__":
    main()
