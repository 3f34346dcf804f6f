"""Human references as the commands load them, and `personagen reference build-builtin`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from personagen.config import Config
from personagen.errors import PersonagenError
from personagen.io import builtin
from personagen.io.reference import Reference, load_reference, parse_spec


def load(
    cfg: Config, spec: str, *, group: str | None = None, countries: list[str] | None = None
) -> Reference:
    """`load_reference` with the run's settings: `reference.min_rows`, `reference.builtin_rows`
    and the `seed` that samples a builtin reference."""
    return load_reference(
        spec,
        group=group,
        countries=countries,
        min_rows=cfg.reference.min_rows,
        seed=cfg.seed,
        builtin_rows=cfg.reference.builtin_rows,
    )


def build_builtin(
    cfg: Config,
    source: str,
    out: str | Path = builtin.BUILTIN_PATH,
    *,
    min_respondents: int = builtin.MIN_RESPONDENTS,
) -> dict[str, Any]:
    """Summarise every M49 group of a respondent-level reference into the builtin file."""
    kind, path = parse_spec(source)
    if kind == "builtin":
        raise PersonagenError("build the builtin reference from respondent data, not builtin:")
    reference = load_reference(source, min_rows=min_respondents)
    x = reference.trait_matrix()
    countries = (
        np.array(reference.table.column("country").to_pylist(), dtype=object)
        if "country" in reference.table.column_names
        else np.full(x.shape[0], None, dtype=object)
    )
    document = builtin.summarise_groups(
        x,
        countries,
        kind=kind,
        path=path,
        source=reference.source,
        cleaning=reference.cleaning,
        min_respondents=min_respondents,
        seed=cfg.seed,
    )
    builtin.write_builtin(document, out)
    return document
