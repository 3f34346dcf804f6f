"""The builtin offline reference: per-region summaries of public human Big Five data.

Shipped as `personagen/data/reference_builtin.json` (regenerate with
`personagen reference build-builtin`), so `align` works on a machine without any survey data.

The model of one group is a Gaussian copula with exact marginals:
- each trait's marginal is the group's empirical distribution itself, stored as counts on the
  observed score values (trait scores are means of 10 answers, so about 41 values each); samples
  therefore have the source's means, SDs and discreteness, not a smoothed version of them;
- the dependence is a latent normal correlation matrix, started from the normal-scores (van der
  Waerden) correlation and then calibrated by fixed-point steps with common random numbers until
  samples reproduce the source's *Pearson* correlations: discrete margins attenuate a copula's
  correlation (by 0.01-0.03 here), which an uncalibrated copula would leave as a bias.
Groups resting on fewer than `MIN_RESPONDENTS` people are not offered; the file lists them, with
their counts, under `withheld`.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
from scipy import special, stats

from personagen import TRAITS
from personagen.errors import PersonagenError
from personagen.io import regions

if TYPE_CHECKING:
    from personagen.io.reference import Reference

BUILTIN_PATH = Path(__file__).resolve().parents[1] / "data" / "reference_builtin.json"
FORMAT = "personagen-builtin-reference/1"
MIN_RESPONDENTS = 150
"""Below this a group's correlations are too uncertain to ship: the 95% interval of a
correlation near 0 is about +-1.96/sqrt(n) = +-0.16 at n = 150 (and the KS band of a marginal
+-0.11)."""
DEFAULT_ROWS = 20_000
_CALIBRATION_ROWS = 200_000
_CALIBRATION_STEPS = 6
_DECIMALS = 6

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


# --------------------------------------------------------------------------- the model


def fit_summary(x: np.ndarray, *, seed: int = 0) -> dict[str, Any]:
    """The copula summary of an (n, 5) trait sample: marginal counts plus latent correlation."""
    n = x.shape[0]
    marginals = []
    for j in range(x.shape[1]):
        values, counts = np.unique(np.round(x[:, j], 4), return_counts=True)
        marginals.append({"values": values.tolist(), "counts": counts.tolist()})
    target = np.corrcoef(x, rowvar=False)
    ranks = np.column_stack([stats.rankdata(x[:, j]) for j in range(x.shape[1])])
    latent = _nearest_correlation(np.corrcoef(special.ndtri(ranks / (n + 1)), rowvar=False))
    z = np.random.default_rng(seed).standard_normal((_CALIBRATION_ROWS, x.shape[1]))
    best, best_error = latent, np.inf
    for _ in range(_CALIBRATION_STEPS):
        achieved = np.corrcoef(_transform(z, latent, marginals), rowvar=False)
        error = float(np.max(np.abs(achieved - target)))
        if error < best_error:
            best, best_error = latent, error
        latent = _nearest_correlation(latent + (target - achieved))
    return {
        "respondents": int(n),
        "mean": _rounded(x.mean(axis=0)),
        "sd": _rounded(x.std(axis=0, ddof=1)),
        "pearson": _rounded(target),
        "latent_correlation": _rounded(best),
        "calibration_max_error": round(best_error, _DECIMALS),
        "marginals": dict(zip(TRAITS, marginals, strict=True)),
    }


def sample_summary(summary: dict[str, Any], n: int, seed: int = 0) -> np.ndarray:
    """n rows drawn from a group summary (float64, `TRAITS` order, on the source's values)."""
    marginals = [summary["marginals"][t] for t in TRAITS]
    z = np.random.default_rng(seed).standard_normal((n, len(TRAITS)))
    return _transform(z, np.asarray(summary["latent_correlation"]), marginals)


def _transform(z: np.ndarray, corr: np.ndarray, marginals: list[dict[str, list]]) -> np.ndarray:
    """Correlate standard normals, map to uniforms, then through each marginal's quantiles."""
    u = special.ndtr(z @ np.linalg.cholesky(corr).T)
    out = np.empty_like(u)
    for j, marginal in enumerate(marginals):
        values = np.asarray(marginal["values"], dtype=np.float64)
        cdf = np.cumsum(marginal["counts"]) / np.sum(marginal["counts"])
        out[:, j] = values[np.minimum(np.searchsorted(cdf, u[:, j]), len(values) - 1)]
    return out


def _nearest_correlation(matrix: np.ndarray, floor: float = 1e-6) -> np.ndarray:
    """Symmetric, positive definite, unit diagonal: eigenvalues clipped, then rescaled."""
    sym = (matrix + matrix.T) / 2
    vals, vecs = np.linalg.eigh(sym)
    fixed = (vecs * np.maximum(vals, floor)) @ vecs.T
    d = np.sqrt(np.diag(fixed))
    out = fixed / np.outer(d, d)
    np.fill_diagonal(out, 1.0)
    return out


def _rounded(values: np.ndarray) -> Any:
    return np.round(np.asarray(values, dtype=np.float64), _DECIMALS).tolist()


# --------------------------------------------------------------------------- build


def build_builtin(
    source: str,
    out: str | Path = BUILTIN_PATH,
    *,
    min_respondents: int = MIN_RESPONDENTS,
    seed: int = 0,
) -> dict[str, Any]:
    """Summarise every M49 group of a respondent-level reference and write the JSON file."""
    from personagen.io.reference import load_reference, parse_spec

    kind, path = parse_spec(source)
    if kind == "builtin":
        raise PersonagenError("build the builtin reference from respondent data, not builtin:")
    reference = load_reference(source, min_rows=min_respondents)
    x = reference.trait_matrix()
    country = (
        np.array(reference.table.column("country").to_pylist(), dtype=object)
        if "country" in reference.table.column_names
        else np.full(x.shape[0], None, dtype=object)
    )
    groups: dict[str, Any] = {regions.GLOBAL: {"level": "global", **fit_summary(x, seed=seed)}}
    withheld: dict[str, int] = {}
    for region in regions.REGIONS.values():
        mask = np.isin(country, list(region.countries))
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
    document = {
        "format": FORMAT,
        "source": reference.source.split("; file ")[0],
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
        "cleaning": reference.cleaning,
        "groups": groups,
        "withheld": withheld,
    }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(document, separators=(",", ":")) + "\n", encoding="utf-8")
    tmp.replace(out)
    return document


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


def load_builtin(
    name: str,
    *,
    group: str | None = None,
    countries: list[str] | None = None,
    min_rows: int = 50,
    seed: int = 0,
    rows: int | None = None,
    path: str | Path = BUILTIN_PATH,
) -> Reference:
    """`builtin:<name>` (optionally narrowed by `group`) as a sampled `Reference`."""
    from personagen.io.reference import Reference, check_rows

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
    check_rows(respondents, min_rows=min_rows, spec=f"builtin:{name}", label=wanted)
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
    return Reference(
        table=table, source=source, cleaning=cleaning, spec=f"builtin:{name}", group=wanted
    )
