"""`personagen evaluate`: a persona set against a reference, as a table and optionally a report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from personagen.config import Config
from personagen.evaluate.report import compare, render_report
from personagen.io.personas import read_personas
from personagen.io.reference import configured_reference


def evaluate(
    personas: str,
    reference: str,
    cfg: Config,
    *,
    group: str | None = None,
    countries: list[str] | None = None,
    before: str | None = None,
    out: str | None = None,
) -> tuple[dict[str, Any], tuple[Path, Path] | None]:
    """Compare `personas` (and optionally a `before` set) with the reference; write the report
    into `out` when given. Returns the comparison and the report paths."""
    ref = configured_reference(reference, cfg, group=group, countries=countries)
    after = read_personas(personas)
    earlier = read_personas(before) if before else None
    ref_x = ref.trait_matrix()
    report = compare(
        ref_x,
        after.trait_matrix(),
        earlier.trait_matrix() if earlier else None,
        reference_weights=ref.weights(),
        seed=cfg.seed,
        floor_repeats=cfg.evaluate.floor_repeats,
        energy_max_rows=cfg.evaluate.energy_max_rows,
        n_projections=cfg.evaluate.sliced_projections,
    )
    paths = None
    if out:
        info = {
            "personas": personas,
            "personas_unscored_left_out": after.unscored,
            "before": before,
            "reference": ref.describe(),
            "reference_source": ref.source,
            "reference_cleaning": ref.cleaning,
        }
        paths = render_report(
            out,
            report,
            info=info,
            reference=ref_x,
            after=after.trait_matrix(),
            before=earlier.trait_matrix() if earlier else None,
            reference_weights=ref.weights(),
        )
    return report, paths
