"""Runtime of `distribution_metrics` at 10k / 100k / 1M rows, next to the peer libraries.

Peers in the same run: POT's `ot.sliced_wasserstein_distance` on the same random directions
(our sliced W must equal it; the ratio is the speed-up of the contiguous layout), and the exact
quadratic energy distance (to show the error of the subsampled one). POT is skipped above
`--pot-max` rows and the exact energy above `--exact-max` rows (they take minutes there).

    python benchmarks/bench_metrics.py [--sizes 10000,100000,1000000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import ot
from scipy.spatial.distance import cdist

from personagen.evaluate import metrics


def _population(n: int, rng: np.random.Generator) -> np.ndarray:
    """Realistic trait rows: the builtin global model (discrete scores, real correlations)."""
    from personagen.io.builtin import read_builtin
    from personagen.psychometrics.copula import sample_summary

    return sample_summary(read_builtin()["groups"]["global"], n, seed=int(rng.integers(1 << 30)))


def _exact_energy(x: np.ndarray, y: np.ndarray) -> float:
    def mean_d(a: np.ndarray, b: np.ndarray) -> float:
        total = 0.0
        for s in range(0, a.shape[0], 2000):
            total += cdist(a[s : s + 2000], b).sum()
        return total / (a.shape[0] * b.shape[0])

    return float(np.sqrt(2 * mean_d(x, y) - mean_d(x, x) - mean_d(y, y)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--pot-max", type=int, default=100_000)
    parser.add_argument("--exact-max", type=int, default=20_000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(
        "| rows (x = y) | metrics, unweighted s | metrics, weighted x s | of which sliced W s "
        "| POT sliced W s | POT / ours | energy (subsample) | energy exact |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n in [int(s) for s in args.sizes.split(",")]:
        x, y = _population(n, rng), _population(n, rng) + 0.05
        w = rng.gamma(2.0, size=n)
        t = time.perf_counter()
        m = metrics.distribution_metrics(x, y, seed=1)
        plain = time.perf_counter() - t
        t = time.perf_counter()
        metrics.distribution_metrics(x, y, x_weights=w, seed=1)
        weighted = time.perf_counter() - t
        a = np.full(n, 1.0 / n)
        t = time.perf_counter()
        ours = metrics._sliced(x, a, y, a, metrics.SLICED_PROJECTIONS, 1)
        sliced = time.perf_counter() - t
        pot_s, ratio = "skipped", "-"
        if n <= args.pot_max:
            t = time.perf_counter()
            pot = ot.sliced_wasserstein_distance(
                x, y, n_projections=metrics.SLICED_PROJECTIONS, seed=1
            )
            pot_time = time.perf_counter() - t
            assert abs(float(pot) - ours) <= 1e-9 * max(1.0, ours), (pot, ours)
            pot_s, ratio = f"{pot_time:.2f}", f"{pot_time / sliced:.1f}x"
        exact = f"{_exact_energy(x, y):.4f}" if n <= args.exact_max else "skipped"
        print(
            f"| {n:,} | {plain:.2f} | {weighted:.2f} | {sliced:.2f} | {pot_s} | {ratio} "
            f"| {m['energy']:.4f} | {exact} |"
        )


if __name__ == "__main__":
    main()
