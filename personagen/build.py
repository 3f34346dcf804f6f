"""`personagen build`: the whole job as one streaming Ray Data pipeline, then the bank-wide steps.

    input files -> ingest operators -> history rows not finished yet
        -> mine -> judge -> score       (LLM actor pools; a stage skips rows an earlier one failed)
               \\-> embed                (embedding actor pool: every mined persona)
        -> BankStageSink: BANK/histories, the bank's column groups, failures
    then on the driver: judge decisions over the whole bank (threshold, near-duplicates), the
    optional consistency check, the FAISS index, and the optional alignment.

Nothing is collected in one process: rows stream from the input files into the bank's part files.
A build killed at any point and started again with the same configuration skips the rows that
reached their last group or `failures`, and the response cache answers the LLM requests already
made for rows that had not been written yet: no row is lost, duplicated or paid for twice.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import Counter
from contextlib import nullcontext
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from personagen import __version__
from personagen.config import Config
from personagen.errors import PersonagenError
from personagen.io.bank import (
    KEY,
    done_ids,
    read_failures,
    read_group,
    read_manifest,
    update_manifest,
)
from personagen.io.histories import HISTORY_COLUMNS

log = logging.getLogger(__name__)

PACKAGES = (
    "ray",
    "openai",
    "pyarrow",
    "numpy",
    "scipy",
    "pot",
    "faiss-cpu",
    "sentence-transformers",
    "torch",
    "llama-cpp-python",
    "pydantic",
)
BLOCK_ROWS = 16
EMBEDDED_BLOCK_ROWS = 4
"""History rows per block in the stream (`build.rows_per_block` unset): with the embedded LLM,
one block's worth of rows takes about a minute per stage."""
GATES = {"mine": None, "judge": "mine", "score": "judge", "embed": "mine"}
"""The stage a row must have passed to reach each stage."""


@dataclass
class BuildSummary:
    counts: Counter[str]
    stages: list[str]
    wall_s: float
    errors: list[dict[str, Any]] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)
    """What the bank-wide steps produced: index info, the aligned set's folder, ..."""


# ------------------------------------------------------------------------------ resume


def stream_stages(cfg: Config) -> list[str]:
    """The stages of the streaming part, in order: mine always, the rest by configuration."""
    wanted = {
        "mine": True,
        "judge": cfg.build.judge,
        "score": cfg.build.score,
        "embed": cfg.build.embed,
    }
    return [stage for stage, on in wanted.items() if on]


def gate(stage: str, stages: list[str]) -> str | None:
    """The nearest enabled stage a row must pass before `stage` (score after mine without judge)."""
    before = GATES[stage]
    while before is not None and before not in stages:
        before = GATES[before]
    return before


def finished_ids(bank: Path, stages: list[str]) -> set[str]:
    """History ids whose row reached the last group it can reach, or failed in some stage.

    Embedding follows mining directly, so with `embed` on a row is finished once embedded (or
    failed). Otherwise it is finished once scored, or once judged and not kept (never scored).
    """
    failures = read_failures(bank)
    failed = failures.filter(pc.is_in(failures.column("stage"), value_set=pa.array(stages)))
    done = set(failed.column("input_id").to_pylist())
    if "embed" in stages:
        return done | done_ids(bank, "embeddings")
    if "score" in stages and "judge" in stages:
        quality = read_group(bank, "quality", [KEY, "kept"])
        rejected = quality.filter(pc.fill_null(pc.invert(quality.column("kept")), False))
        return done | done_ids(bank, "scores") | set(rejected.column(KEY).to_pylist())
    last = {"score": "scores", "judge": "quality", "mine": "personas"}[stages[-1]]
    return done | done_ids(bank, last)


# ------------------------------------------------------------------------------ ingest part


def history_rows(
    table: pa.Table, metadata: pa.Schema | None, done: pa.Array, ledger: Any
) -> pa.Table:
    """Ingest rows (kind, user_id, payload) -> the history rows not finished yet.

    The ingest's counts and errors go to the `ledger` actor, beside the data rather than
    through it (one call per block, waited for, so none is outstanding when the stream ends);
    the driver writes them out at the end.
    """
    from personagen.ingest import split_for_sink

    histories, counts, errors = split_for_sink(table, metadata)
    if histories is None:
        histories = HISTORY_COLUMNS.empty_table()
    todo = histories.filter(pc.invert(pc.is_in(histories.column("history_id"), value_set=done)))
    counts["build:already_done"] += histories.num_rows - todo.num_rows
    counts["build:todo"] += todo.num_rows
    import ray

    ray.get(ledger.add.remote(dict(counts), errors))  # waited for: these counts must all land
    return todo


def input_fingerprint(files: list[Path]) -> dict[str, Any]:
    """sha256 over the input files' names and contents: what a re-run must be given again."""
    digest = hashlib.sha256()
    size = 0
    for path in files:
        digest.update(path.name.encode() + b"\0")
        with path.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
                size += len(chunk)
    return {"files": len(files), "bytes": size, "sha256": digest.hexdigest()}


def package_versions() -> dict[str, str]:
    versions = {"personagen": __version__}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


# ------------------------------------------------------------------------------ the build


def build(cfg: Config, bank: str | Path, src: str | Path | None = None) -> BuildSummary:
    """Build (or resume) the persona bank at `bank` from `src` (default `build.input`)."""
    from personagen.cluster import init_ray
    from personagen.ingest import resolve_inputs

    start = time.perf_counter()
    source = src or cfg.build.input
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
    bank = Path(bank).resolve()  # workers write there, and their working folder is not ours
    bank.mkdir(parents=True, exist_ok=True)
    files, fmt = resolve_inputs(source, cfg.build.format)
    stages = stream_stages(cfg)
    fingerprint = input_fingerprint(files)
    _check_same_inputs(bank, fingerprint)
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    update_manifest(
        bank,
        config=cfg.masked(),
        build={
            "input": str(Path(source).resolve()),
            "format": fmt,
            "stages": stages,
            "started": started,
            "finished": None,
        },
        inputs=fingerprint,
        packages=package_versions(),
        seeds={
            "seed": cfg.seed,
            "llm.seed": cfg.llm.seed if cfg.llm.seed is not None else cfg.seed,
        },
        histories=str(bank / "histories"),
    )
    init_ray(cfg.ray)
    counts, errors = _stream(files, fmt, bank, cfg, stages)
    counts.update(_bank_steps(bank, cfg, stages))
    summary = BuildSummary(counts, stages, time.perf_counter() - start, errors)
    summary.outputs = _final_steps(bank, cfg, summary)
    _finish(bank, cfg, summary)
    return summary


def _check_same_inputs(bank: Path, fingerprint: dict[str, Any]) -> None:
    recorded = read_manifest(bank).get("inputs")
    if recorded and recorded.get("sha256") != fingerprint["sha256"]:
        log.warning(
            "bank %s was built from other inputs (%s files, sha256 %s…); resuming adds these",
            bank,
            recorded.get("files"),
            str(recorded.get("sha256"))[:12],
        )


def _stream(
    files: list[Path], fmt: str, bank: Path, cfg: Config, stages: list[str]
) -> tuple[Counter[str], list[dict[str, Any]]]:
    """The streaming part: ingest -> LLM stages -> embed -> the bank."""
    import ray

    from personagen.cluster import available_cpus
    from personagen.ingest import ingest_rows, metadata_schema
    from personagen.llm.runs import cache_folder, stage_llm
    from personagen.llm.server import llm_endpoints
    from personagen.llm.stage import BankStageSink, map_llm_stage, pool_settings
    from personagen.progress import progress_counter

    done = pa.array(sorted(finished_ids(bank, stages)), pa.string())
    llms = {
        "mine": stage_llm(cfg, cfg.llm, cfg.mine.max_tokens),
        "judge": stage_llm(cfg, cfg.judge.endpoint(cfg.llm)),
        "score": stage_llm(cfg, cfg.score.endpoint(cfg.llm)),
    }
    llm_stages = [s for s in stages if s in llms]
    in_cluster = cfg.llm.engine == "ray-vllm"
    if in_cluster:
        from personagen.llm.ray_vllm import map_vllm_stage, vllm_endpoint, vllm_processor

        endpoints_in = nullcontext([vllm_endpoint(llms[s]) for s in llm_stages])
    else:
        endpoints_in = llm_endpoints([llms[s] for s in llm_stages])
    # Every stage's actors live at once in a stream; a quarter of the cores for the LLM pools
    # (they mostly wait on the network) leaves the rest to ingest, embedding and writes.
    actors_per_stage = max(1, available_cpus() // (4 * len(llm_stages)))
    plan = [(s, *_SINK[s], gate(s, stages)) for s in stages]
    sink = BankStageSink(bank, plan, history_columns=True)
    with (
        endpoints_in as endpoints,
        progress_counter(stages, None, cfg.build.progress_s) as ledger,
    ):
        ds = ingest_rows(files, fmt, cfg.ingest)
        ds = ds.map_batches(
            history_rows,
            fn_kwargs={"metadata": metadata_schema(fmt), "done": done, "ledger": ledger},
            batch_format="pyarrow",
            batch_size=None,
        )
        block_rows = cfg.build.rows_per_block or (
            EMBEDDED_BLOCK_ROWS if any(e.embedded for e in endpoints) else BLOCK_ROWS
        )
        ds = ds.repartition(target_num_rows_per_block=block_rows)
        for stage, endpoint in zip(llm_stages, endpoints, strict=True):
            llm = llms[stage]
            llm_stage = _llm_stage(stage, cfg, bank, llm, endpoint, gate(stage, stages))
            if in_cluster:
                ds = map_vllm_stage(ds, llm_stage, vllm_processor(llm_stage, llm), ledger)
                continue
            pool = pool_settings(
                llm, endpoint, block_rows * 8, cfg.mine, actors=cfg.mine.actors or actors_per_stage
            )
            ds = map_llm_stage(ds, llm_stage, llm, endpoint, pool, cache_folder(cfg, bank), ledger)
        if "embed" in stages:
            from personagen.adapt.embed import embedding_space, map_embed_stage

            space = embedding_space(bank, cfg.embed)
            ds = map_embed_stage(
                ds,
                cfg,
                after="mine",
                progress=ledger,
                actor_cpus=cfg.build.embed_cpus,
                batch_size=block_rows,
            )
        ds.write_datasink(sink)
        counts, errors = ray.get(ledger.records.remote())
    if "embed" in stages:
        from personagen.adapt.embed import record_space

        record_space(bank, cfg, space, changed=sink.counts["embed:out"] > 0)
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


def _llm_stage(
    stage: str, cfg: Config, bank: Path, llm: Any, endpoint: Any, after: str | None
) -> Any:
    """The `LLMStage` of `stage`, its provenance recorded in the manifest."""
    from personagen import judge, mine, score
    from personagen.llm.runs import cache_folder, record_stage
    from personagen.psychometrics.instruments import get_instrument
    from personagen.psychometrics.scoring import check_min_items

    if stage == "mine":
        built = mine.mine_stage(cfg)
        record_stage(bank, stage, llm, endpoint, built.params.prompt.version)
    elif stage == "judge":
        built = judge.judge_stage(cfg, after=after)
        judge.record_judge(bank, llm, endpoint)
    else:
        instrument = get_instrument(cfg.score.instrument)
        check_min_items(instrument, cfg.score.min_items_per_trait)
        if cfg.llm.engine == "ray-vllm":
            from personagen.llm.ray_vllm import score_mode

            mode = score_mode(cfg.score, instrument)
        else:
            mode, _ = score.resolve_mode(
                cfg.score, instrument, llm, endpoint, cache_folder(cfg, bank)
            )
        built = score.score_stage(cfg, instrument, mode, after=after)
        score.record_score(bank, llm, endpoint, built.params)
    return built


# ------------------------------------------------------------------------- bank-wide steps


def _bank_steps(bank: Path, cfg: Config, stages: list[str]) -> Counter[str]:
    """What needs the whole bank: judge decisions (near-duplicates), bank-wide counts, and the
    consistency check of extreme traits (quantiles over the bank)."""
    from personagen import consistency, judge, score

    counts: Counter[str] = Counter()
    if "judge" in stages:
        counts.update(judge.apply_decisions(bank, cfg.judge))
    if "score" in stages:
        counts.update(score.bank_counts(bank))
        if cfg.score.consistency:
            counts.update(consistency.check_pending(bank, cfg))
    return counts


def _final_steps(bank: Path, cfg: Config, summary: BuildSummary) -> dict[str, Any]:
    """The FAISS index and the aligned set, when configured."""
    outputs: dict[str, Any] = {}
    if "embed" in summary.stages and cfg.build.index:
        from personagen.adapt.index import build_index

        outputs["index"] = build_index(bank, cfg)
    if cfg.build.align.enabled:
        from personagen.align.run import run_align

        target = cfg.build.align
        aligned = run_align(
            str(bank),
            target.reference,
            target.n,
            str(bank / "aligned"),
            cfg,
            method=target.method,
            group=target.group,
            countries=target.countries,
            exclude_flagged=target.exclude_flagged,
        )
        summary.counts.update({f"align:{k}": v for k, v in aligned.counts.items()})
        outputs["aligned"] = str(aligned.out)
        outputs["align_method"] = aligned.result.method
    if cfg.build.adapt.enabled:
        from personagen.adapt.adapt import adapt

        target = cfg.build.adapt
        adapted = adapt(
            bank,
            target.query or "",
            target.reference,
            bank / "adapted",
            cfg,
            n=target.n,
            k=target.k,
            group=target.group,
            countries=target.countries,
        )
        summary.counts.update({f"adapt:{k}": v for k, v in adapted.counts.items()})
        outputs["adapted"] = str(adapted.out)
    return outputs


def _finish(bank: Path, cfg: Config, summary: BuildSummary) -> None:
    """Check the counts, write failures of the ingest, usage and cost, and close the manifest."""
    import json

    from personagen.llm.runs import RunSummary, finish_run

    llm_stages = [s for s in summary.stages if s != "embed"]
    run = RunSummary(summary.counts, llm_stages, summary.wall_s)
    finish_run(bank, run, cfg, "build")
    check_build_counts(summary.counts, summary.stages)
    with (bank / "ingest-errors.jsonl").open("w", encoding="utf-8") as fh:
        for error in summary.errors:
            fh.write(json.dumps({"path": error["path"], "reason": error["reason"]}) + "\n")
    update_manifest(
        bank,
        build={
            "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "wall_s": round(summary.wall_s, 1),
            "outputs": summary.outputs,
        },
        counts=dict(sorted(summary.counts.items())),
    )


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


def summary_rows(summary: BuildSummary) -> list[tuple[str, str]]:
    """(label, counter) rows of the build summary table (the aligned and adapted sets' rows
    when the build made them)."""
    stages = summary.stages
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
        ("  flagged (score_flags)", "bank:flagged"),
    ]
    if "aligned" in summary.outputs:
        rows.append(("aligned set: personas chosen", "align:chosen"))
    if "adapted" in summary.outputs:
        rows += [("adapted set: retrieved", "adapt:retrieved"), ("  chosen", "adapt:chosen")]
    return rows
