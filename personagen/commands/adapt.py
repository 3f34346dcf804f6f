"""`personagen adapt`: a persona set for a target group, from a bank and a query.

1. Retrieve: the top-k personas for the query by embedding (the bank's index), among those that
   meet the filters (`adapt.filters`, default `kept=true`, plus `--where`).
2. Revise (optional, `adapt.revise`): an LLM edits each candidate toward the group (place,
   culture-specific details, language habits), keeping the personality and the life facts that
   do not conflict (`personagen.stages.revise`).
3. Re-score: the revised personas answer the instrument (the scoring stage of `personagen score`),
   so their traits are measured, not assumed. Without revision, candidates keep the bank's scores
   where the bank has them on the same instrument, and are scored otherwise.
4. Re-align: `personagen align` chooses n of the candidates to match the group's reference
   distribution and writes the same report as `personagen align` (before/after, x noise
   floor), with the retrieval statistics in its `info` and a histogram of the query
   similarities.

Layout of OUT::

    personas.parquet    the n chosen: narrative and revised_narrative, the measured traits and
                        the bank's (original_<trait>), query similarity and rank, scoring detail
    candidates.parquet  every candidate that reached alignment (same columns)
    weights.parquet     persona_id, weight, chosen: every candidate's share of the aligned set
    failures.parquet    candidates that failed revision or scoring: persona_id, stage, reason
    report.json/.html   the alignment report
    work/               a bank-format folder with the stages' rows (`revisions`, `scores`,
                        `failures`), the LLM response cache and the run's provenance

Every candidate ends in candidates.parquet or failures.parquet: candidates = aligned candidates
+ revision failures + scoring failures, checked. A re-run into the same OUT resumes: finished
and failed rows in work/ are not asked again (`--overwrite` starts over).
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
from personagen.commands.align import align
from personagen.config import Config
from personagen.errors import PersonagenError
from personagen.evaluate.figures import similarity_figure
from personagen.index.retrieve import describe_similarity, retrieve
from personagen.io.bank import GROUPS, KEY, Bank, conform, read_manifest, scores_of
from personagen.io.lock import check_out
from personagen.io.personas import persona_set
from personagen.io.reference import Reference
from personagen.psychometrics.instruments import Instrument, get_instrument
from personagen.psychometrics.scoring import check_min_items
from personagen.runtime.context import RunContext, run_stage
from personagen.runtime.summary import Summary
from personagen.stages import revise as revising
from personagen.stages.score import resolve_stage

log = logging.getLogger(__name__)

WORK = "work"
SCORE_STAGE = "score"
ORIGINAL = "original_"
SCORE_FIELDS = [f for f in GROUPS["scores"] if f.name != KEY]
REVISION_FIELDS = [f for f in GROUPS["revisions"] if f.name != KEY]

ROWS = [
    ("retrieved (top k of the filtered personas)", "retrieved"),
    ("  below the minimum similarity (left out)", "below_min_similarity"),
    ("candidates", "candidates"),
    ("  revised", "revised"),
    ("    of which unchanged (the LLM made no edit)", "unchanged"),
    ("  revision failures (failures.parquet)", "revise_failed"),
    ("  re-scored", "rescored"),
    ("  scoring failures (failures.parquet)", "score_failed"),
    ("  bank scores kept (not revised, same instrument)", "bank_scores_reused"),
    ("  aligned candidates (candidates.parquet)", "aligned_candidates"),
    ("chosen (personas.parquet)", "chosen"),
    ("revise this run: personas asked", "revise:in"),
    ("  revisions written", "revise:out"),
    ("  failed", "revise:failed"),
    ("  requests", "revise:requests"),
    ("  answers from the cache", "revise:cache_hits"),
    ("score this run: personas asked", "score:in"),
    ("  scores written", "score:out"),
    ("  failed", "score:failed"),
    ("  requests", "score:requests"),
    ("  answers from the cache", "score:cache_hits"),
]


EQUATIONS = [
    (("candidates",), ("aligned_candidates", "revise_failed", "score_failed")),
    (("retrieved",), ("candidates", "below_min_similarity")),
]


def adapt(
    cfg: Config,
    bank: str | Path,
    query: str,
    reference: Reference,
    out: str | Path,
    *,
    overwrite: bool = False,
) -> Summary:
    """Retrieve `adapt.k` candidates for `query` from `bank`, revise them toward the group
    (`adapt.revise`), re-score them and choose `adapt.n` that match the group's `reference`;
    write OUT (see the module docstring). `overwrite` starts an earlier adaptation in OUT over.
    The summary's `outputs` hold the retrieval statistics and the alignment's summary."""
    acfg = cfg.adapt
    bank, out = Path(bank).resolve(), Path(out).resolve()
    check_out(out)
    n, k = acfg.n, acfg.k
    if n > k and not cfg.align.replace:
        raise PersonagenError(
            f"cannot choose {n:,} distinct personas from at most k={k:,} candidates "
            "(raise -k, lower --n, or allow repeats with --replace)"
        )
    target_text = None
    if acfg.revise:
        group, countries = _selection(reference)
        target_text = revising.target_group(reference, group, countries, acfg.target)
    instrument = _instrument(bank, cfg)
    found = retrieve(
        bank,
        query,
        k,
        acfg.filters,
        acfg.min_similarity,
        options=cfg.index,
        embedder=cfg.embed,
    )
    stats = found.stats
    if found.table.num_rows == 0:
        raise PersonagenError(
            "no candidates: " + "; ".join(describe_similarity(stats)[:2]) + " (check the filters, "
            "e.g. an unjudged bank has no kept=true personas: --set adapt.filters=[])"
        )
    counts: Counter[str] = Counter(
        retrieved=stats["retrieved"],
        below_min_similarity=stats["below_min_similarity"],
        candidates=stats["candidates"],
    )
    candidates = _with_bank_scores(found.table, bank, instrument.id)
    ctx = RunContext(cfg, out / WORK, "adapt")
    if overwrite:
        ctx.bank.clear()
    _claim(ctx.bank, bank, query, target_text, instrument)
    counts.update(_run_stages(ctx, candidates, instrument, target_text, query))
    table, failures = _assemble(candidates, bank, ctx.bank, instrument, acfg.revise, counts)
    out.mkdir(parents=True, exist_ok=True)
    _write(out / "failures.parquet", failures)
    _write(out / "candidates.parquet", table)
    ran = [s for s in (revising.STAGE, SCORE_STAGE) if f"{s}:in" in counts]
    summary = Summary("adapt", counts, ran, equations=EQUATIONS, rows=ROWS)
    ctx.finish(summary)
    if table.num_rows == 0:
        raise PersonagenError(
            f"every candidate failed revision or scoring: see {out / 'failures.parquet'}"
        )
    info = {
        "command": "adapt",
        "bank": str(bank),
        "query": query,
        "target": target_text,
        "revise": acfg.revise,
        "instrument": instrument.id,
        "retrieval": stats,
        "adapt_counts": dict(counts),
        "revision_trait_shift": trait_shift(table),
    }
    figure = similarity_figure(
        found.table.column("similarity").to_numpy(zero_copy_only=False),
        table.column("similarity").to_numpy(zero_copy_only=False),
    )
    method = acfg.method or cfg.align.method
    aligned = align(
        cfg.model_copy(update={"align": cfg.align.model_copy(update={"method": method})}),
        persona_set(table, out / "candidates.parquet"),
        reference,
        n,
        out,
        info=info,
        figures={"Similarity to the query": figure},
    )
    counts["chosen"] = aligned.counts["chosen"]
    summary.outputs = {"retrieval": stats, "align": aligned, "out": out}
    summary.lines = describe_similarity(stats) + aligned.lines
    summary.wall_s = time.perf_counter() - ctx.started
    return summary


def _selection(reference: Reference) -> tuple[str | None, list[str] | None]:
    """(group, countries) a reference was narrowed to, from its label ("east-asia", "JP,KR")."""
    label = reference.group
    if label and all(len(code) == 2 and code.isalpha() for code in label.split(",")):
        return None, label.split(",")
    return label, None


# ------------------------------------------------------------------------------ inputs


def _instrument(bank: Path, cfg: Config) -> Instrument:
    """`adapt.instrument`, else the bank's (so original and revised traits compare), else
    `score.instrument`."""
    recorded = read_manifest(bank).get(SCORE_STAGE, {}).get("instrument")
    instrument = get_instrument(cfg.adapt.instrument or recorded or cfg.score.instrument)
    check_min_items(instrument, cfg.score.min_items_per_trait)
    return instrument


def _with_bank_scores(candidates: pa.Table, bank: Path, instrument: str) -> pa.Table:
    """The candidates with the bank's traits on `instrument` as `original_<trait>` (and the
    instrument, null where the bank has no such scores)."""
    scores = scores_of(bank, instrument, [*TRAITS])
    at = pc.index_in(candidates.column(KEY), value_set=scores.column(KEY))
    for name in [*TRAITS, "instrument"]:
        column = scores.column(name).take(at)
        candidates = candidates.append_column(ORIGINAL + name, column)
    return candidates


def _claim(work: Bank, bank: Path, query: str, target: str | None, instrument: Instrument) -> None:
    """Refuse to resume a work folder made for another bank, query, target or instrument: its
    revisions and scores would be taken for this run's."""
    run = {"bank": str(bank), "query": query, "target": target, "instrument": instrument.id}

    def refusal(recorded: dict[str, Any]) -> str:
        changed = ", ".join(key for key in run if recorded.get(key) != run[key])
        return (
            f"{work.path} holds an adaptation with another {changed}: pass --overwrite to start "
            "it over, or choose another --out"
        )

    work.claim("adapt_run", run, refusal, held=work.has("revisions") or work.has("scores"))


# ------------------------------------------------------------------------------ LLM stages


def _pending(ids: pa.Array | pa.ChunkedArray, work: Bank, group: str, stage: str) -> pa.Array:
    """The ids neither written to `group` nor recorded as failed in `stage`."""
    done = work.done(group, failed_stage=stage)
    return pa.array(ids, pa.string()).filter(pc.invert(pc.is_in(ids, value_set=done)))


def _to_score(candidates: pa.Table, work: Bank, revise: bool, instrument: str) -> pa.Table:
    """(persona_id, narrative, kept) of the candidates to score now: the revised ones with their
    revised narrative; without revision, those without bank scores on this instrument."""
    if revise:
        revisions = work.read(revising.GROUP, [KEY, "revised_narrative"])
        table = revisions.filter(pc.is_in(revisions.column(KEY), value_set=candidates[KEY]))
        table = table.rename_columns([KEY, "narrative"])
    else:
        reused = reusable(candidates, instrument)
        table = candidates.filter(pa.array(~reused)).select([KEY, "narrative"])
    todo = _pending(table.column(KEY), work, "scores", SCORE_STAGE)
    table = table.filter(pc.is_in(table.column(KEY), value_set=todo))
    # chosen by retrieval and the filters: `score.only_kept` has nothing more to say
    return table.append_column("kept", pa.array([True] * table.num_rows))


def reusable(candidates: pa.Table, instrument: str) -> np.ndarray:
    """Which candidates have all five bank traits on `instrument` (they stand for unrevised
    personas without asking again)."""
    same = pc.fill_null(pc.equal(candidates.column(ORIGINAL + "instrument"), instrument), False)
    mask = same.to_numpy(zero_copy_only=False)
    for trait in TRAITS:
        mask &= pc.is_valid(candidates.column(ORIGINAL + trait)).to_numpy(zero_copy_only=False)
    return mask


def _run_stages(
    ctx: RunContext,
    candidates: pa.Table,
    instrument: Instrument,
    target: str | None,
    query: str,
) -> Counter[str]:
    """Revise (when `target`) and score the candidates not done yet; returns the stages' counts."""
    work = ctx.bank
    revise = target is not None
    to_revise = candidates.select([KEY, "narrative"])
    if revise:
        todo = _pending(candidates.column(KEY), work, revising.GROUP, revising.STAGE)
        to_revise = to_revise.filter(pc.is_in(to_revise.column(KEY), value_set=todo))
    else:
        to_revise = to_revise.slice(0, 0)
    to_score = _to_score(candidates, work, revise, instrument.id)
    counts: Counter[str] = Counter()
    if not (to_revise.num_rows or to_score.num_rows):
        return counts
    with ctx.endpoints([revising.STAGE, SCORE_STAGE]) as (revise_ep, score_ep):
        if to_revise.num_rows:
            stage = revising.revise_stage(ctx.cfg, target or "", query)
            counts.update(run_stage(ctx, stage, to_revise, revising.GROUP, revise_ep))
            to_score = _to_score(candidates, work, revise, instrument.id)
        if to_score.num_rows:
            llm = ctx.llm(SCORE_STAGE)
            stage, probe = resolve_stage(ctx.cfg, instrument, llm, score_ep)
            counts.update(run_stage(ctx, stage, to_score, "scores", score_ep))
            counts.update(probe.counts(SCORE_STAGE))
    return counts


# ------------------------------------------------------------------------------ the output


def _assemble(
    candidates: pa.Table,
    bank: Path,
    work: Bank,
    instrument: Instrument,
    revise: bool,
    counts: Counter[str],
) -> tuple[pa.Table, pa.Table]:
    """(aligned candidates with their revision and traits, failures) from the work folder;
    adds the totals over all runs into this folder to `counts`."""
    ids = candidates.column(KEY)
    failures = work.failures()
    failures = failures.filter(
        pc.and_(
            pc.is_in(failures.column("input_id"), value_set=ids),
            pc.is_in(failures.column("stage"), value_set=pa.array([revising.STAGE, SCORE_STAGE])),
        )
    )
    failures = failures.rename_columns([KEY, *failures.column_names[1:]])
    last = {pid: i for i, pid in enumerate(failures.column(KEY).to_pylist())}  # latest per id
    failures = failures.take(pa.array(sorted(last.values()), pa.int64()))
    failed = set(failures.column(KEY).to_pylist())
    revisions = work.read(revising.GROUP)
    revisions = revisions.filter(pc.is_in(revisions.column(KEY), value_set=ids))
    rescored = work.read("scores")
    rescored = rescored.filter(
        pc.and_(
            pc.is_in(rescored.column(KEY), value_set=ids),
            pc.invert(
                pc.is_in(rescored.column(KEY), value_set=pa.array(sorted(failed), pa.string()))
            ),
        )
    )
    reused = np.zeros(candidates.num_rows, bool) if revise else reusable(candidates, instrument.id)
    reused_ids = ids.filter(pa.array(reused))
    bank_scores = scores_of(bank, instrument.id)
    bank_scores = bank_scores.filter(pc.is_in(bank_scores.column(KEY), value_set=reused_ids))
    scores = pa.concat_tables(
        [
            conform(rescored, GROUPS["scores"]),
            conform(bank_scores, GROUPS["scores"]),
        ]
    )
    stage_of = dict(
        zip(failures.column(KEY).to_pylist(), failures.column("stage").to_pylist(), strict=True)
    )
    counts["revised"] = revisions.num_rows
    at = pc.index_in(revisions.column(KEY), value_set=ids)
    originals = candidates.column("narrative").take(at).to_pylist()
    counts["unchanged"] = sum(
        revising.unchanged(o, r)
        for o, r in zip(originals, revisions.column("revised_narrative").to_pylist(), strict=True)
    )
    counts["revise_failed"] = sum(stage == revising.STAGE for stage in stage_of.values())
    counts["score_failed"] = sum(stage == SCORE_STAGE for stage in stage_of.values())
    counts["rescored"] = rescored.num_rows
    counts["bank_scores_reused"] = int(reused.sum())
    table = candidates.filter(pc.is_in(ids, value_set=scores.column(KEY)))
    counts["aligned_candidates"] = table.num_rows
    return _columns(table, scores, revisions, reused_ids), failures.select(
        [KEY, "stage", "reason", "attempts", "time"]
    )


def _columns(
    table: pa.Table, scores: pa.Table, revisions: pa.Table, reused: pa.Array | pa.ChunkedArray
) -> pa.Table:
    """The output columns: identity and retrieval, narratives, traits (measured, then the bank's),
    where the traits come from, then the scoring detail."""
    at_revision = pc.index_in(table.column(KEY), value_set=revisions.column(KEY))
    at_score = pc.index_in(table.column(KEY), value_set=scores.column(KEY))
    columns: dict[str, Any] = {
        name: table.column(name) for name in (KEY, "rank", "similarity", "narrative")
    }
    for f in REVISION_FIELDS:
        columns[f.name] = revisions.column(f.name).take(at_revision)
    columns["attributes"] = table.column("attributes")
    for name in TRAITS:
        columns[name] = scores.column(name).take(at_score)
    for name in [*TRAITS, "instrument"]:
        columns[ORIGINAL + name] = table.column(ORIGINAL + name)
    source = np.where(
        pc.is_valid(columns["revised_narrative"]).to_numpy(zero_copy_only=False),
        "revised",
        "original",
    )
    source[pc.is_in(table.column(KEY), value_set=reused).to_numpy(zero_copy_only=False)] = "bank"
    columns["trait_source"] = pa.array(source.tolist(), pa.string())
    for f in SCORE_FIELDS:
        if f.name not in columns:
            columns[f.name] = scores.column(f.name).take(at_score)
    return pa.table(columns)


def trait_shift(table: pa.Table) -> dict[str, Any]:
    """Mean change (revised - original) of each trait over the revised candidates that have
    bank scores: how much the revision moved the measured personality (ideally: little)."""
    revised = pc.is_valid(table.column("revised_narrative")).to_numpy(zero_copy_only=False)
    both = revised & np.all(
        [pc.is_valid(table.column(ORIGINAL + t)).to_numpy(zero_copy_only=False) for t in TRAITS],
        axis=0,
    )
    if not both.any():
        return {"n": 0}
    rows = pa.array(both)
    shift = {
        t: float(
            np.mean(
                table.column(t).filter(rows).to_numpy(zero_copy_only=False)
                - table.column(ORIGINAL + t).filter(rows).to_numpy(zero_copy_only=False)
            )
        )
        for t in TRAITS
    }
    return {"n": int(both.sum()), "mean_change": shift}


def _write(path: Path, table: pa.Table) -> None:
    tmp = path.with_name(f".tmp-{path.name}")
    pq.write_table(table, tmp, compression="zstd")
    tmp.replace(path)
