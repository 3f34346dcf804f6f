"""The comparison table of several persona sets against one human reference (the paper's table).

For each set: every distance of `distribution_metrics` against the reference, each divided by
its noise floor (n real people drawn from the reference against the rest, `noise_floor`, for the
set's own n), the same on a held-out instrument against that instrument's own human data where
the set has scores on it, the % error reduction of each distance against a named baseline set,
and the set's diversity (`personagen.evaluate.diversity`). Plain numpy in, plain data out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from personagen.evaluate.diversity import mean_cosine_distance, trait_diversity, vendi_score
from personagen.evaluate.metrics import (
    ENERGY_MAX_ROWS,
    HEADLINE,
    SLICED_PROJECTIONS,
    distribution_metrics,
    floor_ratios,
    noise_floor,
)


@dataclass
class SetData:
    """One persona set as the comparison sees it."""

    name: str
    traits: np.ndarray
    """(n, 5) traits on the instrument the set was chosen on."""
    held_out: np.ndarray | None = None
    """(m, 5) traits of the set's personas scored on the held-out instrument (m <= n)."""
    embeddings: np.ndarray | None = None
    """(n, d) narrative embeddings; None where the set has no narratives."""


@dataclass(frozen=True)
class Settings:
    seed: int = 0
    floor_repeats: int = 5
    energy_max_rows: int = ENERGY_MAX_ROWS
    n_projections: int = SLICED_PROJECTIONS


class Floors:
    """Noise floors of one reference, by set size (sets of one size share theirs)."""

    def __init__(self, reference: np.ndarray, settings: Settings) -> None:
        self.reference = reference
        self.settings = settings
        self._by_n: dict[int, dict[str, Any]] = {}

    def __call__(self, n: int) -> dict[str, Any]:
        if n not in self._by_n:
            s = self.settings
            self._by_n[n] = noise_floor(
                self.reference,
                n,
                repeats=s.floor_repeats,
                seed=s.seed,
                energy_max_rows=s.energy_max_rows,
                n_projections=s.n_projections,
            )
        return self._by_n[n]


def against(x: np.ndarray, floors: Floors) -> dict[str, Any]:
    """Metrics of `x` against the floors' reference, with the floor and each metric x floor."""
    s = floors.settings
    metrics = distribution_metrics(
        x,
        floors.reference,
        seed=s.seed,
        energy_max_rows=s.energy_max_rows,
        n_projections=s.n_projections,
    )
    floor = floors(x.shape[0])
    return {"metrics": metrics, "floor": floor, "x_floor": floor_ratios(metrics, floor)}


def reduction(value: dict[str, Any], baseline: dict[str, Any]) -> dict[str, float | None]:
    """% of the baseline's error each headline distance removes: 100 (b - v) / b."""
    out: dict[str, float | None] = {}
    for key in HEADLINE:
        b, v = baseline["metrics"][key], value["metrics"][key]
        out[key] = None if b is None or v is None or b <= 0 else 100.0 * (b - v) / b
    return out


def compare_sets(
    sets: list[SetData],
    reference: np.ndarray,
    held_out_reference: np.ndarray | None = None,
    *,
    baseline: str | None = None,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """The comparison of `sets` against `reference` (and on the held-out instrument against
    `held_out_reference`), with reductions against the set named `baseline`."""
    settings = settings or Settings()
    names = [s.name for s in sets]
    if baseline is not None and baseline not in names:
        raise ValueError(f"baseline set {baseline!r} is not among the sets ({', '.join(names)})")
    floors = Floors(reference, settings)
    held_floors = Floors(held_out_reference, settings) if held_out_reference is not None else None
    rows: dict[str, dict[str, Any]] = {}
    for data in sets:
        row: dict[str, Any] = {"n": int(data.traits.shape[0])}
        row["in_distribution"] = against(data.traits, floors)
        row["held_out"] = None
        if held_floors is not None and data.held_out is not None and data.held_out.shape[0] > 1:
            row["held_out"] = against(data.held_out, held_floors) | {
                "n": int(data.held_out.shape[0])
            }
        row["diversity"] = trait_diversity(
            data.traits, reference, seed=settings.seed, repeats=settings.floor_repeats
        )
        row["narratives"] = None
        if data.embeddings is not None and data.embeddings.shape[0] > 1:
            row["narratives"] = {
                "vendi": vendi_score(data.embeddings),
                "mean_cosine_distance": mean_cosine_distance(data.embeddings),
            }
        rows[data.name] = row
    if baseline is not None:
        base = rows[baseline]
        for row in rows.values():
            row["in_distribution"]["reduction_pct"] = reduction(
                row["in_distribution"], base["in_distribution"]
            )
            if row["held_out"] is not None and base["held_out"] is not None:
                row["held_out"]["reduction_pct"] = reduction(row["held_out"], base["held_out"])
    return {
        "n_reference": int(reference.shape[0]),
        "n_held_out_reference": (
            None if held_out_reference is None else int(held_out_reference.shape[0])
        ),
        "baseline": baseline,
        "sets": rows,
    }
