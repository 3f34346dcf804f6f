"""The evaluation report: `report.json` (all numbers) and a self-contained `report.html`.

The HTML embeds its figures as base64 PNG (`personagen.evaluate.figures`) and has no external
CSS or JS, so it opens offline from any folder: per-trait histograms of the personas
before/after against the reference, correlation heatmaps, the metrics table with each value as a
multiple of its noise floor, and the weight distribution (with Kish ESS) when the caller passes
weights.
"""

from __future__ import annotations

import html
import json
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from personagen import TRAITS, __version__
from personagen.align.weights import kish_ess
from personagen.errors import PersonagenError
from personagen.evaluate.figures import heatmaps, histograms, weights_figure
from personagen.evaluate.metrics import (
    ENERGY_MAX_ROWS,
    HEADLINE,
    SLICED_PROJECTIONS,
    distribution_metrics,
    floor_ratios,
    noise_floor,
)

LABELS = {
    "energy": "energy distance",
    "sliced_wasserstein": "sliced Wasserstein-2",
    "w1_mean": "Wasserstein-1 (mean over traits)",
    "ks_max": "Kolmogorov-Smirnov (max over traits)",
    "mean_abs_error": "|mean error| (mean over traits)",
    "sd_abs_error": "|SD error| (mean over traits)",
    "corr_error_max": "correlation error (max |r diff|)",
    "corr_error_rmse": "correlation error (RMSE)",
}


def compare(
    reference: np.ndarray,
    after: np.ndarray,
    before: np.ndarray | None = None,
    *,
    weights: np.ndarray | None = None,
    reference_weights: np.ndarray | None = None,
    seed: int = 0,
    floor_repeats: int = 5,
    energy_max_rows: int = ENERGY_MAX_ROWS,
    n_projections: int = SLICED_PROJECTIONS,
) -> dict[str, Any]:
    """Metrics of `after` (and `before`) against the reference, each with its own-size floor.

    `weights` are the alignment's candidate weights (summarised: ESS, spread);
    `reference_weights` are survey weights of the reference rows (its `weight` column).
    """
    opts = {"seed": seed, "energy_max_rows": energy_max_rows, "n_projections": n_projections}
    floors: dict[int, dict[str, Any]] = {}

    def floor_for(n: int) -> dict[str, Any]:
        if n not in floors:
            floors[n] = noise_floor(
                reference, n, repeats=floor_repeats, weights=reference_weights, **opts
            )
        return floors[n]

    sets: dict[str, Any] = {}
    for name, x in (("before", before), ("after", after)):
        if x is None:
            continue
        metrics = distribution_metrics(x, reference, y_weights=reference_weights, **opts)
        floor = floor_for(x.shape[0])
        sets[name] = {"metrics": metrics, "floor": floor, "x_floor": floor_ratios(metrics, floor)}
    report: dict[str, Any] = {
        "personagen": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "traits": list(TRAITS),
        "n_reference": int(reference.shape[0]),
        "n_after": int(after.shape[0]),
        "n_before": None if before is None else int(before.shape[0]),
        "sets": sets,
    }
    if weights is not None:
        report["weights"] = weights_summary(weights)
    return report


def weights_summary(weights: np.ndarray) -> dict[str, Any]:
    """Kish ESS and the shape of the candidate weights (how concentrated the resampling is)."""
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 1 or w.size == 0 or not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise PersonagenError("weights must be finite, non-negative, with a positive sum")
    p = w / w.sum()
    top = np.sort(p)[::-1]
    k = max(1, math.ceil(0.01 * w.size))
    return {
        "n": int(w.size),
        "ess": kish_ess(w),
        "ess_fraction": kish_ess(w) / w.size,
        "zero": int((w == 0).sum()),
        "max_share": float(top[0]),
        "top_1pct_share": float(top[:k].sum()),
        "quantiles": dict(
            zip(
                ["min", "p01", "p10", "p50", "p90", "p99", "max"],
                np.quantile(w, [0, 0.01, 0.1, 0.5, 0.9, 0.99, 1]).tolist(),
                strict=True,
            )
        ),
    }


def write_report(
    out_dir: str | Path,
    *,
    reference: np.ndarray,
    after: np.ndarray,
    before: np.ndarray | None = None,
    info: dict[str, Any],
    weights: np.ndarray | None = None,
    reference_weights: np.ndarray | None = None,
    seed: int = 0,
    floor_repeats: int = 5,
    energy_max_rows: int = ENERGY_MAX_ROWS,
    n_projections: int = SLICED_PROJECTIONS,
    figures: dict[str, str] | None = None,
) -> tuple[Path, Path]:
    """Compute the comparison and write `report.json` and `report.html` into `out_dir`.

    `info` is stored as given (method, parameters, timings...); it must be JSON-serialisable
    (numpy scalars and arrays are converted). `figures` (title -> base64 PNG, see
    `png_base64`) are added to the HTML after the built-in ones. Returns the two paths.
    """
    report = compare(
        reference,
        after,
        before,
        weights=weights,
        reference_weights=reference_weights,
        seed=seed,
        floor_repeats=floor_repeats,
        energy_max_rows=energy_max_rows,
        n_projections=n_projections,
    )
    return render_report(
        out_dir,
        report,
        info=info,
        reference=reference,
        after=after,
        before=before,
        weights=weights,
        reference_weights=reference_weights,
        figures=figures,
    )


def render_report(
    out_dir: str | Path,
    report: dict[str, Any],
    *,
    info: dict[str, Any],
    reference: np.ndarray,
    after: np.ndarray,
    before: np.ndarray | None = None,
    weights: np.ndarray | None = None,
    reference_weights: np.ndarray | None = None,
    figures: dict[str, str] | None = None,
) -> tuple[Path, Path]:
    """Write a `compare` result (plus `info` and extra `figures`) as report.json and .html."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    document = {**report, "info": info}
    json_path = out / "report.json"
    text = json.dumps(document, indent=2, default=jsonable, allow_nan=False)
    atomic_write(json_path, text + "\n")
    builtin = {
        "histograms": histograms(reference, after, before, reference_weights),
        "correlations": heatmaps(reference, after, before, reference_weights),
    }
    if weights is not None:
        builtin["weights"] = weights_figure(np.asarray(weights, dtype=np.float64))
    html_path = out / "report.html"
    atomic_write(html_path, _html(document, builtin, figures or {}))
    return json_path, html_path


def atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"report info value of type {type(value).__name__} is not JSON-serialisable")


# --------------------------------------------------------------------------- HTML

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;
color:#222;max-width:1200px}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em}
table{border-collapse:collapse;font-size:.9em;margin:.5em 0}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
.good{color:#1b7a43}.bad{color:#b3261e}img{max-width:100%}.note{color:#666;font-size:.85em}
"""


def fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e4 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return html.escape(str(value))


def ratio_cell(ratio: float | None) -> str:
    if ratio is None:
        return "<td>-</td>"
    css = "good" if ratio <= 2 else "bad"
    return f'<td class="{css}">{ratio:.2f}x</td>'


def metrics_rows(report: dict[str, Any]) -> list[tuple[str, list[Any]]]:
    """(label, values) rows of the headline table: per set value and x floor, then the floor."""
    sets = report["sets"]
    rows = []
    for key in HEADLINE:
        values: list[Any] = []
        for name in ("before", "after"):
            if name in sets:
                values += [sets[name]["metrics"][key], sets[name]["x_floor"][key]]
        values.append(sets["after"]["floor"]["mean"][key])
        rows.append((LABELS[key], values))
    return rows


def _metrics_table(report: dict[str, Any]) -> str:
    sets = report["sets"]
    head = ["metric"]
    for name in ("before", "after"):
        if name in sets:
            head += [name, "x floor"]
    head.append(f"floor (n={sets['after']['floor']['n']:,})")
    parts = ["<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"]
    for label, values in metrics_rows(report):
        cells = [f"<td>{html.escape(label)}</td>"]
        for i, value in enumerate(values[:-1]):
            cells.append(ratio_cell(value) if i % 2 else f"<td>{fmt(value)}</td>")
        cells.append(f"<td>{fmt(values[-1])}</td>")
        parts.append("<tr>" + "".join(cells) + "</tr>")
    parts.append("</table>")
    return "".join(parts)


def _trait_table(report: dict[str, Any]) -> str:
    sets = report["sets"]
    head = ["trait"]
    for name in ("before", "after"):
        if name in sets:
            head += [f"{name} W1", f"{name} KS", f"{name} mean err", f"{name} SD err"]
    parts = ["<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"]
    for trait in TRAITS:
        cells = [f"<td>{trait}</td>"]
        for name in ("before", "after"):
            if name not in sets:
                continue
            m = sets[name]["metrics"]
            for key in ("w1", "ks", "mean_error", "sd_error"):
                cells.append(f"<td>{fmt(m[key][trait], 3)}</td>")
        parts.append("<tr>" + "".join(cells) + "</tr>")
    parts.append("</table>")
    return "".join(parts)


def _kv_table(data: dict[str, Any]) -> str:
    rows = []
    for key, value in data.items():
        shown = json.dumps(value, default=jsonable) if isinstance(value, dict | list) else value
        rows.append(f"<tr><td>{html.escape(str(key))}</td><td>{fmt(shown)}</td></tr>")
    return "<table>" + "".join(rows) + "</table>"


def _html(document: dict[str, Any], figures: dict[str, str], extra: dict[str, str]) -> str:
    sets = document["sets"]
    after = sets["after"]
    floor = after["floor"]
    method = after["metrics"]["method"]
    sections = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<title>personagen alignment report</title>",
        f"<style>{CSS}</style></head><body>",
        "<h1>Persona set vs human reference</h1>",
        f"<p>reference rows: {document['n_reference']:,} &middot; personas after: "
        f"{document['n_after']:,}"
        + (
            f" &middot; before: {document['n_before']:,}"
            if document.get("n_before") is not None
            else ""
        )
        + f" &middot; personagen {html.escape(document['personagen'])} &middot; "
        f"{html.escape(document['created'])}</p>",
        "<h2>Metrics (x floor: the metric divided by its noise floor; &le; 2x in green)</h2>",
        _metrics_table(document),
        f"<p class='note'>Noise floor: what {floor['n']:,} real people score, the same metric "
        f"for {html.escape(floor['sampling'])}, mean of {floor['repeats']} draws. "
        f"Energy distance: {html.escape(method['energy'])}. Sliced Wasserstein: "
        f"{html.escape(method['sliced_wasserstein'])}.</p>",
        "<h2>Per trait</h2>",
        _trait_table(document),
        "<h2>Marginal distributions</h2>",
        f'<img alt="per-trait histograms" src="data:image/png;base64,{figures["histograms"]}">',
        "<h2>Correlations</h2>",
        f'<img alt="correlation heatmaps" src="data:image/png;base64,{figures["correlations"]}">',
    ]
    if "weights" in document:
        sections += [
            "<h2>Candidate weights</h2>",
            _kv_table(
                {
                    k: v
                    for k, v in document["weights"].items()
                    if k in ("n", "ess", "ess_fraction", "zero", "max_share", "top_1pct_share")
                }
            ),
        ]
        if "weights" in figures:
            sections.append(
                f'<img alt="weight histogram" src="data:image/png;base64,{figures["weights"]}">'
            )
    for title, figure in extra.items():
        sections += [
            f"<h2>{html.escape(title)}</h2>",
            f'<img alt="{html.escape(title)}" src="data:image/png;base64,{figure}">',
        ]
    if document.get("info"):
        sections += ["<h2>Run</h2>", _kv_table(document["info"])]
    sections.append("</body></html>\n")
    return "\n".join(sections)
