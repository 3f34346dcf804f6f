"""Entropic optimal transport in the log domain, with epsilon-scaling, stopping on marginal error.

The transport is between "atoms" (rows: the reference, possibly compressed, plus an optional
dummy row) and "personas" (columns, each with a capacity). The persona side is held by a
`KernelOperator`: one or many blocks of personas, in this process or on Ray workers. Each
iteration the operator updates every persona's potential g_j so that persona j's column of the
plan sums to its capacity (a log-sum-exp over its atoms) and returns, per atom, the sum of its
row of the updated plan; the driver then corrects the atom potentials f_k so their rows match
the atom masses. Everything is computed as exp((f_k + g_j - C_kj) / eps) after subtracting each
persona's largest exponent, so no kernel value ever overflows or vanishes as a whole, whatever
eps is (the "log-domain" Sinkhorn of Schmitzer 2019 / Peyré & Cuturi 2019, sec. 4.4).

epsilon-scaling: eps starts large (fast, smooth) and is divided by `decay` per stage down to the
target; each stage starts from the previous stage's potentials. Intermediate stages stop at a
looser error, the last at `tol`.

The dummy row (a zero-cost atom connected to every persona) absorbs the capacity of personas that
are not chosen: with total capacity P and real atom mass n, it holds P - n, so the real mass a
persona receives is its probability of being among the n chosen.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

_TINY = 1e-300


class KernelOperator(Protocol):
    """The persona side of the transport (see `personagen.align.sharded`)."""

    n_atoms: int

    def row_step(
        self, f: np.ndarray, f_dummy: float | None, eps: float
    ) -> tuple[np.ndarray, float]:
        """Refit every persona potential; return per-atom row sums and the dummy's row sum."""
        ...

    def received(self) -> np.ndarray:
        """Mass each persona received from the real atoms in the last step (persona order)."""
        ...

    def potentials(self) -> np.ndarray:
        """The persona potentials g (persona order)."""
        ...


@dataclass(frozen=True)
class SinkhornResult:
    f: np.ndarray
    f_dummy: float | None
    eps: float
    iterations: int
    marginal_error: float
    """L1 error of the atom marginals (dummy included) / total real atom mass, of the returned
    plan, whose persona marginals are exact."""
    converged: bool
    seconds: float
    stages: list[dict[str, float]] = field(default_factory=list)


def eps_schedule(eps: float, eps_start: float, decay: float) -> list[float]:
    """eps_start, eps_start*decay, ... down to eps (always ends exactly at eps)."""
    if not 0 < decay < 1:
        raise ValueError("decay must be in (0, 1)")
    stages = []
    current = max(eps_start, eps)
    while current > eps * (1 + 1e-9):
        stages.append(current)
        current *= decay
    stages.append(eps)
    return stages


def marginal_error(
    rows: np.ndarray, mass: np.ndarray, dummy_row: float = 0.0, dummy_mass: float = 0.0
) -> float:
    return float((np.abs(rows - mass).sum() + abs(dummy_row - dummy_mass)) / mass.sum())


def sinkhorn(
    op: KernelOperator,
    atom_mass: np.ndarray,
    dummy_mass: float = 0.0,
    *,
    eps: float,
    eps_start: float | None = None,
    decay: float = 0.5,
    tol: float = 1e-3,
    stage_tol: float = 1e-2,
    max_iter: int = 3000,
    overrelax: float = 1.0,
    grow: Callable[[np.ndarray], bool] | None = None,
    grow_every: int = 40,
    progress: bool = False,
) -> SinkhornResult:
    """Solve the entropic transport of `atom_mass` (+ `dummy_mass`) onto `op`'s personas.

    `grow(atoms)`, when given, is asked every `grow_every` iterations of the last stage to widen
    the kernel graph around atoms still under-served (a truncated kernel can be infeasible);
    it returns False when it cannot.
    """
    import logging

    log = logging.getLogger(__name__)
    atom_mass = np.asarray(atom_mass, dtype=np.float64)
    log_mass = np.log(np.maximum(atom_mass, _TINY))
    use_dummy = dummy_mass > 0
    log_dummy = math.log(dummy_mass) if use_dummy else 0.0
    f = np.zeros(op.n_atoms)
    f_dummy: float | None = 0.0 if use_dummy else None
    schedule = eps_schedule(eps, eps_start if eps_start is not None else eps, decay)
    started = time.perf_counter()
    total, err, stages = 0, math.inf, []
    for stage, current in enumerate(schedule):
        last = stage == len(schedule) - 1
        target = tol if last else max(tol, stage_tol)
        used = 0
        while total < max_iter:
            rows, dummy_row = op.row_step(f, f_dummy, current)
            total += 1
            used += 1
            err = marginal_error(rows, atom_mass, dummy_row, dummy_mass if use_dummy else 0.0)
            if err <= target:
                break
            if last and grow is not None and used % grow_every == 0:
                grow(np.flatnonzero(rows < atom_mass * (1 - 10 * tol)))
            # omega > 1: over-relaxed Sinkhorn (Thibault et al. 2021), same fixed point.
            omega = overrelax if last else 1.0
            f += omega * current * (log_mass - np.log(np.maximum(rows, _TINY)))
            if use_dummy:
                f_dummy += omega * current * (log_dummy - math.log(max(dummy_row, _TINY)))
        stages.append({"eps": current, "iterations": used, "marginal_error": err})
        if progress:
            log.info(
                "sinkhorn stage %d/%d eps=%.4g: %d iterations, marginal error %.2e (%.1f s)",
                stage + 1,
                len(schedule),
                current,
                used,
                err,
                time.perf_counter() - started,
            )
        if total >= max_iter:
            break
    return SinkhornResult(
        f=f,
        f_dummy=f_dummy,
        eps=schedule[-1],
        iterations=total,
        marginal_error=err,
        converged=err <= tol and stages[-1]["eps"] == schedule[-1],
        seconds=time.perf_counter() - started,
        stages=stages,
    )
