"""Console tables (rich) for `personagen evaluate` and `personagen reference ...`."""

from __future__ import annotations

from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from personagen import TRAITS
from personagen.evaluate.report import metrics_rows
from personagen.io.reference import Reference, trait_summary


def print_metrics(report: dict[str, Any], console: Console | None = None) -> None:
    """The headline metrics of a `compare` result, each with its multiple of the noise floor."""
    sets = report["sets"]
    floor = sets["after"]["floor"]
    table = Table(title="distance to the reference (x floor = metric / noise floor)")
    table.add_column("metric")
    for name in ("before", "after"):
        if name in sets:
            table.add_column(name, justify="right")
            table.add_column("x floor", justify="right")
    table.add_column(f"floor (n={floor['n']:,})", justify="right")
    for label, values in metrics_rows(report):
        cells = [label]
        for i, value in enumerate(values[:-1]):
            cells.append(_ratio(value) if i % 2 else f"{value:.4g}")
        cells.append(f"{values[-1]:.4g}")
        table.add_row(*cells)
    out = console or Console()
    out.print(table)
    out.print(
        f"reference {report['n_reference']:,} rows; personas {report['n_after']:,}"
        + (f" (before: {report['n_before']:,})" if report.get("n_before") else "")
        + f"; floor: {floor['sampling']}, {floor['repeats']} repeats"
    )
    if "weights" in report:
        w = report["weights"]
        out.print(f"weights: Kish ESS {w['ess']:,.1f} of {w['n']:,} ({w['ess_fraction']:.1%})")


def _ratio(value: float | None) -> str:
    if value is None:
        return "-"
    colour = "green" if value <= 2 else "red"
    return f"[{colour}]{value:.2f}x[/{colour}]"


def print_reference(reference: Reference, console: Console | None = None) -> None:
    """Rows, cleaning counts, per-trait mean/SD and the correlation matrix of a reference."""
    out = console or Console()
    out.print(f"[bold]{reference.describe()}[/bold]")
    out.print(f"source: {reference.source}")
    cleaning = reference.cleaning
    steps = Table(title="cleaning", show_lines=False)
    steps.add_column("step")
    steps.add_column("rows", justify="right")
    steps.add_column("rule")
    steps.add_row("read", f"{cleaning.get('rows_read', reference.n_rows):,}", "")
    for step, dropped in cleaning.get("dropped", {}).items():
        steps.add_row(f"dropped: {step}", f"{dropped:,}", cleaning["rules"].get(step, ""))
    for step, rule in cleaning.get("rules", {}).items():
        if step not in cleaning.get("dropped", {}):
            steps.add_row(step, "", rule)
    steps.add_row("kept", f"{reference.n_rows:,}", "")
    for note, count in cleaning.get("notes", {}).items():
        steps.add_row(f"note: {note}", f"{count:,}", "row kept")
    if "keying" in cleaning:
        steps.add_row(
            "keying", "", f"{cleaning['keying']['rule']} ({cleaning['keying']['evidence']})"
        )
    out.print(steps)
    summary = trait_summary(reference.trait_matrix())
    traits = Table(title="traits (1-5)")
    traits.add_column("trait")
    traits.add_column("mean", justify="right")
    traits.add_column("SD", justify="right")
    for t in TRAITS:
        traits.add_column(t[:5], justify="right")
    corr = np.asarray(summary["corr"])
    for i, t in enumerate(TRAITS):
        traits.add_row(
            t,
            f"{summary['mean'][t]:.3f}",
            f"{summary['sd'][t]:.3f}",
            *[f"{corr[i, k]:.2f}" for k in range(len(TRAITS))],
        )
    out.print(traits)
    if "country" in reference.table.column_names:
        counts = reference.table.column("country").value_counts().to_pylist()
        counts = sorted(counts, key=lambda c: -c["counts"])[:10]
        out.print(
            "top countries: "
            + ", ".join(f"{c['values'] or 'unknown'} {c['counts']:,}" for c in counts)
        )


def print_regions(
    rows: list[dict[str, Any]],
    builtin: list[dict[str, Any]] | None = None,
    console: Console | None = None,
) -> None:
    """The M49 group table, with the respondents behind each builtin summary."""
    offered = {r["group"]: r for r in builtin or []}
    table = Table(title="groups (UN M49) for --group and builtin:<group>")
    table.add_column("group")
    table.add_column("level")
    table.add_column("M49 name")
    table.add_column("builtin", justify="right")
    table.add_column("countries")
    if "global" in offered:
        table.add_row("global", "", "everyone", _builtin_cell(offered["global"]), "all")
    for row in rows:
        cell = _builtin_cell(offered.get(row["group"]))
        table.add_row(row["group"], row["level"], row["name"], cell, " ".join(row["countries"]))
    (console or Console()).print(table)


def _builtin_cell(row: dict[str, Any] | None) -> str:
    if row is None:
        return "-"
    if row["offered"]:
        return f"{row['respondents']:,}"
    return f"[dim]withheld ({row['respondents']:,})[/dim]"
