"""What the commands print: tables of counts that add up, metrics, references, estimates.

Everything a user reads on the console is drawn here (rich tables); the commands return data.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
from rich.console import Console
from rich.table import Table

from personagen import TRAITS
from personagen.runtime.summary import Summary

if TYPE_CHECKING:
    from personagen.commands.estimate import Estimate
    from personagen.io.reference import Reference


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


def print_summary(title: str, summary: Summary, console: Console | None = None) -> None:
    """A command's summary: its table, the cost of each LLM stage (with prices), its lines."""
    console = console or Console()
    print_counts(title, summary.counts, summary.rows, summary.wall_s, console)
    for stage, cost in summary.costs.items():
        if cost is not None:
            console.print(f"{stage} cost: ${cost:,.4f}")
    for line in summary.lines:
        console.print(line, markup=False, highlight=False, soft_wrap=True)


STAGE_ROWS: dict[str, list[tuple[str, str]]] = {
    "mine": [
        ("history rows", "histories"),
        ("  already mined or failed (skipped)", "mine:skipped_done"),
        ("  mined this run", "mine:in"),
        ("    personas written", "mine:out"),
        ("    mining failures (in failures)", "mine:failed"),
    ],
    "judge": [
        ("judged this run", "judge:in"),
        ("  judgements written", "judge:out"),
        ("  judge failures (in failures)", "judge:failed"),
        ("bank personas judged", "bank:judged"),
        ("  kept", "bank:kept"),
        ("  rejected below threshold", "bank:below_threshold"),
        ("  near-duplicates flagged", "bank:duplicates"),
    ],
    "score": [
        ("bank personas", "bank:personas"),
        ("  rejected by the judge (not scored)", "score:rejected"),
        ("  without a judge verdict", "score:unjudged"),
        ("    of which left out (score.only_kept)", "score:unjudged_left_out"),
        ("  already scored or failed (skipped)", "score:skipped_done"),
        ("  scored this run", "score:in"),
        ("    scores written", "score:out"),
        ("      of which predicted from embeddings", "score:predicted"),
        ("    scoring failures (in failures)", "score:failed"),
        ("bank personas scored", "bank:scored"),
        ("  in logprob mode", "bank:mode:logprob"),
        ("  in logprob mode, some items as text", "bank:mode:logprob+text"),
        ("  in calibrated logprob mode", "bank:mode:calibrated"),
        ("  in calibrated logprob mode, some items as text", "bank:mode:calibrated+text"),
        ("  sampled from the answer distribution (no-persona)", "bank:mode:sample"),
        ("  in text mode", "bank:mode:text"),
        ("  in batch mode", "bank:mode:batch"),
        ("  zero-shot from embeddings (no LLM)", "bank:mode:embedding"),
        ("  predicted by the surrogate", "bank:mode:surrogate"),
        ("  flagged (score_flags)", "bank:flagged"),
        ("    acquiescent", "bank:flag:acquiescent"),
        ("    nay-saying", "bank:flag:nay_saying"),
        ("    low variance", "bank:flag:low_variance"),
        ("    with failed items", "bank:flag:failed_items"),
        ("    predicted, not answered", "bank:flag:predicted"),
        ("  failed items in all", "bank:failed_items"),
    ],
    "consistency": [
        ("personas with an extreme trait", "bank:extreme"),
        ("  already checked or failed (skipped)", "consistency:skipped_done"),
        ("  checked this run", "consistency:in"),
        ("    verdicts written", "consistency:out"),
        ("    check failures (in failures)", "consistency:failed"),
        ("bank personas checked", "bank:consistency_checked"),
        ("  contradicted by their narrative", "bank:inconsistent"),
        ("  contradicted traits", "bank:inconsistent_traits"),
    ],
}


def llm_rows(stages: Sequence[str], counts: Mapping[str, int]) -> list[tuple[str, str]]:
    """The table rows of LLM stages: what each did to the bank, its requests and tokens, and
    its failures by kind."""
    rows: list[tuple[str, str]] = []
    for stage in stages:
        rows += STAGE_ROWS.get(stage, [])
    for stage in stages:
        rows += [
            (f"{stage}: requests", f"{stage}:requests"),
            ("  retries", f"{stage}:retries"),
            ("  repair requests", f"{stage}:repairs"),
            ("  answers from the cache", f"{stage}:cache_hits"),
            ("  prompt tokens", f"{stage}:prompt_tokens"),
            ("  completion tokens", f"{stage}:completion_tokens"),
        ]
    failure_kinds = sorted(k for k in counts if k.count(":") == 2 and ":failed:" in k)
    rows += [(f"  failed: {k.split(':', 2)[2]} ({k.split(':')[0]})", k) for k in failure_kinds]
    return rows


def print_info(title: str, info: dict[str, Any]) -> None:
    """A two-column table of an info mapping (nested mappings flattened with dots)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("what")
    table.add_column("value", justify="right")
    for key, value in _flatten(info):
        table.add_row(key, f"{value:,}" if isinstance(value, int) else str(value))
    Console().print(table)


def _flatten(data: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for key, value in data.items():
        if isinstance(value, dict):
            rows.extend(_flatten(value, f"{prefix}{key}."))
        else:
            rows.append((f"{prefix}{key}", value))
    return rows


def print_search(title: str, results: pa.Table, width: int, console: Console | None = None) -> None:
    """Search results: rank, persona id, cosine score and a narrative snippet."""
    table = Table(title=title, title_justify="left")
    for name, justify in (("rank", "right"), ("persona_id", "left"), ("score", "right")):
        table.add_column(name, justify=justify)
    table.add_column("narrative")
    for row in results.to_pylist():
        snippet = " ".join((row["narrative"] or "").split())
        if len(snippet) > width:
            snippet = snippet[: width - 1] + "…"
        table.add_row(str(row["rank"]), row["persona_id"], f"{row['score']:.3f}", snippet)
    (console or Console()).print(table)


def print_metrics(report: dict[str, Any], console: Console | None = None) -> None:
    """The headline metrics of a `compare` result, each with its multiple of the noise floor."""
    from personagen.evaluate.report import metrics_rows  # POT takes seconds to import

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
    from personagen.io.reference import trait_summary

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


def print_reliability(report: dict[str, Any], console: Console | None = None) -> None:
    """The report as two readable tables and a line about flagged personas."""
    console = console or Console()
    table = Table(
        title=f"reliability: {report['bank']} ({report['instrument']}, "
        f"{report['personas']:,} personas)",
        title_justify="left",
    )
    for name in ("trait", "n", "items", "alpha", "alpha unflagged", "weakest item r", "items r<0"):
        table.add_column(name, justify="left" if name == "trait" else "right")
    for trait, row in report["traits"].items():
        item_r = {k: v for k, v in row["item_total"].items() if _finite(v)}
        weakest = min(item_r, key=item_r.get) if item_r else None
        table.add_row(
            trait,
            f"{row['n']:,}",
            str(row["items"]),
            _num(row["alpha"]),
            _num(row["alpha_unflagged"]),
            f"{_num(item_r[weakest])} ({weakest})" if weakest else "-",
            str(sum(r < 0 for r in item_r.values())),
        )
    console.print(table)
    corr = report["correlations"]
    human = corr["human"]
    table = Table(
        title=f"trait correlations: bank / human ({corr['human_source']})", title_justify="left"
    )
    table.add_column("")
    for trait in corr["traits"]:
        table.add_column(trait[:5], justify="right")
    for i, trait in enumerate(corr["traits"]):
        cells = []
        for j in range(len(corr["traits"])):
            cell = _num(corr["bank"][i][j])
            cells.append(cell if human is None else f"{cell} / {_num(human[i][j])}")
        table.add_row(trait, *cells)
    console.print(table)
    if corr["mean_abs_difference"] is not None:
        console.print(f"mean |bank - human| off the diagonal: {corr['mean_abs_difference']:.3f}")
    counts = ", ".join(f"{flag} {n:,}" for flag, n in report["flag_counts"].items())
    console.print(
        f"flagged personas: {report['flagged']:,} of {report['personas']:,} "
        f"({report['flagged_fraction']:.1%})" + (f": {counts}" if counts else "")
    )


def _finite(value: float | None) -> bool:
    return value is not None and not math.isnan(value)


def _num(value: float | None) -> str:
    return f"{value:.2f}" if _finite(value) else "-"


def print_estimate(result: Estimate, console: Console | None = None) -> None:
    console = console or Console()
    table = Table(title="build --dry-run: what the build would send", title_justify="left")
    for name in ("stage", "model", "requests", "prompt tokens", "completion tokens (est.)", "cost"):
        table.add_column(name, justify="left" if name in ("stage", "model") else "right")
    for s in result.stages:
        cost = f"${s.cost_usd:,.2f}" if s.cost_usd is not None else "(no price)"
        table.add_row(
            s.stage,
            s.model,
            f"{s.requests:,}",
            f"{s.prompt_tokens:,}",
            f"{s.completion_tokens:,}",
            cost,
        )
    console.print(table)
    console.print(
        f"history rows: {result.histories:,} ({result.already_done:,} finished by an earlier run)"
    )
    for line in result.assumptions:
        console.print(f"  assumed: {line}")
    if all(s.cost_usd is None for s in result.stages):
        console.print(
            "  no cost: set a price, e.g. --set llm.prices.gpt-4o-mini.prompt=0.15 "
            "--set llm.prices.gpt-4o-mini.completion=0.6 (USD per 1M tokens)"
        )


COMPARISON_COLUMNS = [
    ("energy x floor", ("in_distribution", "x_floor", "energy")),
    ("held-out x floor", ("held_out", "x_floor", "energy")),
    ("reduction %", ("in_distribution", "reduction_pct", "energy")),
    ("coverage", ("diversity", "coverage")),
    ("(real)", ("diversity", "coverage_real")),
    ("Vendi", ("narratives", "vendi")),
]


def print_comparison(document: dict[str, Any]) -> None:
    """The experiment's table, one per reference (the HTML report has every column)."""
    from personagen.evaluate.comparison_report import cell

    console = Console()
    for name, result in document["references"].items():
        table = Table(title=f"against {name}", title_justify="left")
        table.add_column("set")
        table.add_column("n", justify="right")
        for header, _ in COMPARISON_COLUMNS:
            table.add_column(header, justify="right")
        for set_name, row in result["sets"].items():
            values = [cell(row, path) for _, path in COMPARISON_COLUMNS]
            table.add_row(
                set_name, f"{row['n']:,}", *("-" if v is None else f"{v:.2f}" for v in values)
            )
        console.print(table)


CONSTANT_NOTE = (
    "constant: the scores (or the known levels) do not vary, so Spearman's r is undefined; it "
    "is shown as 0: no signal"
)


def _tokens(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def print_validity(report: dict[str, Any], console: Console | None = None) -> None:
    """`validate-scorer`'s report: per trait r with its interval, the cross-correlations,
    response style, cost and the verdict."""
    from personagen.evaluate.validity import rating

    console = console or Console()
    label = report["known_label"]
    table = Table(title=f"scored vs {label}: {report['source']}", title_justify="left")
    for name in ("trait", "r", "95% interval", "n", "rating", "note"):
        table.add_column(name, justify="left" if name in ("trait", "rating", "note") else "right")
    for trait in TRAITS:
        row = report["traits"][trait]
        note = "constant: r undefined" if row["constant"] else ""
        low, high = row["ci"]
        table.add_row(
            trait,
            f"{row['r']:.3f}",
            f"{low:.2f} .. {high:.2f}",
            str(row["n"]),
            rating(row["r"]),
            note,
        )
    console.print(table)
    if any(report["traits"][t]["constant"] for t in TRAITS):
        console.print(CONSTANT_NOTE, markup=False, highlight=False, soft_wrap=True)
    cross = Table(title=f"cross-correlations: {label} (rows) vs scores", title_justify="left")
    cross.add_column("")
    for trait in TRAITS:
        cross.add_column(trait[:5], justify="right")
    for j, trait in enumerate(TRAITS):
        cross.add_row(trait, *(f"{report['cross'][j][k]:.2f}" for k in range(len(TRAITS))))
    console.print(cross)
    known, scored = report["discriminant_pair"]
    cost = report["cost"]
    lines = [
        f"discriminant validity: max |r| off the diagonal {report['discriminant_max_abs']:.3f} "
        f"({label} {known} vs {scored} scores)",
        f"acquiescence: {_num(report['acquiescence'])} (1-5 units off the midpoint); "
        f"mean answer entropy: {_num(report['entropy_mean'])} nats",
        f"{report['personas']['scored']:,} of {report['personas']['asked']:,} {report['unit']} "
        f"scored; {report['instrument']}, mode {report['answer_mode']}, model {report['model']}",
        f"time: {_num(cost['seconds_per_persona'])} s per persona; score tokens per persona: "
        f"{_tokens(cost['score_prompt_tokens_per_persona'])} prompt, "
        f"{_tokens(cost['score_completion_tokens_per_persona'])} completion",
    ]
    for line in lines:
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    console.print(report["verdict"]["text"], style="bold", highlight=False, soft_wrap=True)
