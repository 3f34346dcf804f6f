"""Alignment at population scale, through the CLI, and a side-by-side with POT.

1. For each size S: S synthetic personas (a mildly biased, LLM-like trait distribution: means
   shifted by 0.1-0.3 SD toward extraverted, agreeable, open and stable, SDs 0.9x, so the pool
   still covers the reference; `--bias strong`: shifted 0.3-0.6 SD, SDs 0.8x, a pool that does
   not cover the reference) and S synthetic reference rows (correlated Big Five, clipped to
   1-5) are written to Parquet; then
   `python -m personagen align --personas P --reference R --n S/10 --out OUT` runs as a
   subprocess while its process tree (the CLI, the Ray head processes and the Ray workers) is
   sampled with psutil for peak memory. Reported: wall time, peak RSS of the tree (an upper
   bound: shared pages such as the Ray object store count once per process), iterations,
   marginal error, atoms and the phases from report.json, and which transport ran (balanced,
   or unbalanced with the reference mass it left uncovered; `-- --method ot-unbalanced` or
   `auto` passes the method to the CLI).
2. POT: the same capacity-one transport problem (reference atoms + the dummy row, personas with
   capacity one), dense, solved by `ot.sinkhorn(..., method="sinkhorn_log")` at the same eps;
   personagen's solver is then run to the same marginal error, in-process, with the complete
   kernel (exact) and with the default kNN-truncated kernel.

3. Approximation error: at a size where the exact plan fits in memory, the kNN-truncated kernel
   and the k-means-compressed reference against the exact solution (every reference row an atom,
   every persona linked to every atom): difference of the inclusion probabilities, share of the
   same personas chosen (same seed), and energy distance of the chosen set to held-out rows.

Run:  PYTHONPATH=. python benchmarks/align_scale.py [--sizes 10000,100000,1000000] [--pot 5000]
          [--bias mild|strong] [-- --method ot-unbalanced]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq

from personagen import TRAITS

CORR = np.array(
    [
        [1.00, 0.10, 0.20, 0.10, -0.10],
        [0.10, 1.00, 0.10, 0.20, -0.30],
        [0.20, 0.10, 1.00, 0.25, -0.30],
        [0.10, 0.20, 0.25, 1.00, -0.20],
        [-0.10, -0.30, -0.30, -0.20, 1.00],
    ]
)
REF_MEAN = np.array([3.9, 3.4, 3.0, 3.8, 3.0])
REF_SD = np.array([0.6, 0.7, 0.9, 0.7, 0.85])
POOL_BIAS = {
    # (mean shift in trait units, SD factor) of the persona pool against the reference
    "mild": (np.array([0.15, 0.1, 0.25, 0.15, -0.25]), 0.9),
    "strong": (np.array([0.3, 0.2, 0.5, 0.3, -0.5]), 0.8),
}


def synthetic(rows: int, seed: int, persona: bool, bias: str = "mild") -> np.ndarray:
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((rows, 5)) @ np.linalg.cholesky(CORR).T
    shift, scale = POOL_BIAS[bias] if persona else (0.0, 1.0)
    return np.clip(REF_MEAN + shift + z * (REF_SD * scale), 1.0, 5.0)


def write_inputs(folder: Path, size: int, bias: str) -> tuple[Path, Path]:
    personas = folder / f"personas-{bias}-{size}.parquet"
    reference = folder / f"reference-{size}.parquet"
    if not personas.exists():
        x = synthetic(size, 1, persona=True, bias=bias)
        table = {"persona_id": pa.array([f"p{i:07d}" for i in range(size)])}
        table.update({t: x[:, j] for j, t in enumerate(TRAITS)})
        pq.write_table(pa.table(table), personas)
    if not reference.exists():
        y = synthetic(size, 2, persona=False)
        pq.write_table(pa.table({t: y[:, j] for j, t in enumerate(TRAITS)}), reference)
    return personas, reference


def tree_rss(proc: psutil.Process) -> int:
    total = 0
    with contextlib.suppress(psutil.Error):
        for p in [proc, *proc.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                total += p.memory_info().rss
    return total


def run_cli(personas: Path, reference: Path, n: int, out: Path, extra: list[str]) -> dict:
    cmd = [sys.executable, "-m", "personagen", "align", "--personas", str(personas)]
    cmd += ["--reference", str(reference), "--n", str(n), "--out", str(out), *extra]
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ps = psutil.Process(proc.pid)
    peak = [0]

    def sample() -> None:
        while proc.poll() is None:
            peak[0] = max(peak[0], tree_rss(ps))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output, _ = proc.communicate()
    wall = time.perf_counter() - started
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"align failed ({proc.returncode}):\n{output[-3000:]}")
    report = json.loads((out / "report.json").read_text())
    return {"wall_s": wall, "peak_gb": peak[0] / 2**30, "report": report, "output": output}


def scale_rows(sizes: list[int], folder: Path, extra: list[str], bias: str) -> list[dict]:
    rows = []
    for size in sizes:
        personas, reference = write_inputs(folder, size, bias)
        load_before = os.getloadavg()[0]
        run = run_cli(personas, reference, size // 10, folder / f"out-{bias}-{size}", extra)
        info = run["report"]["info"]
        ot = info["diagnostics"]["ot"]
        after = run["report"]["sets"]["after"]
        rows.append(
            {
                "size": size,
                "n": size // 10,
                "wall_s": run["wall_s"],
                "peak_gb": run["peak_gb"],
                "method": info["method"],
                "uncovered": ot["uncovered"]["mass"] if ot["uncovered"] else None,
                "balanced_iterations": (ot["balanced_stalled"] or {}).get("iterations"),
                "atoms": ot["atoms"],
                "atoms_method": ot["atoms_method"],
                "eps": ot["epsilon"],
                "iterations": ot["iterations"],
                "marginal_error": ot["marginal_error"],
                "missed_mass": ot["truncation_missed_mass"],
                "shards": ot["shards"],
                "compress_s": ot["compress_seconds"],
                "graph_s": ot["graph_seconds"],
                "sinkhorn_s": ot["sinkhorn_seconds"],
                "align_s": info["diagnostics"]["seconds"],
                "energy_x_floor": after["x_floor"]["energy"],
                "load": (load_before, os.getloadavg()[0]),
            }
        )
        print(_scale_line(rows[-1]), flush=True)
    return rows


def _scale_line(r: dict) -> str:
    missed = "-" if r["missed_mass"] is None else f"{r['missed_mass']:.1e}"
    ran = r["method"]
    if r["balanced_iterations"] is not None:
        ran += f" (balanced stalled after {r['balanced_iterations']} it)"
    uncovered = "-" if r["uncovered"] is None else f"{r['uncovered']:.1%}"
    return (
        f"| {r['size']:,} | {r['n']:,} | {ran} | {uncovered} | {r['wall_s']:.1f} | "
        f"{r['peak_gb']:.2f} | "
        f"{r['atoms']:,} ({r['atoms_method']}) | {r['eps']:.3g} | {r['iterations']} | "
        f"{r['marginal_error']:.1e} | {missed} | {r['shards']} | {r['compress_s']:.1f} | "
        f"{r['graph_s']:.1f} | {r['sinkhorn_s']:.1f} | {r['align_s']:.1f} | "
        f"{r['energy_x_floor']:.2f} | {r['load'][0]:.1f} / {r['load'][1]:.1f} |"
    )


SCALE_HEADER = (
    "| personas = reference rows | n | method ran | uncovered | wall s (CLI) | peak GB (tree RSS) "
    "| atoms | eps | iterations | marginal error | truncation missed mass | shards | compress s "
    "| graph s | sinkhorn s | align() s | energy x floor | load avg before / after |\n"
    + "|---" * 18
    + "|"
)


def pot_comparison(size: int, eps: float, max_iter: int) -> list[str]:
    """Dense POT sinkhorn_log vs personagen on the same capacity-one problem."""
    import ot

    from personagen.align.compress import compress_reference
    from personagen.align.sharded import Graph, local_shards
    from personagen.align.sinkhorn import marginal_error, sinkhorn

    x = synthetic(size, 1, persona=True)
    y = synthetic(size, 2, persona=False)
    n = size // 10
    atoms = compress_reference(y, max_atoms=10**9)
    mass = atoms.mass * n
    a = np.concatenate([mass, [size - n]])
    b = np.ones(size)
    cost = ((atoms.points[:, None, :] - x[None, :, :]) ** 2).sum(axis=2)
    cost = np.vstack([cost, np.zeros((1, size))])
    started = time.perf_counter()
    plan, pot_log = ot.sinkhorn(
        a, b, cost, eps, method="sinkhorn_log", numItermax=max_iter, stopThr=1e-9, log=True
    )
    pot_s = time.perf_counter() - started
    pot_err = marginal_error(plan[:-1].sum(axis=1), mass, plan[-1].sum(), size - n)
    pot_col = float(np.abs(plan.sum(axis=0) - b).sum() / n)
    del plan
    lines = [
        f"problem: {atoms.points.shape[0]:,} reference atoms + dummy x {size:,} personas, "
        f"n = {n:,}, eps = {eps}",
        "| solver | seconds | iterations | atom-side L1 error / n | persona-side L1 error / n |",
        "|---|---|---|---|---|",
        f"| POT ot.sinkhorn(method='sinkhorn_log', stopThr=1e-9) | {pot_s:.1f} | "
        f"{pot_log['niter']} | {pot_err:.2e} | {pot_col:.2e} |",
    ]
    tol = max(min(pot_err, pot_col), 1e-12)
    for label, knn in (("complete kernel", atoms.points.shape[0]), ("kNN kernel (k=32)", 32)):
        started = time.perf_counter()
        shards = local_shards(x, b, 65536, atoms.points.shape[0])
        graph = Graph(shards, x, atoms.points, mass, knn=knn, reverse_factor=4.0, reverse_max=256)
        result = sinkhorn(
            shards,
            mass,
            size - n,
            eps=eps,
            eps_start=1.0,
            decay=0.5,
            tol=tol,
            max_iter=20000,
            grow=graph.grow,
        )
        seconds = time.perf_counter() - started
        lines.append(
            f"| personagen, eps-scaling 1 -> {eps}, {label} | {seconds:.1f} | "
            f"{result.iterations} | {result.marginal_error:.2e} | 0 (exact by construction) |"
        )
    return lines


def approximation_error(size: int, eps: float) -> list[str]:
    """Kernel truncation and reference compression against the exact (complete, all-rows) plan."""
    from personagen.align.api import align
    from personagen.align.options import AlignOptions
    from personagen.evaluate.metrics import distribution_metrics

    x = synthetic(size, 1, persona=True)
    y = synthetic(size, 2, persona=False)
    held = synthetic(20000, 3, persona=False)
    n = size // 10
    variants = [
        ("exact: every reference row an atom, complete kernel", {"atoms": 10**9, "knn": 10**9}),
        ("kNN kernel k=32, every row an atom", {"atoms": 10**9}),
        ("kNN kernel k=16, every row an atom", {"atoms": 10**9, "knn": 16}),
        (f"k-means {size // 6:,} atoms + kNN k=32", {"atoms": size // 6}),
        (f"k-means {size // 24:,} atoms + kNN k=32", {"atoms": size // 24}),
    ]
    lines = [
        f"{size:,} personas, {size:,} reference rows, n = {n:,}, eps = {eps} (or 2 x cell var)",
        "| variant | seconds | eps used | L1 diff of inclusion probabilities / n | same choices "
        "| energy to held-out |",
        "|---|---|---|---|---|---|",
    ]
    exact = None
    for label, options in variants:
        cfg = AlignOptions(epsilon=eps, tol=1e-5, max_iter=20000, **options)
        started = time.perf_counter()
        result = align(x, y, n, method="ot", seed=0, options=cfg)
        seconds = time.perf_counter() - started
        pi = result.weights * n
        if exact is None:
            exact = (pi, set(result.indices.tolist()))
        energy = distribution_metrics(x[result.indices], held)["energy"]
        lines.append(
            f"| {label} | {seconds:.1f} | {result.diagnostics['ot']['epsilon']:.3g} | "
            f"{np.abs(pi - exact[0]).sum() / n:.2e} | "
            f"{len(exact[1] & set(result.indices.tolist())) / n:.1%} | {energy:.4f} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--bias", choices=sorted(POOL_BIAS), default="mild", help="persona pool")
    parser.add_argument("--pot", type=int, default=5000, help="size of the POT comparison")
    parser.add_argument("--pot-iter", type=int, default=2000)
    parser.add_argument("--eps", type=float, default=0.01)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--skip-pot", action="store_true")
    parser.add_argument("--approx", type=int, default=6000, help="size of the error check")
    parser.add_argument("--skip-approx", action="store_true")
    parser.add_argument("cli_args", nargs="*", help="extra arguments for personagen align")
    args = parser.parse_args()
    folder = Path(args.workdir or tempfile.mkdtemp(prefix="align-scale-"))
    folder.mkdir(parents=True, exist_ok=True)
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, "
        f"{psutil.virtual_memory().total / 2**30:.0f} GB; load average "
        f"{os.getloadavg()[0]:.2f}; {time.strftime('%Y-%m-%d %H:%M')}"
    )
    print(SCALE_HEADER)
    scale_rows([int(s) for s in args.sizes.split(",")], folder, args.cli_args, args.bias)
    if not args.skip_pot:
        print()
        print("\n".join(pot_comparison(args.pot, args.eps, args.pot_iter)))
    if not args.skip_approx:
        print()
        print("\n".join(approximation_error(args.approx, args.eps)))


if __name__ == "__main__":
    main()
