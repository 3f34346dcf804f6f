"""Run summaries printed at the end of every stage: a table of counts that add up."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from rich.console import Console
from rich.table import Table


def print_counts(
    title: str,
    counts: Mapping[str, int],
    rows: Sequence[tuple[str, str]],
    wall_s: float | None = None,
    console: Console | None = None,
) -> None:
    """Print `rows` (label, counter key) of `counts` as a two-column table."""
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("what")
    table.add_column("count", justify="right")
    for label, key in rows:
        table.add_row(label, f"{counts.get(key, 0):,}")
    if wall_s is not None:
        table.add_row("wall time", f"{wall_s:.1f} s")
    (console or Console(stderr=False)).print(table)
