"""`align`: choose n personas whose trait distribution matches the reference.

Methods:
- `is`: importance resampling. Density ratios p_ref / p_personas (KDE or classifier, see
  `density`), Pareto-smoothed (`weights`), then n distinct personas by pi-ps systematic sampling.
- `ot`: entropic optimal transport from the reference (compressed to atoms) to the personas, each
  persona with capacity one (`sinkhorn`, `sharded`); the mass a persona receives is its
  probability of being chosen.
- `ot-unbalanced`: `ot` with the reference marginal KL-relaxed (`AlignOptions.reg_m`): reference
  mass the pool cannot reach at a reasonable cost is left unplaced and the diagnostics say how
  much and where (`coverage`); for pools that do not cover the reference.
- `is+ot`: the paper's two stages: IS keeps `preselect * n` candidates, OT picks n among them.
- `auto`: `ot`, the method `benchmarks/align_quality.py` found best or tied-best under every bias
  (numbers in AUTO_REASON and benchmarks/RESULTS.md); `reason` in the result says so. When the
  balanced solver stalls (its last epsilon stage is predicted to need more than
  `AlignOptions.stall_iter` iterations, or it runs out of `max_iter`), auto goes on from its
  potentials with the relaxed marginal, as `ot-unbalanced`, and the diagnostics say so.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import numpy as np

from personagen import TRAITS
from personagen.align import density, select, weights
from personagen.align.compress import compress_reference
from personagen.align.coverage import uncovered
from personagen.align.options import AlignMethod, AlignOptions
from personagen.align.sharded import Graph, ShardFactory, local_shards, truncation_error
from personagen.align.sinkhorn import sinkhorn
from personagen.align.weights import kish_ess
from personagen.errors import PersonagenError

log = logging.getLogger(__name__)

METHODS = get_args(AlignMethod)
Marginal = Literal["balanced", "unbalanced", "on-stall"]

AUTO_CHOICE = "ot"
AUTO_REASON = (
    "auto chose ot: in benchmarks/align_quality.py (real BIG5 respondents; pools with no, mild "
    "and strong LLM-like bias) ot's energy distance to held-out people was the lowest or within "
    "noise of the lowest (0.91x / 0.93x / 2.46x the noise floor; is 1.00x / 0.90x / 3.48x; "
    "is+ot 0.93x / 0.89x / 2.46x) at a third of is+ot's time, and only ot scales to millions"
)
AUTO_STALL_REASON = (
    "auto chose ot, whose balanced solver stalled (the pool does not cover the reference): it "
    "went on with the reference marginal relaxed (ot-unbalanced, reg_m), which places the "
    "mass the pool can serve and reports the rest as uncovered"
)


@dataclass
class AlignResult:
    indices: np.ndarray
    """Chosen candidate rows (n of them; distinct unless `replace`), sorted."""
    weights: np.ndarray
    """Per-candidate weight (sum 1): each candidate's share of the aligned distribution."""
    method: str
    reason: str
    diagnostics: dict[str, Any] = field(default_factory=dict)


def align(
    personas: np.ndarray,
    reference: np.ndarray,
    n: int,
    *,
    method: str = "auto",
    seed: int = 0,
    replace: bool = False,
    also: tuple[np.ndarray, np.ndarray] | None = None,
    reference_weights: np.ndarray | None = None,
    options: AlignOptions | None = None,
    shards: ShardFactory = local_shards,
) -> AlignResult:
    """Choose `n` rows of `personas` (candidates x 5 traits, 1-5) to match `reference`.

    `also` = (persona columns, reference columns) already scaled to trait units (see
    `features.demographic_features`) are appended to the traits in the cost and the densities.
    `shards` makes the persona side of the transport (in this process by default, or on Ray
    actors: `personagen.runtime.align_shards`); it changes where the OT runs, never the result.
    """
    cfg = options or AlignOptions()
    started = time.perf_counter()
    x, y = _checked(personas, reference, n, replace, also, reference_weights)
    if method not in METHODS:
        raise PersonagenError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    reason = f"{method} requested"
    marginal = "unbalanced" if method == "ot-unbalanced" else "balanced"
    if method == "auto":
        method, reason, marginal = AUTO_CHOICE, AUTO_REASON, "on-stall"
    diag: dict[str, Any] = {"candidates": int(x.shape[0]), "reference_rows": int(y.shape[0])}
    if method == "is":
        w, diag["is"] = importance_weights(x, y, reference_weights, cfg, seed)
    elif method in ("ot", "ot-unbalanced"):
        w, diag["ot"] = transport_weights(
            x, y, reference_weights, n, replace, cfg, seed, shards, marginal=marginal
        )
        if marginal == "on-stall" and diag["ot"]["marginal"] == "unbalanced":
            method, reason = "ot-unbalanced", AUTO_STALL_REASON
    else:
        w = np.zeros(x.shape[0])
        w_is, diag["is"] = importance_weights(x, y, reference_weights, cfg, seed)
        keep = min(x.shape[0], math.ceil(cfg.preselect * n))
        pre = select.choose(w_is, keep, replace=False, seed=seed, points=x)
        diag["preselected"] = int(pre.size)
        w_pre, diag["ot"] = transport_weights(
            x[pre], y, reference_weights, n, replace, cfg, seed, shards
        )
        w[pre] = w_pre
    indices = select.choose(w, n, replace=replace, seed=seed, points=x)
    diag["ess"] = kish_ess(w)
    diag["seconds"] = time.perf_counter() - started
    return AlignResult(indices, w / w.sum(), method, reason, diag)


def importance_weights(
    x: np.ndarray,
    y: np.ndarray,
    y_weights: np.ndarray | None,
    cfg: AlignOptions,
    seed: int,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Smoothed importance weights (sum 1) of the candidates and their diagnostics."""
    started = time.perf_counter()
    if cfg.density == "kde":
        log_ratio = density.kde_log_ratio(x, y, reference_weights=y_weights, seed=seed)
    else:
        log_ratio = density.classifier_log_ratio(x, y, reference_weights=y_weights, seed=seed)
    smooth = weights.psis if cfg.smoothing == "psis" else weights.truncate
    result = smooth(log_ratio)
    raw_w = np.exp(log_ratio - log_ratio.max())
    return result.weights, {
        "density": cfg.density,
        "smoothing": cfg.smoothing,
        "khat": result.khat if math.isfinite(result.khat) else None,  # None: too few to fit
        "ess": result.ess,
        "ess_raw": kish_ess(raw_w),
        "seconds": time.perf_counter() - started,
    }


def transport_weights(
    x: np.ndarray,
    y: np.ndarray,
    y_weights: np.ndarray | None,
    n: int,
    replace: bool,
    cfg: AlignOptions,
    seed: int,
    shards: ShardFactory,
    marginal: Marginal = "balanced",
) -> tuple[np.ndarray, dict[str, Any]]:
    """Mass each candidate receives from the reference under capacity-one entropic OT.

    `marginal`: "balanced" places all reference mass; "unbalanced" KL-relaxes the reference side
    (`cfg.reg_m`); "on-stall" runs balanced and relaxes only if that stalls (see `sinkhorn`).
    """
    t0 = time.perf_counter()
    atoms = compress_reference(y, y_weights, max_atoms=cfg.atoms, seed=seed)
    t1 = time.perf_counter()
    eps = max(cfg.epsilon, atoms.cell_variance)
    capacity = np.full(x.shape[0], float(n) if replace else 1.0)
    atom_mass = atoms.mass * n
    dummy_mass = capacity.sum() - n
    dtype = np.float32 if cfg.float32 else np.float64
    ops = shards(x, capacity, cfg.block_rows, atoms.points.shape[0], dtype)
    relaxed = marginal == "unbalanced"
    try:
        graph = Graph(
            ops,
            x,
            atoms.points,
            atom_mass,
            knn=cfg.knn,
            reverse_factor=cfg.reverse_factor,
            reverse_max=cfg.reverse_max,
        )
        t2 = time.perf_counter()
        solve = functools.partial(
            sinkhorn,
            ops,
            atom_mass,
            dummy_mass,
            tol=cfg.tol,
            stage_tol=cfg.stage_tol,
            max_iter=cfg.max_iter,
            overrelax=cfg.overrelax,
            progress=x.shape[0] >= 100_000,
        )
        result = solve(
            eps=eps,
            eps_start=cfg.epsilon_start,
            decay=cfg.epsilon_decay,
            reg_m=cfg.reg_m if relaxed else math.inf,
            stall=cfg.stall_iter if marginal == "on-stall" else None,
            # A relaxed marginal is always feasible: no need to widen the graph for it.
            grow=None if relaxed else graph.grow,
        )
        stalled = None
        if marginal == "on-stall" and not result.converged:
            stalled, relaxed = result, True
            log.warning(
                "balanced Sinkhorn %s at marginal error %.2e after %d iterations (tolerance "
                "%.1e): the pool does not cover the reference; relaxing its marginal (reg_m %g)",
                "stalled" if result.stalled else "ran out of iterations",
                result.marginal_error,
                result.iterations,
                cfg.tol,
                cfg.reg_m,
            )
            result = solve(eps=result.eps, reg_m=cfg.reg_m, init=(result.f, result.f_dummy))
        received = ops.received()
        edges = graph.info()
        g = ops.potentials() if graph.truncated and cfg.truncation_sample else None
    finally:
        ops.close()
    missed = None
    if g is not None:
        missed = truncation_error(
            x,
            received,
            g,
            result.f,
            atoms.points,
            result.eps,
            sample=cfg.truncation_sample,
            seed=seed,
        )
    diag = {
        "atoms": int(atoms.points.shape[0]),
        "atoms_method": atoms.method,
        "reference_distinct": atoms.distinct,
        "cell_variance": atoms.cell_variance,
        "epsilon": result.eps,
        "marginal": "unbalanced" if relaxed else "balanced",
        "reg_m": cfg.reg_m if relaxed else None,
        "iterations": result.iterations + (stalled.iterations if stalled else 0),
        "marginal_error": result.marginal_error,
        "converged": result.converged,
        "stages": (stalled.stages if stalled else []) + result.stages,
        "balanced_stalled": None
        if stalled is None
        else {
            "iterations": stalled.iterations,
            "marginal_error": stalled.marginal_error,
            "stalled": stalled.stalled,
            "seconds": stalled.seconds,
        },
        "uncovered": uncovered(atoms.points, atom_mass, result.rows, TRAITS) if relaxed else None,
        "edges": edges["edges"],
        "reverse_edges": edges["reverse_edges"],
        "grown_atoms": edges["grown_atoms"],
        "kernel": "truncated to kNN" if graph.truncated else "complete",
        "truncation_missed_mass": missed,
        "shards": len(ops.sizes),
        "ray": ops.remote,
        "compress_seconds": t1 - t0,
        "graph_seconds": t2 - t1,
        "sinkhorn_seconds": result.seconds + (stalled.seconds if stalled else 0.0),
    }
    if not result.converged:
        log.warning(
            "Sinkhorn stopped at marginal error %.2e after %d iterations (tolerance %.1e); "
            "the selection is approximate",
            result.marginal_error,
            result.iterations,
            cfg.tol,
        )
    return np.maximum(received, 0.0), diag


def _checked(
    personas: np.ndarray,
    reference: np.ndarray,
    n: int,
    replace: bool,
    also: tuple[np.ndarray, np.ndarray] | None,
    reference_weights: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    x = _trait_matrix(personas, "personas")
    y = _trait_matrix(reference, "reference")
    if y.shape[0] == 0:
        raise PersonagenError("the reference is empty: nothing to align to")
    if x.shape[0] == 0:
        raise PersonagenError("there are no candidate personas")
    if n < 1:
        raise PersonagenError(f"n must be at least 1, got {n}")
    if n > x.shape[0] and not replace:
        raise PersonagenError(
            f"cannot choose {n:,} distinct personas from {x.shape[0]:,} candidates "
            "(use --replace to allow repeats, or a smaller --n)"
        )
    if reference_weights is not None:
        w = np.asarray(reference_weights, dtype=np.float64)
        if w.shape != (y.shape[0],) or not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
            raise PersonagenError("reference weights must be finite, non-negative, one per row")
    if also is not None:
        px, ry = (np.asarray(a, dtype=np.float64) for a in also)
        if px.shape[0] != x.shape[0] or ry.shape[0] != y.shape[0] or px.shape[1] != ry.shape[1]:
            raise PersonagenError("--also columns must have one row per persona / reference row")
        if not (np.isfinite(px).all() and np.isfinite(ry).all()):
            raise PersonagenError("--also columns contain missing values")
        x, y = np.hstack([x, px]), np.hstack([y, ry])
    return x, y


def _trait_matrix(values: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != len(TRAITS):
        raise PersonagenError(
            f"{name}: expected a (rows, {len(TRAITS)}) trait matrix ({', '.join(TRAITS)}), "
            f"got shape {x.shape}"
        )
    bad = ~np.isfinite(x)
    if bad.any():
        raise PersonagenError(f"{name}: {int(bad.any(axis=1).sum())} rows have a NaN trait")
    out = (x < 1) | (x > 5)
    if out.any():
        raise PersonagenError(f"{name}: {int(out.any(axis=1).sum())} rows have a trait outside 1-5")
    return x
