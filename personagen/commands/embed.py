"""`personagen embed BANK`: persona texts (`embed.text`, see `personagen.stages.embed`) ->
vectors in the bank's `embeddings` group.

The driver reads the personas not embedded yet (resumable: embedded ids and recorded failures
are skipped), an actor pool embeds them (`personagen.runtime.embed`), and the summary proves
personas = already embedded + skipped failures + embedded + failed. One bank holds the vectors
of one model and one text mode (`--replace` re-embeds everything).
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from personagen.config import Config, EmbedConfig
from personagen.errors import PersonagenError
from personagen.index.embedder import load_embedder, resolve_model
from personagen.io.bank import KEY, Bank, failure_rows
from personagen.runtime.context import RunContext
from personagen.runtime.embed import embed_table
from personagen.runtime.summary import Summary
from personagen.stages.embed import GROUP, STAGE, persona_texts

ROWS = [
    ("personas in the bank", "personas"),
    ("  already embedded (skipped)", "already_embedded"),
    ("  failed before (skipped; --retry-failed)", "skipped_failed"),
    ("  embedded now", "embedded"),
    ("  failed now", "failed"),
    ("    of which empty text", "failed_empty"),
    ("texts cut to the model's token window", "truncated"),
]
EQUATIONS = [(("personas",), ("already_embedded", "skipped_failed", "embedded", "failed"))]


def embed(
    cfg: Config, bank: str | Path, *, retry_failed: bool = False, replace: bool = False
) -> Summary:
    """Embed every persona of `bank` not embedded yet (see the module docstring); the summary's
    `outputs["model"]` describes the vector space."""
    ctx = RunContext(cfg, bank, STAGE)
    bank = ctx.bank
    if not bank.has("personas"):
        raise PersonagenError(
            f"no personas in {bank.path} (not a persona bank, or nothing mined yet)"
        )
    personas = bank.read("personas", [KEY, "narrative", "attributes"])  # read before any write
    if replace:
        model = _describe_model(bank, cfg.embed, _model_id(cfg.embed))
        bank.drop([GROUP, "index"])
    else:
        model = embedding_space(bank, cfg.embed)
    counts: Counter[str] = Counter(personas=personas.num_rows)
    done = set(bank.read(GROUP, [KEY]).column(KEY).to_pylist())
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
        ctx.start_ray()
        sink_counts, sink_failures = embed_table(bank.path, todo, cfg.embed)
        counts.update(sink_counts)
        failures.extend(sink_failures)
    counts["failed"] = len(failures)
    if failures:
        bank.write_failures(
            failure_rows(
                [f["persona_id"] for f in failures],
                STAGE,
                [f["reason"] for f in failures],
                [1] * len(failures),
            )
        )
    summary = Summary(STAGE, counts, equations=EQUATIONS, rows=ROWS)
    summary.outputs = {"model": model, "failures": failures}
    ctx.finish(summary)
    record_space(bank, cfg, model, changed=counts["embedded"] > 0, last_run=summary.as_dict())
    return summary


def embedding_space(bank: Bank, cfg: EmbedConfig) -> dict[str, Any]:
    """The vector space this run writes (see `_describe_model`), checked against the vectors
    the bank already holds: one bank never mixes two models or text modes. The check runs
    before the model loads, so a mismatch is reported even where that backend cannot load."""
    model_id = _model_id(cfg)
    existing = bank.read(GROUP, [KEY, "embed_model"])
    others = set(pc.unique(existing.column("embed_model")).to_pylist()) - {model_id}
    if others:
        raise PersonagenError(
            f"the bank is embedded with {', '.join(sorted(others))}, not {model_id}; "
            "vectors of two models cannot share an index: re-embed everything with --replace"
        )
    bank.claim(
        "embed",
        {"model_id": model_id, "text": cfg.text},
        lambda recorded: _refusal(recorded, model_id, cfg.text),
        held=existing.num_rows > 0,
    )
    return _describe_model(bank, cfg, model_id)


def _refusal(recorded: dict[str, Any], model_id: str, text: str) -> str:
    if recorded["model_id"] not in (None, model_id):
        return (
            f"the bank is embedded with {recorded['model_id']}, not {model_id}; vectors of "
            "two models cannot share an index: re-embed everything with --replace"
        )
    return (
        f"the bank's vectors embed the {recorded['text']!r} text, this run would embed "
        f"{text!r}: re-embed everything with --replace (or keep embed.text={recorded['text']})"
    )


def record_space(
    bank: Bank, cfg: Config, model: dict[str, Any], changed: bool, **extra: Any
) -> None:
    """The manifest's `embed` section: the model, the configuration, when vectors changed."""
    section = model | extra | {"config": cfg.masked()["embed"]}
    if changed:
        section["changed"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    bank.update_manifest(embed=section)


def _model_id(cfg: EmbedConfig) -> str:
    return resolve_model(cfg.model).model_id(cfg.backend)


def _describe_model(bank: Bank, cfg: EmbedConfig, model_id: str) -> dict[str, Any]:
    """The vector space this run writes: model id, dimension, text mode (manifest section).

    Loading the model here also fails early on a bad model, before --replace deletes anything,
    and makes the ONNX export once instead of in every actor; a bank already described for the
    same model id skips the load.
    """
    known = bank.manifest().get("embed", {})
    if known.get("model_id") == model_id and known.get("text") == cfg.text and "dim" in known:
        return {k: v for k, v in known.items() if k not in ("last_run", "config", "changed")}
    return load_embedder(cfg, threads=cfg.threads).describe() | {"text": cfg.text}


def _failed_ids(bank: Bank) -> set[str]:
    return set(bank.failures(STAGE).column("input_id").to_pylist())
