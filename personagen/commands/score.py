"""`personagen score BANK`: personas answer a Big Five inventory as themselves.

Which personas: those the judge kept, and those without a verdict (mined with `--no-judge`, or
whose judgement failed) unless `score.only_kept`; personas the judge rejected never. A re-run
skips personas already scored or recorded as failed. The answer mode (`score.mode`) is resolved
once per run, by a probe request where it depends on the endpoint (`resolve_mode`). With
`score.consistency`, extreme traits are then checked against the narratives. A bank keeps the
scores of every instrument it is scored with, side by side (scoring with a second instrument
adds to the bank); `--replace` drops this instrument's scores and scores every persona again.

Without an LLM for every persona (`personagen.commands.score_embedding`): `score.mode=embedding`
scores from the narrative's embedding alone (zero-shot, standardised over the bank's scorable
personas); `surrogate=F` LLM-scores a random fraction F of the personas to score and predicts
the others' traits from their embeddings, with intervals and a held-out agreement report.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from personagen.commands.consistency import check_pending
from personagen.commands.render import llm_rows
from personagen.commands.score_embedding import (
    predict_rest,
    report_lines,
    score_zero_shot,
    surrogate_sample,
)
from personagen.config import Config, ScoreConfig
from personagen.errors import PersonagenError
from personagen.io.bank import KEY, NO_PERSONA_ORIGIN, Bank, scores_of
from personagen.psychometrics.instruments import Instrument, get_instrument
from personagen.psychometrics.scoring import check_min_items
from personagen.runtime.context import RunContext, run_stage
from personagen.runtime.summary import Summary
from personagen.stages import consistency as checking
from personagen.stages.score import STAGE, resolve_stage


def score(
    cfg: Config, bank: str | Path, *, replace: bool = False, surrogate: float | None = None
) -> Summary:
    """Score every persona of `bank` that should be and is not yet (nor failed) with
    `score.instrument`; then, with `score.consistency`, check extreme traits against the
    narratives. `replace` drops the instrument's scores (and the consistency verdicts) first.
    `surrogate`: the fraction to LLM-score, the rest predicted (see the module docstring)."""
    ctx = RunContext(cfg, bank, STAGE)
    if not ctx.bank.has("personas"):
        raise PersonagenError(f"no personas in {ctx.bank.path} (run `personagen mine` first)")
    instrument = get_instrument(cfg.score.instrument)
    check_min_items(instrument, cfg.score.min_items_per_trait)
    bare = bare_temperature(ctx.bank)
    embedding = cfg.score.mode == "embedding"
    _check_scorer(embedding, surrogate, bare)
    if replace:
        ctx.bank.drop_instrument(instrument.id, [STAGE])
        ctx.bank.drop([checking.STAGE], [checking.STAGE])
    lines: list[str] = []
    if embedding:
        counts = score_bank_zero_shot(ctx, instrument)
    else:
        _, pending, counts = to_score(ctx.bank, cfg.score, instrument.id)
        if pending.num_rows and surrogate is not None:
            scored, lines = score_surrogate(ctx, instrument, pending, surrogate)
            counts.update(scored)
        elif pending.num_rows:
            counts.update(score_pending(ctx, instrument, pending, bare))
    counts.update(bank_counts(ctx.bank, instrument.id))
    stages = [STAGE]
    if cfg.score.consistency:
        stages.append(checking.STAGE)
        counts.update(check_pending(ctx))
    summary = Summary(STAGE, counts, stages, rows=llm_rows(stages, counts), lines=lines)
    return ctx.finish(summary)


def _check_scorer(embedding: bool, surrogate: float | None, bare: float | None) -> None:
    """Refuse what the embedding scorers cannot do, before anything is dropped or asked."""
    if (embedding or surrogate is not None) and bare is not None:
        raise PersonagenError("the no-persona baseline has no narratives to embed: score it by LLM")
    if embedding and surrogate is not None:
        raise PersonagenError("a surrogate learns from LLM scores: not with score.mode=embedding")
    if surrogate is not None and not 0 < surrogate <= 1:
        raise PersonagenError(
            f"--surrogate is the fraction to LLM-score, in (0, 1], not {surrogate}"
        )


def bare_temperature(bank: Bank) -> float | None:
    """The no-persona baseline's sampling temperature (its respondents are the bare model, see
    `personagen baseline`); None for any other bank."""
    manifest = bank.manifest()
    if manifest.get("origin") != NO_PERSONA_ORIGIN:
        return None
    return float(manifest["baseline"]["temperature"])


def score_bank_zero_shot(ctx: RunContext, instrument: Instrument) -> Counter[str]:
    """Zero-shot scores (no LLM) for the bank's personas that lack them. They are standardised
    over every scorable persona, so they are a bank-wide step (also a build's, with
    score.mode=embedding), never a row-by-row one."""
    scorable, pending, counts = to_score(ctx.bank, ctx.cfg.score, instrument.id)
    if pending.num_rows:
        counts.update(score_zero_shot(ctx, instrument, scorable, pending))
    return counts


def to_score(
    bank: Bank, settings: ScoreConfig, instrument: str
) -> tuple[pa.Table, pa.Table, Counter[str]]:
    """The scorable personas (`scorable_personas`), those of them not scored on `instrument`
    yet (`pending_of`), and the counts of both."""
    scorable, counts = scorable_personas(bank, settings)
    pending, done = pending_of(bank, scorable, instrument)
    counts.update(done)
    return scorable, pending, counts


def score_pending(
    ctx: RunContext, instrument: Instrument, pending: pa.Table, bare: float | None = None
) -> Counter[str]:
    """Score the `pending` personas (id, narrative, kept) into the bank's `scores` group
    (`bare`: the no-persona baseline's temperature, see `bare_temperature`)."""
    with ctx.endpoints([STAGE]) as (endpoint,):
        llm = ctx.llm(STAGE)
        stage, asked = resolve_stage(ctx.cfg, instrument, llm, endpoint, ctx.cache_dir, None, bare)
        counts = run_stage(ctx, stage, pending, "scores", endpoint)
    counts.update(asked.counts(STAGE))
    return counts


def score_surrogate(
    ctx: RunContext, instrument: Instrument, pending: pa.Table, fraction: float
) -> tuple[Counter[str], list[str]]:
    """LLM-score a `fraction` of the personas to score (`surrogate_sample`), predict the rest
    from their embeddings (`predict_rest`); the counts and the report's console lines."""
    sample = surrogate_sample(ctx.bank, pending, instrument.id, fraction, ctx.cfg.seed)
    counts: Counter[str] = Counter()
    if sample.num_rows:
        counts.update(score_pending(ctx, instrument, sample))
    rest = pending.filter(pc.invert(pc.is_in(pending.column(KEY), sample.column(KEY))))
    if not rest.num_rows:
        return counts, []
    predicted, report = predict_rest(ctx, instrument, rest, fraction, counts)
    counts.update(predicted)
    return counts, report_lines(report)


def scorable_personas(bank: Bank, settings: ScoreConfig) -> tuple[pa.Table, Counter[str]]:
    """The personas scoring takes (id, narrative, kept; see `takes`), and the counts of those it
    does not: rejected by the judge, unjudged and left out (`score.only_kept`)."""
    personas = bank.read("personas", [KEY, "narrative"])
    quality = bank.read("quality", [KEY, "kept"])
    at = pc.index_in(personas.column(KEY), value_set=quality.column(KEY))
    kept = quality.column("kept").take(at)
    personas = personas.append_column("kept", kept)
    rejected = pc.fill_null(pc.equal(kept, False), False)
    unjudged = pc.is_null(kept)
    left_out = pc.and_(unjudged, pa.scalar(settings.only_kept))
    counts = Counter(
        {
            "bank:personas": personas.num_rows,
            "score:rejected": _count(rejected),
            "score:unjudged": _count(unjudged),
            "score:unjudged_left_out": _count(left_out),
        }
    )
    return personas.filter(pc.invert(pc.or_(rejected, left_out))), counts


def pending_of(bank: Bank, scorable: pa.Table, instrument: str) -> tuple[pa.Table, Counter[str]]:
    """The `scorable` personas not scored on `instrument` yet (nor failed), and the counts of
    those done and to do: `bank:personas` = rejected + unjudged left out + done + to do."""
    done = bank.done("scores", failed_stage=STAGE, instrument=instrument)
    finished = pc.is_in(scorable.column(KEY), value_set=done)
    todo = pc.invert(finished)
    counts = Counter({"score:skipped_done": _count(finished), "score:todo": _count(todo)})
    return scorable.filter(todo), counts


def _count(mask: pa.Array | pa.ChunkedArray) -> int:
    return int(pc.sum(mask).as_py() or 0)


def bank_counts(bank: Bank, instrument: str) -> Counter[str]:
    """Bank-wide figures of `instrument` after the run: personas scored, flagged, by answer
    mode, failed items."""
    scores = scores_of(bank.path, instrument, ["answer_mode", "score_flags", "item_errors"])
    counts: Counter[str] = Counter({"bank:scored": scores.num_rows})
    flags = scores.column("score_flags").to_pylist()
    counts["bank:flagged"] = sum(bool(f) for f in flags)
    for row in flags:
        for flag in {f.split(":", 1)[0] for f in row or []}:
            counts[f"bank:flag:{flag}"] += 1
    for mode in scores.column("answer_mode").to_pylist():
        counts[f"bank:mode:{mode}"] += 1
    counts["bank:failed_items"] = sum(
        len(e or []) for e in scores.column("item_errors").to_pylist()
    )
    return counts
