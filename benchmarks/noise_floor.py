"""Noise floors on real people: does a fresh sample of real respondents score 1x its floor?

For n persons and a reference of m rows (2n, 10,000, all the others), fresh samples of real BIG5
respondents (none in the reference) are compared with the reference, and each metric is divided
by the floor computed from the reference alone: personagen's floor (n rows drawn against the
m - n not drawn, rescaled to n against m) and the floor personagen used before (two disjoint
n-row samples of the reference against each other). A floor has the right shape when real
people land at 1x it. Mean over independent splits; the spread is the SD over splits.

Run:  PYTHONPATH=. python benchmarks/noise_floor.py [--splits 6] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from personagen.evaluate.metrics import distribution_metrics, flatten, floor_ratios, noise_floor
from personagen.io.reference import load_reference

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ipip" / "big5-2012" / "data.csv"
KEYS = ("energy", "sliced_wasserstein", "w1_mean", "ks_max", "mean_abs_error", "corr_error_rmse")


def pairs_floor(reference: np.ndarray, n: int, repeats: int, seed: int) -> dict[str, float]:
    """The earlier floor: two disjoint n-row samples of the reference (with replacement when
    the reference has fewer than 2n rows)."""
    rng = np.random.default_rng(seed)
    m, runs = reference.shape[0], []
    for _ in range(repeats):
        if m >= 2 * n:
            idx = rng.permutation(m)[: 2 * n]
            first, second = idx[:n], idx[n:]
        else:
            first, second = rng.choice(m, size=(2, n), replace=True)
        runs.append(flatten(distribution_metrics(reference[first], reference[second], seed=seed)))
    return {k: float(np.mean([r[k] for r in runs])) for k in runs[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--splits", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if not DATA.exists():
        raise SystemExit(f"needs the shared BIG5 data at {DATA}")
    people = load_reference(f"big5:{DATA}").trait_matrix()
    print(f"BIG5 respondents {people.shape[0]:,}; load {os.getloadavg()[0]:.2f}; "
          f"{args.splits} splits, floors of {args.repeats} draws")  # fmt: skip
    print("| n | reference | floor | " + " | ".join(KEYS) + " | s |")
    print("|---|---|---|" + "---|" * (len(KEYS) + 1))
    for n in (100, 1000, 5000):
        for size in dict.fromkeys((2 * n, 10_000, None)):
            started = time.perf_counter()
            ours, before = [], []
            for k in range(args.splits):
                order = np.random.default_rng(100 * n + k).permutation(people.shape[0])
                fresh, rest = people[order[:n]], people[order[n:]]
                reference = rest if size is None else rest[:size]
                metrics = distribution_metrics(fresh, reference, seed=k)
                ours.append(floor_ratios(metrics, noise_floor(reference, n, repeats=args.repeats,
                                                              seed=k)))  # fmt: skip
                old = pairs_floor(reference, n, args.repeats, k)
                before.append({key: flatten(metrics)[key] / old[key] for key in KEYS})
            seconds = time.perf_counter() - started
            m = reference.shape[0]
            for name, ratios in (("n vs the rest, rescaled", ours), ("n vs n (before)", before)):
                values = {key: [r[key] for r in ratios] for key in KEYS}
                cells = [f"{np.mean(v):.2f} ± {np.std(v):.2f}" for v in values.values()]
                print(f"| {n:,} | {m:,} | {name} | " + " | ".join(cells) + f" | {seconds:.0f} |")


if __name__ == "__main__":
    main()
