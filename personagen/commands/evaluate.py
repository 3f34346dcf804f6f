"""`personagen evaluate`: a persona set against a reference, as a table and optionally a report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from personagen.config import Config
from personagen.evaluate.report import compare, render_report
from personagen.io.lock import check_out
from personagen.io.personas import PersonaSet
from personagen.io.reference import Reference


def evaluate(
    cfg: Config,
    personas: PersonaSet,
    reference: Reference,
    *,
    before: PersonaSet | None = None,
    out: str | Path | None = None,
) -> tuple[dict[str, Any], tuple[Path, Path] | None]:
    """Compare `personas` (and optionally a `before` set) with the reference; write the report
    into `out` when given. Returns the comparison and the report paths."""
    if out:
        check_out(out)
    ref_x = reference.trait_matrix()
    report = compare(
        ref_x,
        personas.trait_matrix(),
        before.trait_matrix() if before else None,
        reference_weights=reference.weights(),
        seed=cfg.seed,
        floor_repeats=cfg.evaluate.floor_repeats,
        energy_max_rows=cfg.evaluate.energy_max_rows,
        n_projections=cfg.evaluate.sliced_projections,
    )
    paths = None
    if out:
        info = {
            "personas": personas.path,
            "instrument": personas.instrument,
            "personas_unscored_left_out": personas.unscored,
            "before": before.path if before else None,
            "reference": reference.describe(),
            "reference_source": reference.source,
            "reference_cleaning": reference.cleaning,
        }
        paths = render_report(
            out,
            report,
            info=info,
            reference=ref_x,
            after=personas.trait_matrix(),
            before=before.trait_matrix() if before else None,
            reference_weights=reference.weights(),
        )
    return report, paths
