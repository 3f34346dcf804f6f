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

Unbalanced (`reg_m` finite): the real atoms' marginal is relaxed by reg_m * KL(row sums | mass),
with the entropy taken relative to mass x capacity, as POT's `sinkhorn_unbalanced` with
`reg_type="kl"` and `reg_m=(reg_m, inf)` (Chizat et al. 2018, "Scaling algorithms for unbalanced
transport problems"). The persona columns and the dummy row stay exact, so the chosen mass is
still n: an atom the pool cannot reach at a reasonable cost keeps only part of its mass, the rest
goes to the atoms the pool serves. In the potentials used here (plan = exp((f + g - C) / eps)),
POT's update u = (a / Kv)^phi with phi = reg_m / (reg_m + eps) reads
f <- phi f + eps (log a - phi log rows), and the fixed point is row_k = a_k exp(-f'_k / reg_m)
with f'_k = f_k - eps log a_k; the marginal error is measured against that target (a itself when
reg_m is infinite). The relaxed fixed point contracts by a factor phi per iteration, so it
converges where the balanced one crawls: a pool that misses a region of the reference makes the
balanced plan drag mass across long distances, one competition step per iteration.

Stall: with `stall` set, the last stage stops early when it cannot reach `tol` within `stall`
iterations: the error rate over the last `STALL_WINDOW` iterations (a geometric fit, or no
decrease at all) predicts more. `api` then goes on with the relaxed marginal (`auto`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

_TINY = 1e-300
STALL_WINDOW = 20
"""Iterations over which the last stage's convergence rate is measured for the stall test."""


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
    rows: np.ndarray
    """Row sums of the real atoms in the returned plan."""
    stalled: bool = False
    """The last stage stopped because it could not reach `tol` within `stall` iterations."""
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


def relaxed_target(
    f: np.ndarray, mass: np.ndarray, log_mass: np.ndarray, eps: float, reg_m: float
) -> np.ndarray:
    """Row sums the KL-relaxed marginal asks for at potentials f: mass * exp(-f' / reg_m)."""
    if math.isinf(reg_m):
        return mass
    return mass * np.exp(np.minimum(-(f - eps * log_mass) / reg_m, 700.0))


def translation(
    f: np.ndarray, log_mass: np.ndarray, eps: float, reg_m: float, real: float
) -> float:
    """The c with sum_k mass_k exp(-(f'_k + c) / reg_m) = real (Séjourné et al. 2022's
    translation-invariant step, for one relaxed side against an exact one)."""
    logits = log_mass - (f - eps * log_mass) / reg_m
    top = float(logits.max())
    return reg_m * (top + math.log(float(np.exp(logits - top).sum())) - math.log(real))


def stalled(errors: list[float], tol: float, budget: int) -> bool:
    """Whether a stage with these errors so far will miss `tol` within `budget` iterations.

    The rate is fitted over the last STALL_WINDOW iterations (err_t ~ err_0 rate^t); a window
    without a decrease, or a rate that needs more than the remaining budget, is a stall.
    """
    if len(errors) <= STALL_WINDOW:
        return False
    now, before = errors[-1], errors[-1 - STALL_WINDOW]
    if now >= before:
        return True
    rate = (now / before) ** (1 / STALL_WINDOW)
    needed = math.log(tol / now) / math.log(rate)
    return len(errors) + needed > budget


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
    reg_m: float = math.inf,
    init: tuple[np.ndarray, float | None] | None = None,
    stall: int | None = None,
    grow: Callable[[np.ndarray], bool] | None = None,
    grow_every: int = 40,
    progress: bool = False,
) -> SinkhornResult:
    """Solve the entropic transport of `atom_mass` (+ `dummy_mass`) onto `op`'s personas.

    `reg_m` relaxes the atom marginal (see the module docstring; inf = balanced). `init` =
    (f, f_dummy) warm-starts the potentials (e.g. from a stalled balanced run). `stall`, when
    given, stops the last stage once it is predicted to need more than `stall` iterations.
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
    f = np.zeros(op.n_atoms) if init is None else np.array(init[0], dtype=np.float64)
    f_dummy: float | None = None
    if use_dummy:
        f_dummy = 0.0 if init is None or init[1] is None else float(init[1])
    schedule = eps_schedule(eps, eps_start if eps_start is not None else eps, decay)
    started = time.perf_counter()
    total, err, stages, was_stalled = 0, math.inf, [], False
    for stage, current in enumerate(schedule):
        last = stage == len(schedule) - 1
        target = tol if last else max(tol, stage_tol)
        phi = 1.0 if math.isinf(reg_m) else reg_m / (reg_m + current)
        used, errors = 0, []
        while total < max_iter:
            rows, dummy_row = op.row_step(f, f_dummy, current)
            total += 1
            used += 1
            want = relaxed_target(f, atom_mass, log_mass, current, reg_m)
            err = marginal_error(rows, want, dummy_row, dummy_mass if use_dummy else 0.0)
            errors.append(err)
            if err <= target:
                break
            if last and stall is not None and stalled(errors, tol, stall):
                was_stalled = True
                break
            if last and grow is not None and used % grow_every == 0:
                grow(np.flatnonzero(rows < want * (1 - 10 * tol)))
            # omega > 1: over-relaxed Sinkhorn (Thibault et al. 2021), same fixed point.
            omega = overrelax if last else 1.0
            log_rows = np.log(np.maximum(rows, _TINY))
            f += omega * (current * (log_mass - phi * log_rows) + (phi - 1.0) * f)
            if use_dummy:
                f_dummy += omega * current * (log_dummy - math.log(max(dummy_row, _TINY)))
            if phi < 1.0:
                # The plan is the same for (f + c, f_dummy + c, g - c); pick the c whose
                # relaxed targets add up to the real mass the exact sides leave (sum of
                # capacities - dummy mass): the slow translation mode, gone in one step.
                real = rows.sum() + dummy_row - (dummy_mass if use_dummy else 0.0)
                shift = translation(f, log_mass, current, reg_m, real)
                f += shift
                if use_dummy:
                    f_dummy += shift
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
        rows=rows,
        stalled=was_stalled,
        stages=stages,
    )
