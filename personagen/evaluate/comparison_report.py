"""The experiment's report: `report.json` (every number) and a self-contained `report.html`.

One table per reference (rows: the sets; columns: each distance x its noise floor, in
distribution and on the held-out instrument, the % error reduction against the baseline set,
trait coverage and uniformity next to what real people of the same number get, narrative
spread), then each reference's distributions: per-trait histograms of every set side by side
with the reference's.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import numpy as np

from personagen import TRAITS, __version__
from personagen.evaluate.figures import png_base64, pyplot
from personagen.evaluate.report import CSS, atomic_write, fmt, jsonable, ratio_cell

COLUMNS = [
    ("energy x floor", ("in_distribution", "x_floor", "energy")),
    ("sliced W2 x floor", ("in_distribution", "x_floor", "sliced_wasserstein")),
    ("W1 mean x floor", ("in_distribution", "x_floor", "w1_mean")),
    ("|mean err|", ("in_distribution", "metrics", "mean_abs_error")),
    ("corr err RMSE", ("in_distribution", "metrics", "corr_error_rmse")),
    ("energy reduction %", ("in_distribution", "reduction_pct", "energy")),
    ("held-out energy x floor", ("held_out", "x_floor", "energy")),
    ("held-out W1 x floor", ("held_out", "x_floor", "w1_mean")),
    ("held-out energy reduction %", ("held_out", "reduction_pct", "energy")),
    ("coverage", ("diversity", "coverage")),
    ("coverage (real)", ("diversity", "coverage_real")),
    ("uniformity", ("diversity", "uniformity")),
    ("uniformity (real)", ("diversity", "uniformity_real")),
    ("narrative Vendi", ("narratives", "vendi")),
    ("narrative cos dist", ("narratives", "mean_cosine_distance")),
]
"""(header, path into a set's row) of the table, in order."""


def cell(row: dict[str, Any], path: tuple[str, ...]) -> Any:
    """The value at `path` in a set's row; None where a part is missing (no held-out scores,
    no narratives, no baseline)."""
    value: Any = row
    for key in path:
        if not isinstance(value, dict) or value.get(key) is None:
            return None
        value = value[key]
    return value


def write_experiment_report(
    out_dir: str | Path,
    document: dict[str, Any],
    traits: dict[str, dict[str, np.ndarray]],
) -> tuple[Path, Path]:
    """Write `document` (`info` plus one `compare_sets` result per reference under
    `references`) as report.json and report.html; `traits[reference][set]` are the arrays the
    histograms show (the reference's own under "reference")."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    document = {"personagen": __version__, **document}
    json_path = out / "report.json"
    text = json.dumps(document, indent=2, default=jsonable, allow_nan=False)
    atomic_write(json_path, text + "\n")
    html_path = out / "report.html"
    atomic_write(html_path, _html(document, traits))
    return json_path, html_path


def _table(result: dict[str, Any]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in ["set", "n", *(c for c, _ in COLUMNS)])
    parts = [f"<table><tr>{head}</tr>"]
    for name, row in result["sets"].items():
        cells = [f"<td>{html.escape(name)}</td>", f"<td>{fmt(row['n'])}</td>"]
        for header, path in COLUMNS:
            value = cell(row, path)
            if "x floor" in header:
                cells.append(ratio_cell(value))
            elif header.endswith("%"):
                cells.append("<td>-</td>" if value is None else f"<td>{value:+.1f}%</td>")
            else:
                cells.append(f"<td>{fmt(value, 3)}</td>")
        parts.append("<tr>" + "".join(cells) + "</tr>")
    parts.append("</table>")
    return "".join(parts)


def distributions_figure(traits: dict[str, np.ndarray]) -> str:
    """One row per set, one column per trait: the set's histogram over the reference's."""
    plt = pyplot()
    reference = traits["reference"]
    sets = {k: v for k, v in traits.items() if k != "reference"}
    edges = np.linspace(0.95, 5.05, 42)
    fig, axes = plt.subplots(
        len(sets), len(TRAITS), figsize=(2.6 * len(TRAITS), 1.7 * len(sets) + 0.6), squeeze=False
    )
    for i, (name, x) in enumerate(sets.items()):
        for j, trait in enumerate(TRAITS):
            ax = axes[i, j]
            ax.hist(reference[:, j], bins=edges, density=True, color="#444444", alpha=0.3)
            ax.hist(x[:, j], bins=edges, density=True, histtype="step", color="#1b9e77", lw=1.5)
            ax.set_yticks([])
            if i == 0:
                ax.set_title(trait, fontsize=9)
            if j == 0:
                ax.set_ylabel(f"{name}\n(n={x.shape[0]:,})", fontsize=8)
    fig.tight_layout()
    return png_base64(fig)


def _html(document: dict[str, Any], traits: dict[str, dict[str, np.ndarray]]) -> str:
    info = document["info"]
    sections = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<title>personagen experiment</title>",
        f"<style>{CSS}</style></head><body>",
        "<h1>Persona sets against human references</h1>",
        f"<p>instrument: {html.escape(str(info['instrument']))} &middot; held-out instrument: "
        f"{html.escape(str(info.get('held_out_instrument') or '-'))} &middot; baseline set: "
        f"{html.escape(str(info.get('baseline') or '-'))} &middot; personagen "
        f"{html.escape(document['personagen'])} &middot; {html.escape(info['created'])}</p>",
        "<p class='note'>x floor: the distance divided by what as many real people drawn from "
        "the reference score against the rest (&le; 2x in green; 1x is as close as real people "
        "get). Reduction %: the share of the baseline set's distance a set removes. Coverage: "
        "the share of reference people with a persona within their 5-NN radius; uniformity: "
        "normalised entropy over 3^5 reference-quantile cells; (real): what a uniform sample of "
        "as many real people gets. Vendi: the effective number of distinct narratives.</p>",
    ]
    for ref_name, result in document["references"].items():
        held = result.get("n_held_out_reference")
        sections += [
            f"<h2>Reference: {html.escape(ref_name)}</h2>",
            f"<p class='note'>{fmt(result['n_reference'])} reference rows"
            + (f"; held-out instrument reference: {fmt(held)} rows" if held else "")
            + "</p>",
            _table(result),
            f'<img alt="distributions against {html.escape(ref_name)}" '
            f'src="data:image/png;base64,{distributions_figure(traits[ref_name])}">',
        ]
    notes = info.get("notes") or []
    if notes:
        sections += ["<h2>Notes</h2><ul>"]
        sections += [f"<li>{html.escape(n)}</li>" for n in notes]
        sections.append("</ul>")
    sections.append("</body></html>\n")
    return "\n".join(sections)
