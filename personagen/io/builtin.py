"""The builtin offline reference: per-region summaries of public human Big Five data.

Shipped as `personagen/data/reference_builtin.json` (regenerate with
`personagen reference build-builtin`), so `align` works on a machine without any survey data.

The model of one group is a Gaussian copula with exact marginals
(`personagen.psychometrics.copula`). Groups resting on fewer than `MIN_RESPONDENTS` people are
not offered; the file lists them, with their counts, under `withheld`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from personagen import TRAITS
from personagen.errors import PersonagenError
from personagen.io import regions
from personagen.psychometrics.copula import fit_summary, sample_summary

BUILTIN_PATH = Path(__file__).resolve().parents[1] / "data" / "reference_builtin.json"
FORMAT = "personagen-builtin-reference/1"
MIN_RESPONDENTS = 150
"""Below this a group's correlations are too uncertain to ship: the 95% interval of a
correlation near 0 is about +-1.96/sqrt(n) = +-0.16 at n = 150 (and the KS band of a marginal
+-0.11)."""
DEFAULT_ROWS = 20_000

LICENCES = {
    "big5": (
        "Open-Source Psychometrics Project raw data (openpsychometrics.org/_rawdata), released "
        "for research use; see that page for the terms. IPIP items: public domain (ipip.ori.org)."
    ),
    "ipip-ffm": (
        "Open-Source Psychometrics Project raw data (openpsychometrics.org/_rawdata), released "
        "for research use; see that page for the terms. IPIP items: public domain (ipip.ori.org)."
    ),
    "spi": "SAPA Project data via the psychTools R package (GPL-2 | GPL-3 package licence).",
}


# --------------------------------------------------------------------------- build


def summarise_groups(
    x: np.ndarray,
    countries: np.ndarray,
    *,
    kind: str,
    path: str,
    source: str,
    cleaning: dict[str, Any],
    min_respondents: int = MIN_RESPONDENTS,
    seed: int = 0,
) -> dict[str, Any]:
    """The builtin document of respondent-level traits `x` (n, 5) and their ISO-2 `countries`
    (None where unknown): a copula summary of everyone and of every M49 group with enough
    respondents. `kind`, `path`, `source` and `cleaning` describe where `x` came from."""
    groups: dict[str, Any] = {regions.GLOBAL: {"level": "global", **fit_summary(x, seed=seed)}}
    withheld: dict[str, int] = {}
    for region in regions.REGIONS.values():
        mask = np.isin(countries, list(region.countries))
        count = int(mask.sum())
        if count < min_respondents:
            withheld[region.slug] = count
            continue
        groups[region.slug] = {
            "level": region.level,
            "name": region.name,
            "m49": region.m49,
            **fit_summary(x[mask], seed=seed),
        }
    return {
        "format": FORMAT,
        "source": source.split("; file ")[0],
        "source_file": f"{kind}:{Path(path).parent.name}/{Path(path).name}",
        "licence": LICENCES.get(kind, "see the source"),
        "built": date.today().isoformat(),
        "build_command": f"personagen reference build-builtin --source {kind}:PATH",
        "model": (
            "Gaussian copula: each trait's exact empirical marginal (counts on the observed "
            "score values) joined by a latent normal correlation calibrated so that samples "
            "reproduce the group's Pearson correlations"
        ),
        "min_respondents": int(min_respondents),
        "cleaning": cleaning,
        "groups": groups,
        "withheld": withheld,
    }


def write_builtin(document: dict[str, Any], out: str | Path = BUILTIN_PATH) -> Path:
    """Write the document atomically (compact JSON: the file ships in the package)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(document, separators=(",", ":")) + "\n", encoding="utf-8")
    tmp.replace(out)
    return out


def describe_build(document: dict[str, Any]) -> str:
    """One line: the groups offered and withheld, with their respondents."""
    offered = ", ".join(f"{k} {v['respondents']:,}" for k, v in document["groups"].items())
    withheld = ", ".join(f"{k} {v:,}" for k, v in document["withheld"].items()) or "none"
    return (
        f"{len(document['groups'])} groups ({offered}); withheld "
        f"(< {document['min_respondents']} respondents): {withheld}"
    )


# --------------------------------------------------------------------------- load


def read_builtin(path: str | Path = BUILTIN_PATH) -> dict[str, Any]:
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PersonagenError(
            f"the builtin reference file {path} is missing; rebuild it with "
            "`personagen reference build-builtin --source big5:PATH`"
        ) from None
    if document.get("format") != FORMAT:
        raise PersonagenError(f"{path} is not a {FORMAT} file")
    return document


def builtin_groups(path: str | Path = BUILTIN_PATH) -> list[dict[str, Any]]:
    """Each group the file knows: name, respondents, and whether it is offered."""
    document = read_builtin(path)
    rows = [
        {"group": name, "respondents": g["respondents"], "offered": True}
        for name, g in document["groups"].items()
    ]
    rows += [
        {"group": name, "respondents": n, "offered": False}
        for name, n in document["withheld"].items()
    ]
    return rows


@dataclass(frozen=True)
class BuiltinSample:
    """Rows sampled from one group's summary, with what they rest on."""

    table: pa.Table
    source: str
    cleaning: dict[str, Any]
    group: str
    respondents: int


def sample_builtin(
    name: str,
    *,
    group: str | None = None,
    countries: list[str] | None = None,
    seed: int = 0,
    rows: int | None = None,
    path: str | Path = BUILTIN_PATH,
) -> BuiltinSample:
    """`builtin:<name>` (optionally narrowed by `group`) as rows sampled from its summary."""
    if countries:
        raise PersonagenError(
            "the builtin reference holds region summaries only; to select countries use a "
            "respondent-level reference such as big5:PATH or ipip-ffm:PATH"
        )
    wanted = regions.canonical(name)
    if group is not None:
        chosen = regions.canonical(group)
        if wanted not in (regions.GLOBAL, chosen):
            raise PersonagenError(
                f"builtin:{name} with group {group!r}: name one group (builtin:{chosen})"
            )
        wanted = chosen
    document = read_builtin(path)
    summary = document["groups"].get(wanted)
    if summary is None:
        if wanted in document["withheld"]:
            count = document["withheld"][wanted]
            raise PersonagenError(
                f"builtin group {wanted!r} is not offered: it rests on {count:,} respondents "
                f"(fewer than {document['min_respondents']}); use a respondent-level reference "
                f"with --group {wanted}"
            )
        if wanted != regions.GLOBAL:
            regions.resolve_group(wanted)
        raise PersonagenError(f"the builtin reference has no group {wanted!r}")
    respondents = int(summary["respondents"])
    n = int(rows or DEFAULT_ROWS)
    if n < 1:
        raise PersonagenError(f"builtin reference rows must be positive, got {n}")
    x = sample_summary(summary, n, seed=seed)
    table = pa.table({t: x[:, j] for j, t in enumerate(TRAITS)})
    if wanted != regions.GLOBAL:
        table = table.append_column("region", pa.array([wanted] * n, pa.string()))
    source = (
        f"builtin summary '{wanted}' ({respondents:,} respondents) of {document['source']}; "
        f"{document['licence']} Model: {document['model']}"
    )
    cleaning = {
        "rows_read": n,
        "dropped": {},
        "rules": {
            "sampling": f"{n:,} rows sampled (seed {seed}) from the copula summary of "
            f"{respondents:,} respondents; the source's own cleaning is under `source_cleaning`"
        },
        "rows_kept": n,
        "notes": {"respondents": respondents},
        "source_cleaning": document["cleaning"],
    }
    return BuiltinSample(table, source, cleaning, wanted, respondents)
