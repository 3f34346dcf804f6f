"""`personagen align`: align a persona set to a reference, write the chosen set and its report.

Every input row is accounted for: rows read = unscored + not kept by the judge + flagged (with
`align.exclude_flagged`) + candidates; every candidate gets a row in `weights.parquet`.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from personagen import TRAITS
from personagen.align.api import AlignResult
from personagen.align.api import align as solve
from personagen.align.features import column_values, demographic_features, missing
from personagen.align.sharded import local_shards
from personagen.config import Config
from personagen.errors import PersonagenError
from personagen.evaluate.report import write_report
from personagen.io.bank import KEY
from personagen.io.lock import check_out
from personagen.io.personas import PersonaSet
from personagen.io.reference import Reference
from personagen.runtime.align_shards import ray_shards
from personagen.runtime.summary import Summary

log = logging.getLogger(__name__)

ROWS = [
    ("persona rows read", "read"),
    ("left out: not scored", "unscored"),
    ("left out: rejected by the judge (kept = false)", "not_kept"),
    ("left out: score flags (--exclude-flagged)", "flagged"),
    ("candidates", "candidates"),
    ("reference rows", "reference"),
    ("reference rows without --also values (dropped)", "reference_missing_also"),
    ("chosen", "chosen"),
]


EQUATIONS = [(("read",), ("unscored", "not_kept", "flagged", "candidates"))]


def align(
    cfg: Config,
    personas: PersonaSet,
    reference: Reference,
    n: int,
    out: str | Path,
    *,
    info: dict[str, Any] | None = None,
    figures: dict[str, str] | None = None,
) -> Summary:
    """Choose `n` of `personas` to match `reference` (method, shards, repeats, `also` columns
    and flagged personas as `align.*` says) and write the set and its report to `out`.

    `info` entries are added to the report's `info` (a caller such as `adapt` adds its own
    command name and statistics), `figures` (title -> base64 PNG) to its HTML. The summary's
    `outputs` hold the `AlignResult` (`result`) and the folder (`out`)."""
    started = time.perf_counter()
    check_out(out)
    acfg = cfg.align
    table, counts, notes = _candidates(personas.table, acfg.exclude_flagged)
    counts = {"read": personas.table.num_rows + personas.unscored, **counts}
    counts["unscored"] = personas.unscored
    if table.num_rows == 0:
        raise PersonagenError(
            f"no candidate personas: of {counts['read']:,} read, {counts['unscored']:,} have no "
            f"trait scores, {counts['not_kept']:,} were rejected by the judge and "
            f"{counts['flagged']:,} have score flags (left out by exclude-flagged)"
        )
    ref_table = reference.table
    extra = None
    counts["reference_missing_also"] = 0
    if acfg.also:
        extra, ref_table, dropped = _also_features(table, ref_table, acfg.also, acfg.also_weight)
        counts["reference_missing_also"] = dropped
    x = _traits(table)
    y = _traits(ref_table)
    ref_w = ref_table.column("weight").to_numpy() if "weight" in ref_table.column_names else None
    counts["candidates"] = table.num_rows
    counts["reference"] = ref_table.num_rows
    shards = local_shards
    if acfg.shards is not None or table.num_rows >= acfg.ray_min_personas:
        shards = ray_shards(cfg.ray, acfg.shards)
    result = solve(
        x,
        y,
        n,
        method=acfg.method,
        seed=cfg.seed,
        replace=acfg.replace,
        also=extra,
        reference_weights=ref_w,
        options=acfg,
        shards=shards,
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
        "personas": personas.path,
        "instrument": personas.instrument,
        "reference": reference.describe(),
        "reference_source": reference.source,
        "reference_cleaning": reference.cleaning,
        "n": n,
        "replace": acfg.replace,
        "also": acfg.also,
        "method": result.method,
        "method_reason": result.reason,
        "counts": counts,
        "notes": notes,
        "diagnostics": result.diagnostics,
        "config": acfg.model_dump(mode="json"),
        "seed": cfg.seed,
        **(info or {}),
    }
    _report(
        cfg,
        out_dir,
        {"reference": y, "after": x[result.indices], "before": x},
        result,
        info,
        notes,
        figures,
    )
    summary = Summary("align", Counter(counts), equations=EQUATIONS, rows=ROWS)
    summary.outputs = {"result": result, "out": out_dir}
    summary.lines = [
        f"traits: {personas.instrument or 'as given'}",
        *describe(result, notes, out_dir),
    ]
    summary.wall_s = time.perf_counter() - started
    summary.check()
    return summary


def _report(
    cfg: Config,
    out: Path,
    sets: dict[str, np.ndarray],
    result: AlignResult,
    info: dict[str, Any],
    notes: list[str],
    figures: dict[str, str] | None,
) -> None:
    """report.json/.html of the reference, `after` and `before` trait sets; sets beyond
    `align.report_max_rows` enter as seeded subsamples (noted)."""
    started = time.perf_counter()
    cap, rng = cfg.align.report_max_rows, np.random.default_rng(cfg.seed)
    for name, rows in sets.items():
        if rows.shape[0] > cap:
            sets[name] = rows[np.sort(rng.choice(rows.shape[0], size=cap, replace=False))]
            notes.append(f"report: {name} is a seeded uniform subsample of {cap:,} rows")
    write_report(
        out,
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
    log.info("report written in %.1f s", time.perf_counter() - started)


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
    return np.column_stack([table.column(t).to_numpy(zero_copy_only=False) for t in TRAITS]).astype(
        np.float64
    )


def _write(path: Path, table: pa.Table) -> None:
    tmp = path.with_name(f".tmp-{path.name}")
    pq.write_table(table, tmp, compression="zstd")
    tmp.replace(path)


def describe(result: AlignResult, notes: list[str], out: Path) -> list[str]:
    """Lines for the console after the counts table."""
    d: dict[str, Any] = result.diagnostics
    lines = [f"method: {result.method} ({result.reason})"]
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
        lines.extend(_coverage_lines(ot))
    if "is" in d:
        lines.append(
            f"importance weights: {d['is']['density']} + {d['is']['smoothing']}, "
            + (
                f"k-hat {d['is']['khat']:.2f}"
                if d["is"]["khat"] is not None
                else "k-hat not estimated (too few candidates)"
            )
            + f", ESS {d['is']['ess']:,.0f}"
        )
    lines.append(f"ESS of the final weights: {d['ess']:,.0f}")
    lines.extend(notes)
    lines.append(f"wrote {out}/personas.parquet, weights.parquet, report.json, report.html")
    return lines


def _coverage_lines(ot: dict[str, Any]) -> list[str]:
    """What a relaxed (unbalanced) transport left out: how much reference mass, and where."""
    lines = []
    if ot["balanced_stalled"] is not None:
        stall = ot["balanced_stalled"]
        lines.append(
            f"balanced transport {'stalled' if stall['stalled'] else 'ran out of iterations'} "
            f"at marginal error {stall['marginal_error']:.1e} after {stall['iterations']} "
            f"iterations: went on with the reference marginal relaxed (reg_m {ot['reg_m']:g})"
        )
    cover = ot["uncovered"]
    if cover is None:
        return lines
    lines.append(
        f"uncovered: {cover['mass']:.1%} of the reference mass the pool could not cover "
        f"({cover['atoms_below_half']:,} of {cover['atoms']:,} atoms kept less than half)"
    )
    region = cover["region"]
    if region is not None:
        short = {t: t[0].upper() for t in cover["reference_mean"]}
        lines.append(
            "  where: trait means "
            + " ".join(f"{short[t]} {v:.2f}" for t, v in region["mean"].items())
            + " (reference "
            + " ".join(f"{short[t]} {v:.2f}" for t, v in cover["reference_mean"].items())
            + "); 10/50/90% "
            + ", ".join(
                f"{short[t]} " + "/".join(f"{v:.1f}" for v in q)
                for t, q in region["quantiles"].items()
            )
        )
    return lines
