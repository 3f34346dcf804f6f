"""`personagen train-embedder BANK --out MODEL`: contrastive fine-tuning of the persona embedder
on query-driven pairs, with hard negatives mined from the bank's index (the pieces are in
`personagen.index.training`).

1. Split the personas (those in the index, with text) into training and held-out sets, by
   persona and seeded, so no held-out persona is seen in training in any role.
2. Queries: an LLM writes `queries_per_persona` short queries each persona matches
   (`personagen.stages.queries`, stored in BANK/queries, cached). Positives are (query, persona
   text), the text being `persona_text` with `embed.text`: what `embed` embeds.
3. Hard negatives, from the index (`search_rows`, restricted to training personas): the top
   `negative_pool` personas for the query, minus likely false negatives - a candidate whose
   cosine to the positive persona exceeds `false_negative_max`, or whose score for the query
   exceeds `relative_margin` x the positive's (NV-Retriever's positive-aware filter) - and the
   hardest `negatives` of the rest. A pair left without enough gets random training personas
   (counted).
4. Loss: MultipleNegativesRankingLoss (in-batch negatives + the hard negatives), batches without
   duplicate texts (`BatchSamplers.NO_DUPLICATES`: a persona's other queries would otherwise be
   false in-batch negatives). `cached-mnrl` (GradCache: large batches in little memory, for GPUs)
   and `gist` (GISTEmbed, the frozen base model vetoes in-batch negatives it scores above the
   positive) are options (benchmarks/bench_train_embedder.py runs `gist` against the default;
   benchmarks/RESULTS.md has the default against in-batch negatives only).
5. Evaluation, before and after, on the held-out queries: sentence-transformers'
   `InformationRetrievalEvaluator` over a corpus of the held-out personas plus a seeded sample
   of the others (up to `eval_corpus_max`): recall@1, recall@10 and MRR@10 (one relevant
   persona per query, so recall@k = the share of queries whose persona is in the top k).
6. The model is saved to OUT (a sentence-transformers folder, plus `training.json`; no model
   card, which would copy persona texts and queries into the folder); use it with
   `--set embed.model=OUT`. Its model id (folder name + content hash) differs from the base
   model's, so `embed` refuses to mix its vectors with older ones (`embed --replace`).

Nothing is downloaded: the base model resolves offline, no hub and no trackers are used.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
import uuid
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from personagen.config import Config
from personagen.errors import PersonagenError
from personagen.index.embedder import load_embedder, resolve_model
from personagen.index.search import BankIndex, load_index
from personagen.index.training import (
    METRICS,
    evaluate,
    evaluation_corpus,
    fit,
    ir_evaluator,
    split_personas,
    training_columns,
)
from personagen.io.bank import KEY, read_group
from personagen.io.lock import check_out
from personagen.runtime.context import RunContext, run_stage
from personagen.runtime.summary import Summary
from personagen.stages.embed import persona_texts
from personagen.stages.queries import GROUP, queries_stage
from personagen.stages.queries import STAGE as QUERY_STAGE

log = logging.getLogger(__name__)

ROWS = [
    ("personas (in the index, with text)", "personas"),
    ("  training", "train_personas"),
    ("  held out", "heldout_personas"),
    ("queries this run: personas asked", "queries:in"),
    ("  answers written", "queries:out"),
    ("  failed (in the bank's failures)", "queries:failed"),
    ("  answers from the cache", "queries:cache_hits"),
    ("personas without queries (failed, left out)", "no_queries"),
    ("training pairs (query, persona)", "train_pairs"),
    ("  hard negatives mined", "hard_negatives"),
    ("  random negatives (none left after filtering)", "random_negatives"),
    ("  candidates dropped as likely false negatives", "dropped_false_negatives"),
    ("held-out queries", "heldout_queries"),
    ("evaluation corpus (personas)", "eval_corpus"),
    ("training steps", "steps"),
]


EQUATIONS = [(("personas",), ("train_personas", "heldout_personas"))]


def train_embedder(
    cfg: Config, bank: str | Path, out: str | Path, *, overwrite: bool = False
) -> Summary:
    """Fine-tune the embedder on `bank` (see the module docstring) and save it to `out`. The
    summary's `outputs` hold the held-out metrics `before` and `after`, and the `model_id`."""
    import torch

    ctx = RunContext(cfg, bank, "train-embedder")
    tcfg = cfg.train_embedder
    bank, out = ctx.bank.path, Path(out).resolve()
    check_out(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise PersonagenError(f"{out} exists and is not empty: choose another --out or --overwrite")
    if tcfg.threads:
        torch.set_num_threads(tcfg.threads)
    bi = load_index(bank)
    personas = _personas(bank, bi, cfg)
    train_ids, held_ids = split_personas(personas.column(KEY).to_pylist(), tcfg.heldout, cfg.seed)
    counts: Counter[str] = Counter(
        personas=personas.num_rows,
        train_personas=len(train_ids),
        heldout_personas=len(held_ids),
    )
    counts.update(write_queries(ctx, personas))
    queries = ctx.bank.read(GROUP, [KEY, "queries"])
    by_id = dict(
        zip(queries.column(KEY).to_pylist(), queries.column("queries").to_pylist(), strict=True)
    )
    text = dict(
        zip(personas.column(KEY).to_pylist(), personas.column("text").to_pylist(), strict=True)
    )
    counts["no_queries"] = sum(pid not in by_id for pid in text)
    pairs = [(q, pid) for pid in train_ids if pid in by_id for q in by_id[pid]]
    held = [(q, pid) for pid in held_ids if pid in by_id for q in by_id[pid]]
    if not pairs or not held:
        raise PersonagenError(
            f"no {'training' if not pairs else 'held-out'} queries: every query request failed "
            "(see the bank's failures, stage queries)"
        )
    counts["train_pairs"], counts["heldout_queries"] = len(pairs), len(held)

    base_cfg = cfg.embed.model_copy(update={"model": tcfg.base_model or cfg.embed.model})
    base = load_embedder(base_cfg)
    columns = training_columns(
        pairs,
        text,
        bi,
        train_ids,
        counts,
        tcfg=tcfg,
        index=cfg.index,
        embedder=cfg.embed,
        seed=cfg.seed,
    )
    corpus = evaluation_corpus(text, held_ids, tcfg.eval_corpus_max, cfg.seed)
    counts["eval_corpus"] = len(corpus)
    evaluator = ir_evaluator([q for q, _ in held], [p for _, p in held], corpus, "heldout")
    before = evaluate(evaluator, base.model)
    log.info("held-out before training: %s", before)
    guide = load_embedder(base_cfg).model if tcfg.loss == "gist" else None
    staging = out.with_name(f".{out.name}.staging-{uuid.uuid4().hex[:8]}")
    try:
        fit_started = time.perf_counter()
        counts["steps"] = fit(
            base.model,
            columns,
            tcfg,
            work=staging / "checkpoints",
            seed=cfg.seed,
            use_cpu=not cfg.embed.device.startswith("cuda"),
            guide=guide,
            progress_s=cfg.progress_s,
        )
        train_s = time.perf_counter() - fit_started
        after = evaluate(evaluator, base.model)
        log.info("held-out after training: %s", after)
        shutil.rmtree(staging / "checkpoints", ignore_errors=True)
        base.model.save(str(staging), create_model_card=False)
        info = {
            "base_model": base.model_id,
            "bank": str(bank),
            "index_model": bi.info["embed"]["model_id"],
            "embed_text": cfg.embed.text,
            "loss": tcfg.loss,
            "config": tcfg.model_dump(mode="json"),
            "seed": cfg.seed,
            "counts": dict(counts),
            "heldout_before": before,
            "heldout_after": after,
            "train_s": round(train_s, 1),
            "evaluation": "sentence-transformers InformationRetrievalEvaluator, cosine; one "
            "relevant persona per held-out query; corpus = held-out personas + seeded sample",
        }
        (staging / "training.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    model_id = resolve_model(str(out)).model_id(cfg.embed.backend)
    ctx.bank.update_manifest(train_embedder={"last_model": str(out), "model_id": model_id, **info})
    stages = [QUERY_STAGE] if f"{QUERY_STAGE}:in" in counts else []
    summary = Summary("train-embedder", counts, stages, equations=EQUATIONS, rows=ROWS)
    summary.outputs = {"before": before, "after": after, "out": out, "model_id": model_id}
    summary.lines = lines(before, after, out, model_id)
    return ctx.finish(summary)


def lines(before: dict[str, float], after: dict[str, float], out: Path, model_id: str) -> list:
    """The held-out metrics before and after training, and where the model went."""
    rows = [f"{'held-out':<12}{'before':>9}{'after':>9}"]
    rows += [f"{m:<12}{before[m]:>9.3f}{after[m]:>9.3f}" for m in METRICS]
    return [*rows, f"model saved to {out} ({model_id}): use --set embed.model={out}"]


def write_queries(ctx: RunContext, personas: pa.Table) -> Counter[str]:
    """Ask for the queries of the personas (`persona_id`, `text`) that have none yet (nor a
    recorded failure), into BANK/queries; returns the stage's counts."""
    done = ctx.bank.done(GROUP, failed_stage=QUERY_STAGE)
    todo = personas.filter(pc.invert(pc.is_in(personas.column(KEY), value_set=done)))
    counts: Counter[str] = Counter(
        {f"{QUERY_STAGE}:skipped_done": personas.num_rows - todo.num_rows}
    )
    if todo.num_rows == 0:
        return counts
    with ctx.endpoints([QUERY_STAGE]) as (endpoint,):
        counts.update(run_stage(ctx, queries_stage(ctx.cfg), todo, GROUP, endpoint))
    return counts


def _personas(bank: Path, bi: BankIndex, cfg: Config) -> pa.Table:
    """(persona_id, text) of the indexed personas with text; a seeded sample of
    `max_personas` of them when set."""
    personas = read_group(bank, "personas", [KEY, "narrative", "attributes"])
    personas = personas.filter(pc.is_in(personas.column(KEY), value_set=bi.ids))
    table = pa.table({KEY: personas.column(KEY), "text": persona_texts(personas, cfg.embed.text)})
    table = table.filter(pc.not_equal(table.column("text"), "")).sort_by(KEY)
    limit = cfg.train_embedder.max_personas
    if limit is not None and table.num_rows > limit:
        picked = np.sort(
            np.random.default_rng(cfg.seed).choice(table.num_rows, limit, replace=False)
        )
        table = table.take(pa.array(picked))
    return table
