"""The embed stage: persona texts -> L2-normalised float32 vectors in the bank's `embeddings` group.

What is embedded: by default the persona's narrative alone (`embed.text=narrative`): it is the
persona itself (what the simulation prompts with and what queries describe), while `attributes`
are the miner's lossy extraction of the same narrative. `attributes+narrative` puts a compact
attribute line first, so the facts queries filter on most (place, occupation, age) are inside the
model's token window even when a long narrative is cut (MiniLM reads 256 word pieces; the summary
counts the texts that were longer).

Pipeline: the driver reads the personas not embedded yet (resumable: embedded ids and recorded
failures are skipped) -> Ray Data `map_batches` on an actor pool (one model per actor, `threads`
torch threads each) -> `CountingPartSink` into BANK/embeddings/. A row whose text is empty, or
whose vector cannot be computed or is not finite, becomes a failure row with the reason; the
summary proves personas = already embedded + skipped failures + embedded + failed.
"""

from __future__ import annotations

import functools
import logging
import shutil
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from personagen.adapt.embedder import Embedder, load_embedder, resolve_model
from personagen.config import Config, EmbedConfig
from personagen.errors import PersonagenError
from personagen.io.bank import (
    KEY,
    conform,
    embedding_type,
    failure_rows,
    group_schema,
    read_failures,
    read_group,
    read_manifest,
    update_manifest,
    write_failures,
)

log = logging.getLogger(__name__)

STAGE = "embed"
GROUP = "embeddings"

_ATTRIBUTE_LABELS = (
    ("age_range", "Age"),
    ("gender", "Gender"),
    ("occupation", "Occupation"),
    ("location", "Location"),
    ("interests", "Interests"),
    ("values", "Values"),
)


# ------------------------------------------------------------------------------ the text


def persona_text(narrative: str | None, attributes: dict[str, Any] | None, mode: str) -> str:
    """The text embedded for one persona ("" when there is nothing to embed)."""
    narrative = (narrative or "").strip()
    if mode == "narrative" or not narrative:
        return narrative
    parts = []
    for key, label in _ATTRIBUTE_LABELS:
        value = (attributes or {}).get(key)
        if isinstance(value, list):
            value = ", ".join(str(v) for v in value if v)
        if value:
            parts.append(f"{label}: {value}.")
    return " ".join(parts) + "\n" + narrative if parts else narrative


def persona_texts(personas: pa.Table, mode: str) -> list[str]:
    narratives = personas.column("narrative").to_pylist()
    attributes = (
        personas.column("attributes").to_pylist()
        if "attributes" in personas.column_names
        else [None] * len(narratives)
    )
    return [persona_text(n, a, mode) for n, a in zip(narratives, attributes, strict=True)]


# ------------------------------------------------------------------------ the batch function


def embed_rows(batch: pa.Table, embedder: Embedder) -> pa.Table:
    """(persona_id, text) rows -> (persona_id, embedding, embed_model, error, truncated).

    A batch that fails as a whole is retried row by row, so one bad text costs only its own row.
    """
    ids = batch.column(KEY).to_pylist()
    texts = batch.column("text").to_pylist()
    vectors = np.zeros((len(texts), embedder.dim), np.float32)
    errors: list[str | None] = [None] * len(texts)
    try:
        vectors[:] = embedder.encode(texts)
    except Exception as exc:
        log.warning("batch of %d failed (%s); retrying row by row", len(texts), exc)
        for i, text in enumerate(texts):
            try:
                vectors[i] = embedder.encode([text])[0]
            except Exception as row_exc:
                errors[i] = f"encode failed: {type(row_exc).__name__}: {row_exc}"
    norms = np.linalg.norm(vectors, axis=1)
    for i in np.flatnonzero(~np.isfinite(vectors).all(axis=1) | (np.abs(norms - 1) > 1e-3)):
        errors[i] = errors[i] or f"bad vector (norm {norms[i]:.3g}, finite={np.isfinite(norms[i])})"
    truncated = embedder.too_long(texts)
    flat = pa.array(vectors.reshape(-1), pa.float32())
    return pa.table(
        {
            KEY: pa.array(ids, pa.string()),
            "embedding": pa.FixedSizeListArray.from_arrays(flat, embedder.dim),
            "embed_model": pa.array([embedder.model_id] * len(ids), pa.string()),
            "error": pa.array(errors, pa.string()),
            "truncated": pa.array(truncated, pa.bool_()),
        }
    )


class EmbedActor:
    """One model per Ray actor; called on batches of (persona_id, text)."""

    def __init__(self, cfg: EmbedConfig, threads: int) -> None:
        self.embedder = load_embedder(cfg, threads)

    def __call__(self, batch: pa.Table) -> pa.Table:
        return embed_rows(batch, self.embedder)


class ChainedEmbedActor:
    """The embed step inside a chained stream (`personagen build`): rows that passed `after`
    get the `embeddings` columns, every row gets the stage bookkeeping columns the bank sink
    routes by (`embed__error`, `embed__attempts`, zero token usage), like an LLM stage's."""

    def __init__(self, cfg: EmbedConfig, threads: int, after: str, progress: Any = None) -> None:
        self.embedder = load_embedder(cfg, threads)
        self.mode = cfg.text
        self.after = after
        self.progress = progress

    def __call__(self, batch: pa.Table) -> pa.Table:
        from personagen.llm.usage import USAGE_FIELDS

        reached = pc.and_(
            pc.is_null(batch.column(f"{self.after}__error")),
            pc.is_valid(batch.column(f"{self.after}__attempts")),
        )
        rows = batch.filter(reached)
        texts = pa.array(persona_texts(rows, self.mode), pa.string())
        embedded = embed_rows(pa.table({KEY: rows.column(KEY), "text": texts}), self.embedder)
        mask = reached.to_numpy(zero_copy_only=False)
        at = pa.array(np.cumsum(mask) - 1, mask=~mask)  # row -> its embedded row (null: none)
        for name in ("embedding", "embed_model"):
            batch = batch.append_column(name, embedded.column(name).take(at))
        batch = batch.append_column(f"{STAGE}__error", embedded.column("error").take(at))
        ones = pc.if_else(reached, pa.scalar(1, pa.int32()), pa.scalar(None, pa.int32()))
        batch = batch.append_column(f"{STAGE}__attempts", ones)
        zeros = pa.array(np.zeros(batch.num_rows, np.int64))
        for name in USAGE_FIELDS:
            batch = batch.append_column(f"{STAGE}__{name}", zeros)
        if self.progress is not None:
            failed = pc.sum(pc.is_valid(embedded.column("error"))).as_py() or 0
            self.progress.add.remote(
                {
                    f"{STAGE}:rows": rows.num_rows,
                    f"{STAGE}:failed": failed,
                    f"{STAGE}:skipped": batch.num_rows - rows.num_rows,
                }
            )
        return batch


def map_embed_stage(
    ds: Any,
    cfg: Config,
    after: str,
    progress: Any = None,
    actor_cpus: float | None = None,
    batch_size: int | None = None,
) -> Any:
    """Add the embed step to a chained Ray dataset (see `ChainedEmbedActor`). On CPUs it runs
    one actor unless `embed.actors` says otherwise: it shares the cores with the LLM stages and
    is far faster than they are; on GPUs, one actor per GPU. `actor_cpus` is what each actor
    claims from Ray's scheduler (default: its threads); `batch_size` caps `embed.batch_size`, so
    that rows are not held back waiting for a full batch in a stream of small blocks."""
    import ray

    from personagen.cluster import available_cpus

    gpus = int(ray.cluster_resources().get("GPU", 0))
    actors, threads, gpus_each = actor_layout(cfg.embed, available_cpus(), gpus)
    if not gpus_each:
        actors = cfg.embed.actors or 1
    return ds.map_batches(
        ChainedEmbedActor,
        fn_constructor_kwargs={
            "cfg": cfg.embed,
            "threads": threads,
            "after": after,
            "progress": progress,
        },
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=threads if actor_cpus is None else actor_cpus,
        num_gpus=gpus_each,
        batch_size=min(cfg.embed.batch_size, batch_size or cfg.embed.batch_size),
        batch_format="pyarrow",
    )


def split_embedded(table: pa.Table) -> tuple[pa.Table | None, Counter[str], list[dict[str, Any]]]:
    """Sink side: good rows -> the embeddings group; failed rows -> failure records."""
    counts: Counter[str] = Counter()
    failed = pc.is_valid(table.column("error"))
    counts["truncated"] = pc.sum(table.column("truncated")).as_py() or 0
    records = [
        {"persona_id": pid, "reason": reason}
        for pid, reason in zip(
            table.column(KEY).filter(failed).to_pylist(),
            table.column("error").filter(failed).to_pylist(),
            strict=True,
        )
    ]
    counts["failed"] = len(records)
    good = table.filter(pc.invert(failed))
    counts["embedded"] = good.num_rows
    if good.num_rows == 0:
        return None, counts, records
    dim = good.schema.field("embedding").type.list_size
    good = good.set_column(
        good.schema.get_field_index("embedding"),
        pa.field("embedding", embedding_type(dim)),
        good.column("embedding").cast(embedding_type(dim)),
    )
    return conform(good, group_schema(GROUP, dim)), counts, records


# ------------------------------------------------------------------------------ summary


@dataclass
class EmbedSummary:
    """Counts of one embed run; `check()` raises if they do not add up."""

    counts: Counter[str]
    model: dict[str, Any] = field(default_factory=dict)
    failures: list[dict[str, Any]] = field(default_factory=list)
    wall_s: float = 0.0

    def check(self) -> None:
        c = self.counts
        accounted = c["already_embedded"] + c["skipped_failed"] + c["embedded"] + c["failed"]
        if accounted != c["personas"]:
            raise PersonagenError(
                f"embed counts do not add up: {c['personas']} personas != {accounted} accounted"
            )

    def as_dict(self) -> dict[str, Any]:
        return {
            "counts": dict(sorted(self.counts.items())),
            "wall_s": round(self.wall_s, 3),
            "model_id": self.model.get("model_id"),
        }


SUMMARY_ROWS = [
    ("personas in the bank", "personas"),
    ("  already embedded (skipped)", "already_embedded"),
    ("  failed before (skipped; --retry-failed)", "skipped_failed"),
    ("  embedded now", "embedded"),
    ("  failed now", "failed"),
    ("    of which empty text", "failed_empty"),
    ("texts cut to the model's token window", "truncated"),
]


# ------------------------------------------------------------------------------ the stage


def embed_bank(
    bank: str | Path, cfg: Config, *, retry_failed: bool = False, replace: bool = False
) -> EmbedSummary:
    """Embed every persona of `bank` not embedded yet; see the module docstring."""
    start = time.perf_counter()
    bank = Path(bank)
    if not (bank / "personas").is_dir():
        raise PersonagenError(f"no personas in {bank} (not a persona bank, or nothing mined yet)")
    if replace:
        model = _describe_model(bank, cfg.embed, _model_id(cfg.embed))
        shutil.rmtree(bank / GROUP, ignore_errors=True)
        shutil.rmtree(bank / "index", ignore_errors=True)
    else:
        model = embedding_space(bank, cfg.embed)
    existing = read_group(bank, GROUP, [KEY])

    personas = read_group(bank, "personas", [KEY, "narrative", "attributes"])
    counts: Counter[str] = Counter(personas=personas.num_rows)
    done = set(existing.column(KEY).to_pylist())
    failed_before = set() if retry_failed or replace else _failed_ids(bank)
    ids = personas.column(KEY).to_pylist()
    is_done = [pid in done for pid in ids]
    skip_failed = [pid in failed_before and not d for pid, d in zip(ids, is_done, strict=True)]
    counts["already_embedded"] = sum(is_done)
    counts["skipped_failed"] = sum(skip_failed)
    todo_mask = pa.array([not (d or s) for d, s in zip(is_done, skip_failed, strict=True)])
    todo = personas.filter(todo_mask)
    texts = pa.array(persona_texts(todo, cfg.embed.text), pa.string())
    todo = pa.table({KEY: todo.column(KEY), "text": texts}).sort_by(KEY)
    empty = pc.equal(todo.column("text"), "")
    failures = [
        {"persona_id": pid, "reason": "empty narrative: nothing to embed"}
        for pid in todo.column(KEY).filter(empty).to_pylist()
    ]
    counts["failed_empty"] = len(failures)
    todo = todo.filter(pc.invert(empty))

    if todo.num_rows:
        sink_counts, sink_failures = _run_actors(bank, todo, cfg)
        counts.update(sink_counts)
        failures.extend(sink_failures)
    counts["failed"] = len(failures)
    if failures:
        write_failures(
            bank,
            failure_rows(
                [f["persona_id"] for f in failures],
                STAGE,
                [f["reason"] for f in failures],
                [1] * len(failures),
            ),
        )
    summary = EmbedSummary(counts, model, failures, time.perf_counter() - start)
    record_space(bank, cfg, model, changed=counts["embedded"] > 0, last_run=summary.as_dict())
    summary.check()
    return summary


def embedding_space(bank: Path, cfg: EmbedConfig) -> dict[str, Any]:
    """The vector space this run writes (see `_describe_model`), checked against the vectors
    the bank already holds: one bank never mixes two models or text modes. The check runs
    before the model loads, so a mismatch is reported even where that backend cannot load."""
    model_id = _model_id(cfg)
    intended = {"model_id": model_id, "text": cfg.text}
    _check_same_space(bank, read_group(bank, GROUP, [KEY, "embed_model"]), intended)
    return _describe_model(bank, cfg, model_id)


def record_space(
    bank: Path, cfg: Config, model: dict[str, Any], changed: bool, **extra: Any
) -> None:
    """The manifest's `embed` section: the model, the configuration, when vectors changed."""
    section = model | extra | {"config": cfg.masked()["embed"]}
    if changed:
        section["changed"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    update_manifest(bank, embed=section)


def _model_id(cfg: EmbedConfig) -> str:
    return resolve_model(cfg.model).model_id(cfg.backend)


def _describe_model(bank: Path, cfg: EmbedConfig, model_id: str) -> dict[str, Any]:
    """The vector space this run writes: model id, dimension, text mode (manifest section).

    Loading the model here also fails early on a bad model, before --replace deletes anything,
    and makes the ONNX export once instead of in every actor; a bank already described for the
    same model id skips the load.
    """
    known = read_manifest(bank).get("embed", {})
    if known.get("model_id") == model_id and known.get("text") == cfg.text and "dim" in known:
        return {k: v for k, v in known.items() if k not in ("last_run", "config", "changed")}
    return load_embedder(cfg, threads=cfg.threads).describe() | {"text": cfg.text}


def _check_same_space(bank: Path, existing: pa.Table, model: dict[str, Any]) -> None:
    """Refuse to mix vectors of two models, or of two kinds of text, in one bank."""
    models = set(pc.unique(existing.column("embed_model")).to_pylist()) - {model["model_id"]}
    if models:
        raise PersonagenError(
            f"the bank is embedded with {', '.join(sorted(models))}, not {model['model_id']}; "
            "vectors of two models cannot share an index: re-embed everything with --replace"
        )
    text = read_manifest(bank).get("embed", {}).get("text")
    if existing.num_rows and text and text != model["text"]:
        raise PersonagenError(
            f"the bank's vectors embed the {text!r} text, this run would embed "
            f"{model['text']!r}: re-embed everything with --replace (or keep embed.text={text})"
        )


def _failed_ids(bank: Path) -> set[str]:
    return set(read_failures(bank, STAGE).column("input_id").to_pylist())


def actor_layout(cfg: EmbedConfig, cpus: int, gpus: int) -> tuple[int, int, int]:
    """(actors, CPU threads per actor, GPUs per actor).

    On CPUs, by default one single-threaded actor per core (benchmarks/RESULTS.md: on 2 cores
    two 1-thread actors beat one 2-thread actor); on `cuda`, one actor per GPU.
    """
    threads = min(cfg.threads, cpus)
    if cfg.device.startswith("cuda") and cfg.backend == "torch":
        if gpus < 1:
            raise PersonagenError(f"embed.device={cfg.device} but the Ray cluster has no GPU")
        return cfg.actors or gpus, threads, 1
    return cfg.actors or max(1, cpus // threads), threads, 0


def _run_actors(
    bank: Path, todo: pa.Table, cfg: Config
) -> tuple[Counter[str], list[dict[str, Any]]]:
    import ray

    from personagen.cluster import available_cpus, init_ray
    from personagen.progress import run_with_progress
    from personagen.raydata import CountingPartSink

    init_ray(cfg.ray)
    gpus = int(ray.cluster_resources().get("GPU", 0))
    actors, threads, gpus_each = actor_layout(cfg.embed, available_cpus(), gpus)
    size = cfg.embed.batch_size
    log.info(
        "embedding %d personas with %s: %d actors x %d threads%s, batches of %d",
        todo.num_rows,
        cfg.embed.model,
        actors,
        threads,
        " + 1 GPU" if gpus_each else "",
        size,
    )
    ds = ray.data.from_arrow(list(_slices(todo, size)))
    ds = ds.map_batches(
        EmbedActor,
        fn_constructor_kwargs={"cfg": cfg.embed, "threads": threads},
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=threads,
        num_gpus=gpus_each,
        batch_size=size,
        batch_format="pyarrow",
    )
    sink = CountingPartSink(bank / GROUP, split_embedded)
    # Writing a part takes milliseconds: the writes claim no CPU slot, so they never wait for
    # cores the actors hold (with the actors holding every core Ray could not schedule them),
    # and one writer per actor keeps up without starting a crowd of worker processes.
    write = functools.partial(
        ds.write_datasink, sink, ray_remote_args={"num_cpus": 0}, concurrency=actors
    )
    run_with_progress(write, bank / GROUP, todo.num_rows, "embed")
    return sink.counts, sink.records


def _slices(table: pa.Table, size: int) -> Iterable[pa.Table]:
    for offset in range(0, table.num_rows, size):
        yield table.slice(offset, size)
