"""Alignment quality on real people: biased persona pools from BIG5 respondents, scored on held-out.

Setup (per bias level and repeat): the cleaned BIG5 respondents (Open-Source Psychometrics,
IPIP-50 scored) are shuffled and cut into three disjoint parts: a pool source, the reference the
methods align to, and a held-out sample that scores them. The persona pool is drawn from the pool
source with probability ~ exp(beta * s), s = z(E) - z(N) + z(A) + z(O) (the LLM persona bias:
too extraverted, stable, agreeable, open); beta = 0 is an unbiased pool.

Methods, in the same run: `random` (n uniform from the pool), `kde-is` (the textbook importance
resampling: scipy gaussian_kde ratio, n drawn without replacement by numpy with p ~ ratio),
`assign` (exact assignment of a random reference n-sample to distinct personas, scipy
`linear_sum_assignment` on squared distances), and personagen's `is`, `ot`, `ot-unbalanced`
(one row per `--reg-m` value), `auto` (ot, relaxed only if the balanced solver stalls), `is+ot`.
`floor` is a random n-sample of the reference split itself: what drawing real people would score.
The pool table also gives the reference mass the first relaxed transport (ot-unbalanced at the
first --reg-m) left uncovered; "runs relaxed" counts the runs whose transport ended unbalanced.

Run:  PYTHONPATH=. python benchmarks/align_quality.py [--repeats 3] [--pool 3000] [--n 1000]
          [--reg-m 0.5,1,2]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.stats import gaussian_kde

from personagen.align.api import align
from personagen.align.density import kde_log_density
from personagen.align.options import AlignOptions
from personagen.evaluate.metrics import distribution_metrics
from personagen.io.reference import load_reference

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ipip" / "big5-2012" / "data.csv"
BIASES = {"none": 0.0, "mild": 0.25, "strong": 0.75}
METHODS = ("random", "kde-is", "assign", "is", "ot", "ot-unbalanced", "auto", "is+ot", "floor")


def bias_score(x: np.ndarray) -> np.ndarray:
    z = (x - x.mean(axis=0)) / x.std(axis=0)
    # TRAITS order: openness, conscientiousness, extraversion, agreeableness, neuroticism
    return z[:, 2] - z[:, 4] + z[:, 3] + z[:, 0]


def biased_pool(source: np.ndarray, size: int, beta: float, rng: np.random.Generator) -> np.ndarray:
    s = bias_score(source)
    p = np.exp(beta * (s - s.max()))
    return source[rng.choice(source.shape[0], size=size, replace=False, p=p / p.sum())]


def uncovered_mass(pool: np.ndarray, ref: np.ndarray, n: int) -> float:
    """Share of the reference a capacity-one selection of n from the pool cannot serve locally.

    Where p_ref / p_pool > P / n the pool has fewer personas than n draws of the reference
    need; E_ref[max(0, 1 - (P/n) p_pool / p_ref)] is the mass that must travel (KDE estimates).
    """
    log_ref = kde_log_density(ref, ref, leave_one_out=True)
    log_pool = kde_log_density(pool, ref)
    return float(np.mean(np.maximum(0.0, 1.0 - pool.shape[0] / n * np.exp(log_pool - log_ref))))


def pool_shift(pool: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Mean of the pool minus the reference's, in reference SDs, per trait."""
    return (pool.mean(axis=0) - ref.mean(axis=0)) / ref.std(axis=0)


def kde_is(pool: np.ndarray, ref: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    ratio = gaussian_kde(ref.T)(pool.T) / gaussian_kde(pool.T)(pool.T)
    return rng.choice(pool.shape[0], size=n, replace=False, p=ratio / ratio.sum())


def assign(pool: np.ndarray, ref: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    sample = ref[rng.choice(ref.shape[0], size=n, replace=False)]
    cost = ((sample[:, None, :] - pool[None, :, :]) ** 2).sum(axis=2)
    _, cols = linear_sum_assignment(cost)
    return cols


def method_list(reg_ms: list[float]) -> list[tuple[str, str, AlignOptions]]:
    """(label, align method, options) per column of the table; ot-unbalanced once per reg_m."""
    default = AlignOptions()
    out = []
    for method in METHODS:
        if method != "ot-unbalanced":
            out.append((method, method, default))
            continue
        for reg_m in reg_ms:
            label = method if reg_m == default.reg_m else f"{method} (reg_m {reg_m:g})"
            out.append((label, method, AlignOptions(reg_m=reg_m)))
    return out


def run(
    repeats: int, pool_size: int, n: int, reg_ms: list[float]
) -> tuple[list[dict], list[dict], list[str]]:
    people = load_reference(f"big5:{DATA}").trait_matrix()
    methods = method_list(reg_ms)
    rows, pools = [], []
    for bias, beta in BIASES.items():
        for rep in range(repeats):
            rng = np.random.default_rng(1000 + rep)
            order = rng.permutation(people.shape[0])
            third = people.shape[0] // 4
            ref, held, source = (
                people[order[:third]],
                people[order[third : 2 * third]],
                people[order[2 * third :]],
            )
            pool = biased_pool(source, pool_size, beta, rng)
            pools.append(
                {
                    "bias": bias,
                    "shift": pool_shift(pool, ref),
                    "uncovered": uncovered_mass(pool, ref, n),
                }
            )
            for label, method, options in methods:
                started = time.perf_counter()
                relaxed = None
                if method == "random":
                    chosen = pool[rng.choice(pool_size, size=n, replace=False)]
                elif method == "kde-is":
                    chosen = pool[kde_is(pool, ref, n, rng)]
                elif method == "assign":
                    chosen = pool[assign(pool, ref, n, rng)]
                elif method == "floor":
                    chosen = ref[rng.choice(ref.shape[0], size=n, replace=False)]
                else:
                    result = align(pool, ref, n, method=method, seed=rep, options=options)
                    chosen = pool[result.indices]
                    ot = result.diagnostics.get("ot")
                    relaxed = ot is not None and ot["marginal"] == "unbalanced"
                    if relaxed and "solver_uncovered" not in pools[-1]:
                        pools[-1]["solver_uncovered"] = ot["uncovered"]["mass"]
                seconds = time.perf_counter() - started
                m = distribution_metrics(chosen, held, seed=rep)
                rows.append(
                    {
                        "bias": bias,
                        "rep": rep,
                        "method": label,
                        "energy": m["energy"],
                        "sliced": m["sliced_wasserstein"],
                        "mean_err": m["mean_abs_error"],
                        "sd_err": m["sd_abs_error"],
                        "corr_err": m["corr_error_max"],
                        "seconds": seconds,
                        "relaxed": relaxed,
                    }
                )
    return rows, pools, [label for label, _, _ in methods]


def describe_pools(pools: list[dict]) -> str:
    lines = [
        "| bias | beta | pool mean - reference mean, in reference SDs (O, C, E, A, N) "
        "| uncovered reference mass (KDE) | left uncovered by ot-unbalanced |",
        "|---|---|---|---|---|",
    ]
    for bias, beta in BIASES.items():
        sel = [p for p in pools if p["bias"] == bias]
        shift = np.mean([p["shift"] for p in sel], axis=0)
        uncovered = np.mean([p["uncovered"] for p in sel])
        solver = np.mean([p.get("solver_uncovered", np.nan) for p in sel])
        lines.append(
            f"| {bias} | {beta} | {', '.join(f'{v:+.2f}' for v in shift)} | {uncovered:.1%} "
            f"| {solver:.1%} |"
        )
    return "\n".join(lines)


def summarise(rows: list[dict], methods: list[str]) -> str:
    lines = [
        "| bias | method | energy | x floor | sliced W2 | |mean err| | |SD err| | max corr err "
        "| seconds | runs relaxed |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for bias in BIASES:
        floor = np.mean([r["energy"] for r in rows if r["bias"] == bias and r["method"] == "floor"])
        for method in methods:
            sel = [r for r in rows if r["bias"] == bias and r["method"] == method]
            avg = {
                k: np.mean([r[k] for r in sel])
                for k in sel[0]
                if k not in ("bias", "method", "rep", "relaxed")
            }
            relaxed = [r["relaxed"] for r in sel if r["relaxed"] is not None]
            runs = f"{sum(relaxed)}/{len(relaxed)}" if relaxed else "-"
            lines.append(
                f"| {bias} | {method} | {avg['energy']:.4f} | {avg['energy'] / floor:.2f} | "
                f"{avg['sliced']:.4f} | {avg['mean_err']:.4f} | {avg['sd_err']:.4f} | "
                f"{avg['corr_err']:.3f} | {avg['seconds']:.2f} | {runs} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pool", type=int, default=4000)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument(
        "--reg-m", default=str(AlignOptions().reg_m), help="ot-unbalanced reg_m values, a,b,..."
    )
    args = parser.parse_args()
    if not DATA.exists():
        raise SystemExit(f"needs the shared BIG5 data at {DATA}")
    reg_ms = [float(v) for v in args.reg_m.split(",")]
    rows, pools, methods = run(args.repeats, args.pool, args.n, reg_ms)
    print(f"pool {args.pool}, n {args.n}, repeats {args.repeats} (mean over repeats)")
    print(describe_pools(pools))
    print()
    print(summarise(rows, methods))


if __name__ == "__main__":
    main()
