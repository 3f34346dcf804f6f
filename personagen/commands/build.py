"""`personagen build`: the whole job as one streaming Ray Data pipeline, then the bank-wide steps.

    input files -> ingest operators -> history rows not finished yet
        -> mine -> judge -> score       (LLM actor pools; a stage skips rows an earlier one failed)
               \\-> embed                (embedding actor pool: every mined persona)
        -> the bank sink: BANK/histories, the bank's column groups, failures
    then on the driver: judge decisions over the whole bank (threshold, near-duplicates), the
    optional consistency check, the FAISS index, and the optional alignment.

Nothing is collected in one process: rows stream from the input files into the bank's part files.
A build killed at any point and started again with the same configuration skips the rows that
reached their last group or `failures`, and the response cache answers the LLM requests already
made for rows that had not been written yet: no row is lost, duplicated or paid for twice.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from personagen.commands.adapt import adapt
from personagen.commands.align import align
from personagen.commands.consistency import check_pending
from personagen.commands.embed import embedding_space, record_space
from personagen.commands.index import index
from personagen.commands.ingest import write_errors
from personagen.commands.judge import apply_decisions
from personagen.commands.reference import load
from personagen.commands.score import bank_counts, score_bank_zero_shot
from personagen.config import Config
from personagen.errors import PersonagenError
from personagen.io.bank import KEY, done_ids, read_failures, read_group
from personagen.io.personas import read_personas
from personagen.llm.client import Endpoint
from personagen.psychometrics.instruments import get_instrument
from personagen.psychometrics.scoring import check_min_items
from personagen.runtime.cluster import available_cpus
from personagen.runtime.context import RunContext, run_chain
from personagen.runtime.executors.vllm import score_mode
from personagen.runtime.ingest import history_rows, ingest_rows
from personagen.runtime.provenance import input_fingerprint, package_versions
from personagen.runtime.sinks import PartSink, stage_split
from personagen.runtime.summary import Summary
from personagen.stages.base import Stage
from personagen.stages.ingest import metadata_schema, resolve_inputs
from personagen.stages.judge import judge_stage
from personagen.stages.mine import mine_stage
from personagen.stages.score import resolve_stage, score_stage

BLOCK_ROWS = 16
EMBEDDED_BLOCK_ROWS = 4
"""History rows per block in the stream (`build.rows_per_block` unset): with the embedded LLM,
one block's worth of rows takes about a minute per stage."""
WRITE_BLOCKS = 8
"""Blocks a bank write takes at once: one Parquet part per group per write, ~30 files per 1,000
users with 16-row blocks instead of ~250 (a write task each, read back by the bank-wide steps);
a killed build loses at most these rows' writes, which the response cache answers again."""
GATES = {"mine": None, "judge": "mine", "score": "judge", "embed": "mine"}
"""The stage a row must have passed to reach each stage."""
LLM_STREAM = ("mine", "judge", "score")
"""The stream's LLM stages, in order."""


# ------------------------------------------------------------------------------ resume


def stream_stages(cfg: Config) -> list[str]:
    """The stages of the streaming part, in order: mine always, the rest by configuration
    (zero-shot scoring, `score.mode=embedding`, is a bank-wide step: see `_bank_steps`)."""
    wanted = {
        "mine": True,
        "judge": cfg.build.judge,
        "score": cfg.build.score and cfg.score.mode != "embedding",
        "embed": cfg.build.embed,
    }
    return [stage for stage, on in wanted.items() if on]


def gate(stage: str, stages: list[str]) -> str | None:
    """The nearest enabled stage a row must pass before `stage` (score after mine without judge)."""
    before = GATES[stage]
    while before is not None and before not in stages:
        before = GATES[before]
    return before


def finished_ids(bank: Path, stages: list[str], instrument: str) -> set[str]:
    """History ids whose row reached the last group it can reach, or failed in some stage.

    Embedding follows mining directly, so with `embed` on a row is finished once embedded (or
    failed). Otherwise it is finished once scored on `instrument`, or once judged and not kept
    (never scored).
    """
    failures = read_failures(bank)
    failed = failures.filter(pc.is_in(failures.column("stage"), value_set=pa.array(stages)))
    done = set(failed.column("input_id").to_pylist())
    if "embed" in stages:
        return done | done_ids(bank, "embeddings")
    if "score" in stages and "judge" in stages:
        quality = read_group(bank, "quality", [KEY, "kept"])
        rejected = quality.filter(pc.fill_null(pc.invert(quality.column("kept")), False))
        scored = done_ids(bank, "scores", instrument=instrument)
        return done | scored | set(rejected.column(KEY).to_pylist())
    if stages[-1] == "score":
        return done | done_ids(bank, "scores", instrument=instrument)
    return done | done_ids(bank, {"judge": "quality", "mine": "personas"}[stages[-1]])


# ------------------------------------------------------------------------------ ingest part


# ------------------------------------------------------------------------------ the build


def build(cfg: Config, bank: str | Path, *, replace: bool = False) -> Summary:
    """Build (or resume) the persona bank at `bank` from `build.input`; `replace` starts it
    over. The summary's `outputs` hold what the bank-wide steps produced (index info, the
    aligned and adapted sets' folders)."""
    source = cfg.build.input
    if source is None:
        raise PersonagenError("no input histories: set build.input or pass --input")
    if cfg.llm.engine == "ray-vllm" and cfg.build.score and cfg.score.consistency:
        raise PersonagenError(
            "score.consistency is a bank-wide step through an endpoint, not available with "
            "llm.engine=ray-vllm; set score.consistency=false"
        )
    if cfg.build.adapt.enabled and not (cfg.build.embed and cfg.build.index):
        raise PersonagenError(
            "build.adapt retrieves from the index: it needs build.embed and build.index"
        )
    ctx = RunContext(cfg, bank, "build")
    bank = ctx.bank.path
    bank.mkdir(parents=True, exist_ok=True)
    files, fmt = resolve_inputs(source, cfg.build.format)
    stages = stream_stages(cfg)
    fingerprint = input_fingerprint(files)
    if replace:
        ctx.bank.clear()
    ctx.bank.claim_origin("mined")
    ctx.bank.claim(
        "inputs",
        fingerprint,
        lambda recorded: (
            f"bank {bank} was built from other inputs ({recorded['files']} files, "
            f"sha256 {str(recorded['sha256'])[:12]}...): pass --replace to build it over from "
            "these inputs, or choose another --out"
        ),
        held=ctx.bank.has("personas"),
    )
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    ctx.bank.update_manifest(
        config=cfg.masked(),
        build={
            "input": str(Path(source).resolve()),
            "format": fmt,
            "stages": stages,
            "started": started,
            "finished": None,
        },
        packages=package_versions(),
        seeds={
            "seed": cfg.seed,
            "llm.seed": cfg.llm.seed if cfg.llm.seed is not None else cfg.seed,
        },
        histories=str(bank / "histories"),
    )
    ctx.start_ray()
    counts, errors = _stream(ctx, files, fmt, stages)
    counts.update(_bank_steps(ctx, stages))
    summary = Summary(
        "build",
        counts,
        [s for s in stages if s != "embed"],
        equations=[(("mine:in",), ("build:todo",))],
    )
    # The index and the aligned and adapted sets need rows; with every row of a stage failed,
    # `finish` ends the build with that failure instead.
    summary.outputs = _final_steps(ctx, summary, stages) if not summary.failed_stage() else {}
    summary.rows = summary_rows(stages, summary.outputs)
    summary.lines = [f"{k}: {v}" for k, v in summary.outputs.items() if k != "index"]
    _finish(ctx, summary, stages, errors)
    return summary


def _stream(
    ctx: RunContext, files: list[Path], fmt: str, stages: list[str]
) -> tuple[Counter[str], list[dict[str, Any]]]:
    """The streaming part: ingest -> LLM stages -> embed -> the bank."""
    cfg, bank = ctx.cfg, ctx.bank.path
    instrument = get_instrument(cfg.score.instrument).id
    done = pa.array(sorted(finished_ids(bank, stages, instrument)), pa.string())
    llm_stages = [s for s in stages if s in LLM_STREAM]
    # Every stage's actors live at once in a stream; a quarter of the cores for the LLM pools
    # (they mostly wait on the network) leaves the rest to ingest, embedding and writes.
    actors_per_stage = max(1, available_cpus() // (4 * len(llm_stages)))
    plan = [(s, *_SINK[s], gate(s, stages)) for s in stages]
    split = stage_split(plan, history_columns=True, instruments={"score": instrument})
    embed = "embed" in stages
    space = embedding_space(ctx.bank, cfg.embed) if embed else None
    with ctx.endpoints(llm_stages, stream=True) as endpoints:
        chain = (
            (_llm_stage(ctx, stage, endpoint, gate(stage, stages)), endpoint)
            for stage, endpoint in zip(llm_stages, endpoints, strict=True)
        )
        block_rows = cfg.build.rows_per_block or (
            EMBEDDED_BLOCK_ROWS if any(e.embedded for e in endpoints) else BLOCK_ROWS
        )
        sink = PartSink(bank, split, "+".join(stages), min_rows=WRITE_BLOCKS * block_rows)

        def source(ledger: Any) -> Any:
            return ingest_rows(files, fmt, cfg.ingest).map_batches(
                history_rows,
                fn_kwargs={"metadata": metadata_schema(fmt), "done": done, "ledger": ledger},
                batch_format="pyarrow",
                batch_size=None,
            )

        counts, errors = run_chain(
            ctx,
            source,
            chain,
            sink,
            names=stages,
            rows=block_rows * 8,
            block_rows=block_rows,
            totals=None,
            actors=actors_per_stage,
            stream=True,
            embed=cfg.embed if embed else None,
            embed_cpus=cfg.build.embed_cpus,
        )
    if space is not None:
        record_space(ctx.bank, cfg, space, changed=sink.counts["embed:out"] > 0)
    # The ledger also holds the stages' live progress counters; the sink's are the final ones.
    counts = Counter({k: v for k, v in counts.items() if k.split(":")[0] not in stages})
    counts.update(sink.counts)
    counts["files_found"] = len(files)
    return counts, errors


_SINK = {
    "mine": ("personas", "history_id"),
    "judge": ("quality", KEY),
    "score": ("scores", KEY),
    "embed": ("embeddings", KEY),
}


def _llm_stage(ctx: RunContext, stage: str, endpoint: Endpoint, after: str | None) -> Stage:
    """The stage object of the LLM stage named `stage` in the stream."""
    cfg = ctx.cfg
    if stage == "mine":
        return mine_stage(cfg)
    if stage == "judge":
        return judge_stage(cfg, after=after)
    instrument = get_instrument(cfg.score.instrument)
    check_min_items(instrument, cfg.score.min_items_per_trait)
    if cfg.llm.engine == "ray-vllm":
        return score_stage(cfg, instrument, score_mode(cfg.score, instrument), after=after)
    scoring, _ = resolve_stage(cfg, instrument, ctx.llm(stage), endpoint, ctx.cache_dir, after)
    return scoring


# ------------------------------------------------------------------------- bank-wide steps


def _bank_steps(ctx: RunContext, stages: list[str]) -> Counter[str]:
    """What needs the whole bank: judge decisions (near-duplicates), zero-shot scores (their
    scale is the bank's), bank-wide counts, and the consistency check of extreme traits
    (quantiles over the bank)."""
    cfg = ctx.cfg
    counts: Counter[str] = Counter()
    if "judge" in stages:
        counts.update(apply_decisions(ctx.bank, cfg.judge))
    instrument = get_instrument(cfg.score.instrument)
    if cfg.build.score and cfg.score.mode == "embedding":
        counts.update(score_bank_zero_shot(ctx, instrument))
    if cfg.build.score:
        counts.update(bank_counts(ctx.bank, instrument.id))
        if ctx.cfg.score.consistency:
            counts.update(check_pending(ctx))
    return counts


def _final_steps(ctx: RunContext, summary: Summary, stages: list[str]) -> dict[str, Any]:
    """The FAISS index and the aligned and adapted sets, when configured."""
    cfg, bank = ctx.cfg, ctx.bank.path
    outputs: dict[str, Any] = {}
    if "embed" in stages and cfg.build.index:
        outputs["index"] = index(cfg, bank)
    if cfg.build.align.enabled:
        target = cfg.build.align
        reference = load(cfg, target.reference, group=target.group, countries=target.countries)
        settings = {"exclude_flagged": target.exclude_flagged}
        if target.method is not None:
            settings["method"] = target.method
        aligned = align(
            cfg.model_copy(update={"align": cfg.align.model_copy(update=settings)}),
            read_personas(bank, instrument=get_instrument(cfg.score.instrument).id),
            reference,
            target.n,
            bank / "aligned",
        )
        summary.counts.update({f"align:{k}": v for k, v in aligned.counts.items()})
        outputs["aligned"] = str(aligned.outputs["out"])
        outputs["align_method"] = aligned.outputs["result"].method
    if cfg.build.adapt.enabled:
        target = cfg.build.adapt
        settings = {k: v for k, v in (("n", target.n), ("k", target.k)) if v is not None}
        reference = load(cfg, target.reference, group=target.group, countries=target.countries)
        adapted = adapt(
            cfg.model_copy(update={"adapt": cfg.adapt.model_copy(update=settings)}),
            bank,
            target.query or "",
            reference,
            bank / "adapted",
        )
        summary.counts.update({f"adapt:{k}": v for k, v in adapted.counts.items()})
        outputs["adapted"] = str(adapted.outputs["out"])
    return outputs


def _finish(
    ctx: RunContext, summary: Summary, stages: list[str], errors: list[dict[str, Any]]
) -> None:
    """Check the counts, write the ingest's failures, close the manifest, and finish the run
    (usage and cost; last, since it ends a build in which every row of a stage failed)."""
    check_build_counts(summary.counts, stages)
    write_errors(ctx.bank.path / "ingest-errors.jsonl", errors)
    ctx.bank.update_manifest(
        build={
            "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "wall_s": round(ctx.elapsed_s, 1),
            "outputs": summary.outputs,
        },
        counts=dict(sorted(summary.counts.items())),
    )
    ctx.finish(summary)


def check_build_counts(counts: Counter[str], stages: list[str]) -> None:
    """Rows in = out + failed in every stage, and every history row that entered the stream
    reached the bank's histories (raises otherwise)."""
    problems = []
    for stage in stages:
        if counts[f"{stage}:in"] != counts[f"{stage}:out"] + counts[f"{stage}:failed"]:
            problems.append(f"{stage}: in != out + failed")
    if counts["mine:in"] != counts["build:todo"]:
        problems.append(f"{counts['build:todo']} rows to do, {counts['mine:in']} mined")
    if problems:
        raise PersonagenError("build counts do not add up: " + "; ".join(problems))


def summary_rows(stages: list[str], outputs: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, counter) rows of the build summary table (the aligned and adapted sets' rows
    when the build made them)."""
    rows = [
        ("input files", "files_found"),
        ("  read", "files_read"),
        ("  failed (see ingest-errors.jsonl)", "files_failed"),
        ("bad records (lines) in read files", "records_failed"),
        ("history rows", "windows"),
        ("  finished by an earlier run (skipped)", "build:already_done"),
        ("  streamed this run", "build:todo"),
    ]
    for stage in stages:
        rows += [
            (f"{stage}: rows in", f"{stage}:in"),
            ("  out", f"{stage}:out"),
            ("  failed (in failures)", f"{stage}:failed"),
            ("  not for this stage (rejected or failed before)", f"{stage}:skipped"),
        ]
        if stage != "embed":
            rows += [
                ("  requests", f"{stage}:requests"),
                ("  cached answers", f"{stage}:cache_hits"),
                ("  prompt tokens", f"{stage}:prompt_tokens"),
                ("  completion tokens", f"{stage}:completion_tokens"),
            ]
    rows += [
        ("bank: personas judged", "bank:judged"),
        ("  kept", "bank:kept"),
        ("  below the judge threshold", "bank:below_threshold"),
        ("  near-duplicates", "bank:duplicates"),
        ("bank: personas scored", "bank:scored"),
        ("  zero-shot from embeddings (no LLM)", "score:predicted"),
        ("  flagged (score_flags)", "bank:flagged"),
    ]
    if "aligned" in outputs:
        rows.append(("aligned set: personas chosen", "align:chosen"))
    if "adapted" in outputs:
        rows += [("adapted set: retrieved", "adapt:retrieved"), ("  chosen", "adapt:chosen")]
    return rows
