"""`personagen validate-scorer`: does the configured scorer read traits off narratives at all?

Run it first with a model, before paying for a bank's worth of requests. Two checks:

- **Known answers** (default): the packaged known-answer set (200 narratives written to
  designed, uncorrelated Big Five levels, `personagen.psychometrics.known_answer`; `limit` takes
  the first N by id, a random subset) is written into `OUT/bank` and scored as `personagen
  score` scores a bank (endpoint, `score.instrument`, `score.mode`); the scored traits are
  correlated with the designed levels.
- **Self-reports** (`histories`): users' posts with their self-reported Big Five
  (`personagen.io.self_reports`); only the posts go to `OUT/histories.jsonl`, which is ingested
  into `OUT/ingest`, mined into `OUT/bank` (without the judge: every persona counts) and scored;
  each user's persona traits (the mean over their windows' personas) are correlated with their
  self-reports: the paper's trait consistency, or individual fidelity, of miner and scorer.

Both write `OUT/report.json` and `OUT/report.html` (`personagen.evaluate.validity_report`): per
trait Spearman's r with a bootstrap interval, the cross-correlations (discriminant validity),
acquiescence, answer entropy, time and tokens per persona. Every step resumes: a re-run asks
nothing it asked before. The bank remembers the scorer (endpoint, model, mode, seed) and the
input it was made with, and refuses another (`replace` starts it over; the response cache stays).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from personagen import TRAITS
from personagen.commands.ingest import ingest
from personagen.commands.mine import mine
from personagen.commands.render import llm_rows
from personagen.commands.score import score
from personagen.config import Config
from personagen.evaluate.validity import acquiescence, mean_entropy, rating, validity
from personagen.evaluate.validity_report import write_validity_report
from personagen.io.bank import ATTRIBUTES_TYPE, KEY, Bank, scores_of
from personagen.io.histories import HISTORIES_DIR
from personagen.io.self_reports import SelfReports, read_self_reports
from personagen.psychometrics.instruments import Instrument, get_instrument
from personagen.psychometrics.known_answer import KNOWN_ANSWER_FILE, known_answer_set
from personagen.psychometrics.scoring import align_responses, check_min_items
from personagen.runtime.context import RunContext
from personagen.runtime.summary import Summary

COMMAND = "validate-scorer"
ORIGIN = "known-answer"
"""The bank origin (manifest `origin`) of the known-answer personas."""
LEAK = 0.3
"""A designed (or self-reported) trait correlating this much with another trait's scores is
reported as a leak between traits."""
SCORE_EVERY_PERSONA = {"score.only_kept": False, "score.consistency": False}
"""Every persona is scored (none is judged), and only scored: the check is of the scorer."""
SCORE_COLUMNS = [KEY, "item_ids", "item_responses", "item_entropy", "answer_mode", "score_model"]


def validate_scorer(
    cfg: Config, out: str | Path, *, limit: int | None = None, replace: bool = False
) -> Summary:
    """Score the known-answer set (its first `limit` personas) into `out/bank` and write the
    report of scored against designed levels into `out`."""
    started = time.perf_counter()
    out = Path(out)
    personas, design = known_answer_set()
    if limit is not None:
        personas, design = personas.slice(0, limit), design[:limit]
    ctx = _context(cfg, out, replace)
    ctx.bank.claim_origin(ORIGIN)
    narratives = "\n".join(personas.column("narrative").to_pylist()).encode()
    _claim_scorer(ctx.bank, cfg, {"set": hashlib.sha256(narratives).hexdigest()}, ["score"])
    written = ctx.bank.read("personas", [KEY]).column(KEY)
    ctx.bank.write("personas", bank_personas(personas, written))
    scored = score(cfg.updated(SCORE_EVERY_PERSONA), ctx.bank)
    ids = personas.column(KEY).to_pylist()
    known = design.astype(np.float64)
    about = {
        "check": "known-answer set",
        "known_label": "designed level",
        "unit": "personas",
        "source": f"personagen {KNOWN_ANSWER_FILE} ({len(ids)} personas)",
    }
    document, traits = _measure(cfg, ctx.bank, ids, ids, ids, known, about)
    return _finish(out, document, known, traits, scored.counts, ["score"], started)


def validate_histories(
    cfg: Config,
    histories: str | Path,
    out: str | Path,
    *,
    limit: int | None = None,
    replace: bool = False,
) -> Summary:
    """Mine and score the users of `histories` (the first `limit`), then write the report of
    persona traits against self-reports into `out`."""
    started = time.perf_counter()
    out = Path(out)
    reports = read_self_reports(histories, limit)
    ctx = _context(cfg, out, replace)
    source = {"histories": hashlib.sha256(Path(histories).read_bytes()).hexdigest()}
    _claim_scorer(ctx.bank, cfg, source, ["mine", "score"])
    ingested = _ingest(cfg, reports, out)
    mined = mine(cfg.updated({"mine.judge": False}), ingested, ctx.bank)
    scored = score(cfg.updated(SCORE_EVERY_PERSONA), ctx.bank)
    personas = ctx.bank.read("personas", [KEY, "user_id"])
    document, traits = _measure(
        cfg,
        ctx.bank,
        personas.column(KEY).to_pylist(),
        personas.column("user_id").to_pylist(),
        reports.user_ids,
        reports.traits,
        {
            "check": "self-reports",
            "known_label": "self-report",
            "unit": "users",
            "source": f"{Path(histories).resolve()} ({len(reports.user_ids)} users)",
        },
    )
    counts = mined.counts + scored.counts
    return _finish(out, document, reports.traits, traits, counts, ["mine", "score"], started)


def bank_personas(personas: pa.Table, written: pa.ChunkedArray | pa.Array) -> pa.Table:
    """The known-answer personas not yet `written`, as rows of the bank's `personas` group
    (details as attributes; the design levels stay out of the bank)."""
    todo = personas.filter(pc.invert(pc.is_in(personas.column(KEY), value_set=written)))
    n = todo.num_rows
    attributes = [
        {"age_range": age, "gender": gender, "occupation": job, "location": place}
        for age, gender, job, place in zip(
            *(todo.column(c).to_pylist() for c in ("age", "gender", "occupation", "place")),
            strict=True,
        )
    ]
    return pa.table(
        {
            KEY: todo.column(KEY),
            "user_id": pa.nulls(n, pa.string()),
            "window_id": pa.nulls(n, pa.int32()),
            "narrative": todo.column("narrative"),
            "attributes": pa.array(attributes, ATTRIBUTES_TYPE),
            "source_meta": [
                json.dumps({"household": h}) for h in todo.column("household").to_pylist()
            ],
            "model": pa.nulls(n, pa.string()),
            "prompt_version": pa.nulls(n, pa.string()),
        }
    )


def _context(cfg: Config, out: Path, replace: bool) -> RunContext:
    """The bank's run context (its lock held while this command runs); `replace` empties it
    (but its response cache) and the histories ingested for it. The instrument is checked
    first: an unknown one is refused before anything is written."""
    check_min_items(get_instrument(cfg.score.instrument), cfg.score.min_items_per_trait)
    ctx = RunContext(cfg, out / "bank", COMMAND)
    if replace:
        ctx.bank.clear()
        shutil.rmtree(out / "ingest", ignore_errors=True)
        (out / "histories.jsonl").unlink(missing_ok=True)
    return ctx


def _claim_scorer(bank: Bank, cfg: Config, source: dict[str, Any], stages: list[str]) -> None:
    """Record which input and which LLMs (endpoint, model, answer mode, seed) the bank's
    personas and scores come from; refuse a bank made otherwise (its scores would be taken for
    this scorer's)."""
    fingerprint: dict[str, Any] = {**source, "mode": cfg.score.mode, "seed": cfg.seed}
    for stage in stages:
        llm = cfg.stage_llm(stage)
        fingerprint[stage] = {"base_url": llm.base_url, "model": llm.model}
        if llm.base_url is None:
            fingerprint[stage]["embedded"] = [llm.embedded.model_path, llm.embedded.weights]
    held = bank.has("personas") and (bank.has("scores") or bank.failures().num_rows > 0)

    def refusal(recorded: dict[str, Any]) -> str:
        differ = [k for k in fingerprint if recorded.get(k) != fingerprint[k]]
        what = ", ".join(f"{k} {json.dumps(recorded.get(k))}" for k in differ)
        return (
            f"{bank.path} holds a validation made with {what}: pass --replace to start it "
            "over, or choose another --out"
        )

    bank.claim(COMMAND, fingerprint, refusal, held=held)


def _ingest(cfg: Config, reports: SelfReports, out: Path) -> Path:
    """The users' posts (nothing else) as OUT/histories.jsonl, ingested into OUT/ingest unless
    that was done for the same posts already."""
    lines = "".join(
        json.dumps({"user_id": user, "posts": posts}, ensure_ascii=False) + "\n"
        for user, posts in zip(reports.user_ids, reports.posts, strict=True)
    )
    posts_file = out / "histories.jsonl"
    folder = out / "ingest"
    fresh = not posts_file.exists() or posts_file.read_text(encoding="utf-8") != lines
    if fresh or not (folder / HISTORIES_DIR).is_dir():
        posts_file.write_text(lines, encoding="utf-8")
        ingest(cfg.updated({"ingest.format": "jsonl"}), posts_file, folder)
    return folder / HISTORIES_DIR


def _measure(
    cfg: Config,
    bank: Bank,
    persona_ids: Sequence[str],
    owners: Sequence[str],
    people: Sequence[str],
    known: np.ndarray,
    about: dict[str, str],
) -> tuple[dict[str, Any], np.ndarray]:
    """The report's numbers: the traits scored for `persona_ids`, averaged per owner (the
    person in `people`, the rows of `known`, whose persona it is; others are left out), set
    against the `known` levels, and the response style; `about` names the check and what the
    known levels are. Returns the document and the scored levels (people x traits, NaN where
    unscored)."""
    instrument = get_instrument(cfg.score.instrument)
    row_of = {person: i for i, person in enumerate(people)}
    owner_of = {pid: row_of.get(owner) for pid, owner in zip(persona_ids, owners, strict=True)}
    theirs = [pid for pid, row in owner_of.items() if row is not None]
    scores = scores_of(bank.path, instrument.id, [*SCORE_COLUMNS, *TRAITS])
    scores = scores.filter(pc.is_in(scores.column(KEY), value_set=pa.array(theirs, pa.string())))
    values = np.array(
        [scores.column(t).to_numpy(zero_copy_only=False) for t in TRAITS], dtype=np.float64
    ).T.reshape(scores.num_rows, len(TRAITS))
    rows = np.array([owner_of[pid] for pid in scores.column(KEY).to_pylist()], dtype=np.int64)
    traits = per_person_mean(rows, values, len(people))
    document = validity(known, traits, seed=cfg.seed)
    scored = np.isfinite(traits).any(axis=1)
    document.update(
        about,
        instrument=instrument.id,
        answer_mode=_distinct(scores.column("answer_mode").to_pylist()),
        model=_distinct(scores.column("score_model").to_pylist()),
        endpoint=bank.manifest().get("score", {}).get("endpoint"),
        personas={"asked": len(people), "scored": int(scored.sum())},
        acquiescence=_acquiescence(scores, instrument),
        entropy_mean=mean_entropy(scores.column("item_entropy").to_pylist()),
        rows=[
            {"id": person, "known": _finite(known[i]), "scored": _finite(traits[i])}
            for i, person in enumerate(people)
        ],
    )
    return document, traits


def per_person_mean(rows: np.ndarray, values: np.ndarray, people: int) -> np.ndarray:
    """(people, k) means of the `values` rows that belong to each person (`rows`: the person
    of each row), NaN-skipping; NaN for a person without values."""
    finite = np.isfinite(values)
    sums = np.zeros((people, values.shape[1]))
    counts = np.zeros((people, values.shape[1]))
    np.add.at(sums, rows, np.where(finite, values, 0.0))
    np.add.at(counts, rows, finite)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / counts, np.nan)


def _acquiescence(scores: pa.Table, instrument: Instrument) -> float | None:
    responses = align_responses(
        scores.column("item_ids"), scores.column("item_responses"), instrument
    )
    return acquiescence(responses, instrument)


def _distinct(values: list[str | None]) -> str | None:
    """The values that occur, joined (one model, one mode, usually)."""
    return ", ".join(sorted({v for v in values if v is not None})) or None


def _finite(values: np.ndarray) -> list[float | None]:
    return [float(v) if np.isfinite(v) else None for v in values]


def _finish(
    out: Path,
    document: dict[str, Any],
    known: np.ndarray,
    traits: np.ndarray,
    counts: Counter[str],
    stages: list[str],
    started: float,
) -> Summary:
    """Verdict and cost (the command's time since `started`) into the document, the report
    written; the summary to print."""
    wall_s = time.perf_counter() - started
    document["verdict"] = verdict(document)
    document["cost"] = cost(counts, wall_s, stages)
    json_path, html_path = write_validity_report(out, document, known, traits)
    summary = Summary(COMMAND, counts, stages, rows=llm_rows(stages, counts), wall_s=wall_s)
    summary.outputs = {"report": document, "json": str(json_path), "html": str(html_path)}
    summary.lines = [f"report: {html_path} (numbers: {json_path})"]
    return summary


def verdict(document: dict[str, Any]) -> dict[str, Any]:
    """What the numbers say, in words: rated by the weakest trait (see `rating`), with a
    warning where traits leak into each other's scores."""
    traits = document["traits"]
    weakest = min(TRAITS, key=lambda t: traits[t]["r"])
    r = traits[weakest]["r"]
    word = rating(r)
    label = document["known_label"]
    text = {
        "usable": f"Usable: every trait's scores follow the {label}s (weakest: {weakest}, "
        f"r = {r:.2f}).",
        "weak": f"Weak: the scores follow the {label}s only loosely (weakest: {weakest}, "
        f"r = {r:.2f}); enough to tell groups apart, not people.",
        "no signal": f"No usable signal: the {weakest} scores do not follow the {label}s "
        f"(r = {r:.2f}); try a larger model or another answer mode before building a bank.",
    }[word]
    leak = document["discriminant_max_abs"]
    if leak >= LEAK:
        known, scored = document["discriminant_pair"]
        text += f" Traits leak: the {known} {label} correlates {leak:.2f} with {scored} scores."
    return {"weakest": weakest, "r": r, "rating": word, "text": text}


def cost(counts: Counter[str], wall_s: float, stages: list[str]) -> dict[str, Any]:
    """Time per persona scored this run (the whole command's, server start included), and
    requests and tokens per row of each LLM stage (answers from the cache cost none)."""
    scored = counts["score:in"]
    result: dict[str, Any] = {
        "wall_s": round(wall_s, 2),
        "personas_scored_this_run": scored,
        "seconds_per_persona": wall_s / scored if scored else None,
    }
    for stage in stages:
        rows = counts[f"{stage}:in"]
        for field in ("requests", "prompt_tokens", "completion_tokens"):
            result[f"{stage}_{field}_per_persona"] = (
                counts[f"{stage}:{field}"] / rows if rows else None
            )
        result[f"{stage}_answers_from_cache"] = counts[f"{stage}:cache_hits"]
    return result
