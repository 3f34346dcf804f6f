"""The scorer validation report: `report.json` (every number) and a self-contained `report.html`.

The HTML says in its first lines whether the scorer is usable, then shows per trait the
correlation of known and scored levels with its interval, the cross-correlation matrix
(discriminant validity), response style and cost, and one panel per trait of scored against
known levels (a base64 PNG, so the page opens offline).
"""

from __future__ import annotations

import html
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from personagen import TRAITS, __version__
from personagen.evaluate.figures import png_base64, pyplot
from personagen.evaluate.report import CSS, atomic_write, fmt, jsonable
from personagen.evaluate.validity import RATINGS, rating

COST_LABELS = {"wall_s": "wall time (s)"}
DISCRETE_MAX = 9
"""Known levels with at most this many distinct values are drawn jittered, with their means."""


def write_validity_report(
    out_dir: str | Path, document: dict[str, Any], known: np.ndarray, scored: np.ndarray
) -> tuple[Path, Path]:
    """Write `document` (a `validity` result plus the run's figures, see
    `personagen.commands.validate_scorer`) as report.json, and report.html with the plot of
    `scored` against `known` levels; returns the two paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    document = {
        **document,
        "personagen": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    json_path = out / "report.json"
    text = json.dumps(document, indent=2, default=jsonable, allow_nan=False)
    atomic_write(json_path, text + "\n")
    html_path = out / "report.html"
    atomic_write(html_path, _html(document, scatter_figure(known, scored, document)))
    return json_path, html_path


def scatter_figure(known: np.ndarray, scored: np.ndarray, document: dict[str, Any]) -> str:
    """One panel per trait: scored against known levels (jittered, with the mean scored level
    per known level, where the known levels are few), titled with Spearman's r."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(TRAITS), figsize=(3.0 * len(TRAITS), 3.0), sharey=True)
    rng = np.random.default_rng(0)
    for k, (ax, trait) in enumerate(zip(axes, TRAITS, strict=True)):
        x, y = known[:, k], scored[:, k]
        keep = np.isfinite(x) & np.isfinite(y)
        x, y = x[keep], y[keep]
        levels = np.unique(x)
        if levels.size <= DISCRETE_MAX:
            ax.scatter(x + rng.uniform(-0.15, 0.15, x.size), y, s=8, alpha=0.5, color="#1b9e77")
            means = [y[x == level].mean() for level in levels]
            ax.plot(levels, means, color="#d95f02", marker="o", label="mean")
        else:
            ax.scatter(x, y, s=8, alpha=0.5, color="#1b9e77")
        row = document["traits"][trait]
        ax.set_title(f"{trait}\nr = {row['r']:.2f} (n={row['n']})", fontsize=9)
        ax.set_xlabel(document["known_label"], fontsize=8)
    axes[0].set_ylabel("scored (1-5)")
    fig.tight_layout()
    return png_base64(fig)


def _row(cells: list[str], header: bool = False) -> str:
    tag = "th" if header else "td"
    return "<tr>" + "".join(f"<{tag}>{cell}</{tag}>" for cell in cells) + "</tr>"


def _trait_table(document: dict[str, Any]) -> str:
    head = ["trait", "r", "95% interval", "n", "rating", "scored mean", "scored SD", "note"]
    rows = [_row([html.escape(h) for h in head], header=True)]
    for trait in TRAITS:
        t = document["traits"][trait]
        word = rating(t["r"])
        css = {"usable": "good", "no signal": "bad"}.get(word, "")
        note = "constant: r undefined, shown as 0" if t["constant"] else ""
        rows.append(
            _row(
                [
                    trait,
                    f'<span class="{css}">{t["r"]:.3f}</span>',
                    f"{t['ci'][0]:.3f} .. {t['ci'][1]:.3f}",
                    fmt(t["n"]),
                    word,
                    fmt(t["scored_mean"], 3),
                    fmt(t["scored_sd"], 3),
                    note,
                ]
            )
        )
    return "<table>" + "".join(rows) + "</table>"


def _cross_table(document: dict[str, Any]) -> str:
    rows = [_row(["known \\ scored", *(t[:5] for t in TRAITS)], header=True)]
    for j, trait in enumerate(TRAITS):
        cells = [trait]
        for k in range(len(TRAITS)):
            value = f"{document['cross'][j][k]:.2f}"
            cells.append(f"<b>{value}</b>" if j == k else value)
        rows.append(_row(cells))
    return "<table>" + "".join(rows) + "</table>"


def _summary_table(document: dict[str, Any]) -> str:
    pair = document["discriminant_pair"]
    cost = document["cost"]
    items = [
        (
            "discriminant validity: max |r| off the diagonal",
            f"{document['discriminant_max_abs']:.3f} (known {pair[0]}, scored {pair[1]})",
        ),
        ("acquiescence (1-5 units off the midpoint)", fmt(document["acquiescence"], 3)),
        ("mean answer entropy (nats)", fmt(document["entropy_mean"], 3)),
        *(
            (COST_LABELS.get(key, key.replace("_", " ")), fmt(value, 4))
            for key, value in cost.items()
        ),
    ]
    rows = [_row([html.escape(label), value]) for label, value in items]
    return "<table>" + "".join(rows) + "</table>"


def _html(document: dict[str, Any], figure: str) -> str:
    verdict = document["verdict"]
    scale = ", ".join(f"r &ge; {low} {word}" for low, word in RATINGS)
    run = {k: document[k] for k in ("source", "instrument", "answer_mode", "model", "endpoint")}
    return "\n".join(
        [
            "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
            "<title>personagen scorer validation</title>",
            f"<style>{CSS}</style></head><body>",
            f"<h1>Does the scorer measure anything? ({html.escape(document['check'])})</h1>",
            f"<p><b>{html.escape(verdict['text'])}</b></p>",
            f"<p>personas: {document['personas']['scored']:,} scored of "
            f"{document['personas']['asked']:,} &middot; personagen "
            f"{html.escape(document['personagen'])} &middot; "
            f"{html.escape(document['created'])}</p>",
            f"<h2>Scored against {html.escape(document['known_label'])}, per trait</h2>",
            _trait_table(document),
            f"<p class='note'>Spearman's rank correlation; {scale}, below 0.3 no signal. "
            f"Interval: percentile bootstrap, {document['bootstrap']['resamples']:,} "
            f"resamples of the personas (seed {document['bootstrap']['seed']}).</p>",
            "<h2>Cross-correlations (discriminant validity)</h2>",
            _cross_table(document),
            "<p class='note'>Row j, column k: the known level of trait j against the score of "
            "trait k. A good scorer has a strong diagonal and small values elsewhere.</p>",
            "<h2>Response style and cost</h2>",
            _summary_table(document),
            "<p class='note'>Acquiescence: mean agreement regardless of content, forward- and "
            "reverse-keyed items weighted alike (0 = none). Entropy: of the answer "
            "distribution (logprob modes; 0 = certain, 1.61 = uniform over 5 points). Time "
            "per persona includes starting the server; tokens count requests sent this run "
            "(answers from the cache cost none).</p>",
            "<h2>Scored against known levels</h2>",
            f'<img alt="scored against known levels" src="data:image/png;base64,{figure}">',
            "<h2>Run</h2>",
            "<table>"
            + "".join(_row([html.escape(k), fmt(v)]) for k, v in run.items())
            + "</table>",
            "</body></html>\n",
        ]
    )
