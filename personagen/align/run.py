"""`personagen align`: read the personas and the reference, align, write the chosen set and report.

Every input row is accounted for: candidates = rows read - unscored - not kept by the judge -
flagged (with --exclude-flagged); every candidate gets a row in `weights.parquet`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from personagen.align.api import AlignResult, align
from personagen.align.features import column_values, demographic_features, missing
from personagen.config import Config
from personagen.errors import PersonagenError
from personagen.io.bank import KEY
from personagen.io.personas import read_personas
from personagen.io.reference import Reference, configured_reference

log = logging.getLogger(__name__)

SUMMARY_ROWS = [
    ("persona rows read", "read"),
    ("left out: not scored", "unscored"),
    ("left out: rejected by the judge (kept = false)", "not_kept"),
    ("left out: score flags (--exclude-flagged)", "flagged"),
    ("candidates", "candidates"),
    ("reference rows", "reference"),
    ("reference rows without --also values (dropped)", "reference_missing_also"),
    ("chosen", "chosen"),
]


@dataclass
class AlignSummary:
    counts: dict[str, int]
    result: AlignResult
    out: Path
    notes: list[str] = field(default_factory=list)
    wall_s: float = 0.0


def run_align(
    personas: str,
    reference: str | Reference,
    n: int,
    out: str,
    cfg: Config,
    *,
    method: str | None = None,
    shards: int | None = None,
    replace: bool = False,
    group: str | None = None,
    countries: list[str] | None = None,
    also: list[str] | None = None,
    exclude_flagged: bool = False,
    info: dict[str, Any] | None = None,
    figures: dict[str, str] | None = None,
) -> AlignSummary:
    """Align the personas at `personas` to the reference and write the set and report to `out`.

    `reference` is a spec (narrowed by `group` / `countries`) or an already loaded `Reference`.
    `info` entries are added to the report's `info` (a caller such as `adapt` adds its own
    command name and statistics), `figures` (title -> base64 PNG) to its HTML.
    """
    started = time.perf_counter()
    acfg = cfg.align
    persona_set = read_personas(personas)
    table, counts, notes = _candidates(persona_set.table, exclude_flagged)
    counts = {"read": persona_set.table.num_rows + persona_set.unscored, **counts}
    counts["unscored"] = persona_set.unscored
    if table.num_rows == 0:
        raise PersonagenError(
            f"no candidate personas: of {counts['read']:,} read, {counts['unscored']:,} have no "
            f"trait scores, {counts['not_kept']:,} were rejected by the judge and "
            f"{counts['flagged']:,} have score flags (left out by exclude-flagged)"
        )
    ref = (
        reference
        if isinstance(reference, Reference)
        else configured_reference(reference, cfg, group=group, countries=countries)
    )
    ref_table = ref.table
    extra = None
    counts["reference_missing_also"] = 0
    if also:
        extra, ref_table, dropped = _also_features(table, ref_table, also, acfg.also_weight)
        counts["reference_missing_also"] = dropped
    x = _traits(table)
    y = _traits(ref_table)
    ref_w = ref_table.column("weight").to_numpy() if "weight" in ref_table.column_names else None
    counts["candidates"] = table.num_rows
    counts["reference"] = ref_table.num_rows
    use_ray = shards is not None or table.num_rows >= acfg.ray_min_personas
    if use_ray:
        from personagen.cluster import init_ray

        init_ray(cfg.ray)
    result = align(
        x,
        y,
        n,
        method=method or acfg.method,
        seed=cfg.seed,
        replace=replace,
        shards=shards or acfg.shards,
        also=extra,
        reference_weights=ref_w,
        config=acfg,
        use_ray=use_ray,
    )
    counts["chosen"] = int(result.indices.size)
    log.info("aligned in %.1f s (%s)", result.diagnostics["seconds"], result.method)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    _write(out_dir / "personas.parquet", table.take(pa.array(result.indices)))
    copies = np.bincount(result.indices, minlength=table.num_rows)
    _write(
        out_dir / "weights.parquet",
        pa.table(
            {
                KEY: table.column(KEY),
                "weight": pa.array(result.weights),
                "chosen": pa.array(copies.astype(np.int32)),
            }
        ),
    )
    info = {
        "command": "align",
        "personas": personas,
        "reference": ref.describe(),
        "reference_source": ref.source,
        "reference_cleaning": ref.cleaning,
        "n": n,
        "replace": replace,
        "also": also or [],
        "method": result.method,
        "method_reason": result.reason,
        "counts": counts,
        "notes": notes,
        "diagnostics": result.diagnostics,
        "config": acfg.model_dump(mode="json"),
        "seed": cfg.seed,
        **(info or {}),
    }
    report_started = time.perf_counter()
    from personagen.evaluate.report import write_report

    cap, rng = acfg.report_max_rows, np.random.default_rng(cfg.seed)
    sets = {"reference": y, "after": x[result.indices], "before": x}
    for name, rows in sets.items():
        if rows.shape[0] > cap:
            sets[name] = rows[np.sort(rng.choice(rows.shape[0], size=cap, replace=False))]
            notes.append(f"report: {name} is a seeded uniform subsample of {cap:,} rows")
    write_report(
        out_dir,
        reference=sets["reference"],
        after=sets["after"],
        before=sets["before"],
        info=info,
        weights=result.weights,
        seed=cfg.seed,
        floor_repeats=cfg.evaluate.floor_repeats,
        energy_max_rows=cfg.evaluate.energy_max_rows,
        n_projections=cfg.evaluate.sliced_projections,
        figures=figures,
    )
    log.info("report written in %.1f s", time.perf_counter() - report_started)
    return AlignSummary(counts, result, out_dir, notes, time.perf_counter() - started)


def _candidates(table: pa.Table, exclude_flagged: bool) -> tuple[pa.Table, dict[str, int], list]:
    counts = {"not_kept": 0, "flagged": 0}
    notes: list[str] = []
    if "kept" in table.column_names:
        rejected = pc.fill_null(pc.equal(table.column("kept"), False), False)
        counts["not_kept"] = int(pc.sum(rejected).as_py() or 0)
        table = table.filter(pc.invert(rejected))
    if exclude_flagged:
        if "score_flags" in table.column_names:
            flagged = pc.fill_null(pc.greater(pc.list_value_length(table["score_flags"]), 0), False)
            counts["flagged"] = int(pc.sum(flagged).as_py() or 0)
            table = table.filter(pc.invert(flagged))
        else:
            notes.append(
                "--exclude-flagged: the personas have no score_flags column; none left out"
            )
    return table, counts, notes


def _also_features(
    table: pa.Table, ref_table: pa.Table, names: list[str], weight: float
) -> tuple[tuple[np.ndarray, np.ndarray], pa.Table, int]:
    persona_cols = {name: column_values(table, name) for name in names}
    for name, values in persona_cols.items():
        gaps = missing(values)
        if gaps.any():
            first = table.column(KEY)[int(np.flatnonzero(gaps)[0])].as_py()
            raise PersonagenError(
                f"--also {name}: {int(gaps.sum())} personas have no {name} (first: {first})"
            )
    reference_cols = {name: column_values(ref_table, name) for name in names}
    gaps = np.zeros(ref_table.num_rows, dtype=bool)
    for values in reference_cols.values():
        gaps |= missing(values)
    if gaps.all():
        raise PersonagenError(f"--also {','.join(names)}: no reference row has these values")
    keep = ~gaps
    ref_table = ref_table.filter(pa.array(keep))
    reference_cols = {k: v[keep] for k, v in reference_cols.items()}
    trait_sd = float(np.mean(_traits(ref_table).std(axis=0)))
    features = demographic_features(persona_cols, reference_cols, trait_sd, weight)
    return features, ref_table, int(gaps.sum())


def _traits(table: pa.Table) -> np.ndarray:
    from personagen import TRAITS

    return np.column_stack([table.column(t).to_numpy(zero_copy_only=False) for t in TRAITS]).astype(
        np.float64
    )


def _write(path: Path, table: pa.Table) -> None:
    tmp = path.with_name(f".tmp-{path.name}")
    pq.write_table(table, tmp, compression="zstd")
    tmp.replace(path)


def describe(summary: AlignSummary) -> list[str]:
    """Lines for the console after the counts table."""
    r = summary.result
    d: dict[str, Any] = r.diagnostics
    lines = [f"method: {r.method} ({r.reason})"]
    if "ot" in d:
        ot = d["ot"]
        lines.append(
            f"transport: {ot['atoms']:,} atoms ({ot['atoms_method']}), eps {ot['epsilon']:.3g}, "
            f"{ot['iterations']} iterations, marginal error {ot['marginal_error']:.1e}"
            f"{'' if ot['converged'] else ' (NOT converged)'}, kernel {ot['kernel']}"
            + (
                f" (missed mass {ot['truncation_missed_mass']:.1e})"
                if ot["truncation_missed_mass"] is not None
                else ""
            )
            + f", {ot['shards']} shard(s){' on Ray' if ot['ray'] else ''}"
        )
    if "is" in d:
        lines.append(
            f"importance weights: {d['is']['density']} + {d['is']['smoothing']}, "
            f"k-hat {d['is']['khat']:.2f}, ESS {d['is']['ess']:,.0f}"
        )
    lines.append(f"ESS of the final weights: {d['ess']:,.0f}")
    lines.extend(summary.notes)
    lines.append(f"wrote {summary.out}/personas.parquet, weights.parquet, report.json, report.html")
    return lines
