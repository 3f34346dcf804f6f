"""`personagen train-embedder`: contrastive fine-tuning of the persona embedder on query-driven
pairs, with hard negatives mined from the bank's index.

1. Split the personas (those in the index, with text) into training and held-out sets, by
   persona and seeded, so no held-out persona is seen in training in any role.
2. Queries: an LLM writes `queries_per_persona` short queries each persona matches
   (`personagen.adapt.queries`, stored in BANK/queries, cached). Positives are (query, persona
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from personagen.adapt.embed import persona_texts
from personagen.adapt.embedder import load_embedder, resolve_model
from personagen.adapt.index import BankIndex, load_index, search_rows
from personagen.adapt.queries import STAGE as QUERY_STAGE
from personagen.adapt.queries import write_queries
from personagen.config import Config, TrainEmbedderConfig
from personagen.errors import PersonagenError
from personagen.io.bank import KEY, read_group, update_manifest
from personagen.llm.runs import RunSummary, finish_run

log = logging.getLogger(__name__)

METRICS = ("recall@1", "recall@10", "mrr@10")

SUMMARY_ROWS = [
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


@dataclass
class TrainSummary:
    counts: Counter[str]
    before: dict[str, float]
    after: dict[str, float]
    out: Path
    model_id: str
    info: dict[str, Any] = field(default_factory=dict)
    wall_s: float = 0.0

    def check(self) -> None:
        if QUERY_STAGE + ":in" in self.counts:
            RunSummary(self.counts, [QUERY_STAGE]).check()
        c = self.counts
        if c["train_personas"] + c["heldout_personas"] != c["personas"]:
            raise PersonagenError(f"train-embedder counts do not add up: {dict(c)}")

    def lines(self) -> list[str]:
        rows = [f"{'held-out':<12}{'before':>9}{'after':>9}"]
        rows += [f"{m:<12}{self.before[m]:>9.3f}{self.after[m]:>9.3f}" for m in METRICS]
        return [
            *rows,
            f"model saved to {self.out} ({self.model_id}): use --set embed.model={self.out}",
        ]


# ------------------------------------------------------------------------------ pieces


def split_personas(ids: list[str], heldout: float, seed: int) -> tuple[list[str], list[str]]:
    """(training ids, held-out ids): a seeded permutation of the sorted ids, `heldout` of them
    (at least one) held out; the same ids and seed always give the same split."""
    order = sorted(ids)
    if len(order) < 3:
        raise PersonagenError(f"training needs at least 3 personas with text, got {len(order)}")
    n_held = min(len(order) - 2, max(1, round(heldout * len(order))))
    perm = np.random.default_rng(seed).permutation(len(order))
    held = sorted(order[i] for i in perm[:n_held])
    train = sorted(order[i] for i in perm[n_held:])
    return train, held


def filter_negatives(
    scores: np.ndarray,
    rows: np.ndarray,
    positives: np.ndarray,
    to_positive: np.ndarray,
    positive_scores: np.ndarray,
    count: int,
    false_negative_max: float,
    relative_margin: float,
) -> tuple[np.ndarray, np.ndarray]:
    """The hardest `count` negatives per query among its retrieved candidates.

    `scores`, `rows` (q, p): each query's candidates by descending score (row -1 = none);
    `positives` (q,): the positive's row; `to_positive` (q, p): each candidate's cosine to the
    positive; `positive_scores` (q,): the query's score for its positive. Dropped: the positive,
    candidates above `false_negative_max` to the positive and those scoring above
    `relative_margin` x the positive's score. Returns (picked rows (q, count), -1 where fewer
    remain; dropped-as-false-negative mask (q, p)).
    """
    valid = (rows >= 0) & (rows != positives[:, None])
    likely_false = valid & (
        (to_positive > false_negative_max) | (scores > relative_margin * positive_scores[:, None])
    )
    keep = valid & ~likely_false
    picked = np.full((len(rows), count), -1, np.int64)
    for i in range(len(rows)):
        hardest = rows[i][keep[i]][:count]
        picked[i, : len(hardest)] = hardest
    return picked, likely_false


def mine_negatives(
    bi: BankIndex,
    queries: np.ndarray,
    positives: np.ndarray,
    allowed: np.ndarray,
    cfg: Config,
) -> tuple[np.ndarray, int]:
    """Hard negatives for each (query vector, positive row) from the index, among `allowed`
    rows; returns (rows (q, negatives), candidates dropped as likely false negatives)."""
    tcfg = cfg.train_embedder
    if tcfg.negatives == 0 or len(queries) == 0:
        return np.full((len(queries), tcfg.negatives), -1, np.int64), 0
    pool = min(tcfg.negative_pool + 1, bi.n)  # +1: the positive is often among them
    scores, rows = search_rows(bi, queries, pool, allowed, cfg.index)
    positive_vectors = bi.exact_vectors(positives)
    candidates = bi.exact_vectors(np.maximum(rows, 0).ravel()).reshape(*rows.shape, -1)
    to_positive = np.einsum("qd,qkd->qk", positive_vectors, candidates)
    positive_scores = np.einsum("qd,qd->q", queries, positive_vectors)
    picked, dropped = filter_negatives(
        scores,
        rows,
        positives,
        to_positive,
        positive_scores,
        tcfg.negatives,
        tcfg.false_negative_max,
        tcfg.relative_margin,
    )
    return picked, int(dropped.sum())


def ir_evaluator(queries: list[str], relevant: list[str], corpus: dict[str, str], name: str) -> Any:
    """sentence-transformers' `InformationRetrievalEvaluator`: query i's one relevant persona is
    `relevant[i]`; cosine similarity; recall@1/@10 and MRR@10."""
    from sentence_transformers.sentence_transformer.evaluation import (
        InformationRetrievalEvaluator,
    )
    from sentence_transformers.util import cos_sim

    return InformationRetrievalEvaluator(
        queries={f"q{i}": q for i, q in enumerate(queries)},
        corpus=corpus,
        relevant_docs={f"q{i}": {pid} for i, pid in enumerate(relevant)},
        accuracy_at_k=[1, 10],
        precision_recall_at_k=[1, 10],
        mrr_at_k=[10],
        ndcg_at_k=[10],
        map_at_k=[10],
        score_functions={"cosine": cos_sim},
        name=name,
        write_csv=False,
    )


def evaluate(evaluator: Any, model: Any) -> dict[str, float]:
    """recall@1, recall@10, MRR@10 of `model` on the evaluator's queries."""
    scores = evaluator(model)
    prefix = f"{evaluator.name}_cosine_"
    return {metric: float(scores[prefix + metric]) for metric in METRICS}


# ------------------------------------------------------------------------------ training


def make_loss(model: Any, tcfg: TrainEmbedderConfig, guide: Any = None) -> Any:
    from sentence_transformers.sentence_transformer import losses

    if tcfg.loss == "cached-mnrl":
        return losses.CachedMultipleNegativesRankingLoss(
            model, mini_batch_size=tcfg.mini_batch_size
        )
    if tcfg.loss == "gist":
        return losses.GISTEmbedLoss(model, guide=guide)
    return losses.MultipleNegativesRankingLoss(model)


def fit(model: Any, columns: dict[str, list[str]], cfg: Config, work: Path, guide: Any) -> int:
    """Train `model` in place on the (anchor, positive[, negative_i]) columns; returns steps."""
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer
    from sentence_transformers.sentence_transformer.training_args import (
        BatchSamplers,
        SentenceTransformerTrainingArguments,
    )
    from transformers.trainer_callback import PrinterCallback

    tcfg = cfg.train_embedder
    args = SentenceTransformerTrainingArguments(
        output_dir=str(work),
        num_train_epochs=tcfg.epochs,
        max_steps=tcfg.max_steps or -1,
        per_device_train_batch_size=tcfg.batch_size,
        learning_rate=tcfg.learning_rate,
        warmup_steps=tcfg.warmup_ratio,  # below 1: a share of the steps
        batch_sampler=BatchSamplers.NO_DUPLICATES,
        seed=cfg.seed,
        data_seed=cfg.seed,
        report_to="none",
        save_strategy="no",
        logging_strategy="steps",
        logging_steps=1,
        disable_tqdm=True,
        dataloader_num_workers=0,
        use_cpu=not cfg.embed.device.startswith("cuda"),
    )

    class Trainer(SentenceTransformerTrainer):
        def add_model_card_callback(self, default_args_dict: dict[str, Any]) -> None:
            """None: the model card would copy training texts (personas, queries) into the
            model folder, and sample them with a progress bar of its own."""

    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_dict(columns),
        loss=make_loss(model, tcfg, guide),
        callbacks=[_progress_callback(cfg.mine.progress_s)],
    )
    trainer.remove_callback(PrinterCallback)  # it prints every log dict; ours logs progress
    result = trainer.train()
    return int(result.global_step)


def _progress_callback(interval_s: float) -> Any:
    """Logs step, loss, steps/s and ETA every `interval_s` seconds (and at the end)."""
    from transformers import TrainerCallback

    class Progress(TrainerCallback):
        def __init__(self) -> None:
            self.start = time.monotonic()
            self.last = 0.0
            self.step = 0
            self.loss: float | None = None

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **_: Any) -> None:
            if logs and "loss" in logs:
                self.loss = float(logs["loss"])
            elapsed = time.monotonic() - self.start
            done = state.global_step >= state.max_steps
            if (elapsed - self.last < interval_s and not done) or state.global_step == self.step:
                return
            self.last, self.step = elapsed, state.global_step
            rate = state.global_step / elapsed if elapsed > 0 else 0.0
            eta = (state.max_steps - state.global_step) / rate if rate else float("nan")
            log.info(
                "train: step %d/%d, loss %s, %.2f steps/s, ETA %.0fs",
                state.global_step,
                state.max_steps,
                f"{self.loss:.4f}" if self.loss is not None else "-",
                rate,
                eta,
            )

    return Progress()


# ------------------------------------------------------------------------------ the command


def train_embedder(
    bank: str | Path, out: str | Path, cfg: Config, *, overwrite: bool = False
) -> TrainSummary:
    """Fine-tune the embedder on `bank` (see the module docstring) and save it to `out`."""
    import torch

    started = time.perf_counter()
    tcfg = cfg.train_embedder
    bank, out = Path(bank).resolve(), Path(out).resolve()
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
    counts.update(write_queries(bank, personas, cfg))
    queries = read_group(bank, "queries", [KEY, "queries"])
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
    columns = _columns(pairs, text, bi, train_ids, cfg, counts)
    corpus = _corpus(text, held_ids, tcfg.eval_corpus_max, cfg.seed)
    counts["eval_corpus"] = len(corpus)
    evaluator = ir_evaluator([q for q, _ in held], [p for _, p in held], corpus, "heldout")
    before = evaluate(evaluator, base.model)
    log.info("held-out before training: %s", before)
    guide = load_embedder(base_cfg).model if tcfg.loss == "gist" else None
    staging = out.with_name(f".{out.name}.staging-{uuid.uuid4().hex[:8]}")
    try:
        fit_started = time.perf_counter()
        counts["steps"] = fit(base.model, columns, cfg, staging / "checkpoints", guide)
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
    update_manifest(bank, train_embedder={"last_model": str(out), "model_id": model_id, **info})
    summary = TrainSummary(counts, before, after, out, model_id, info)
    summary.wall_s = time.perf_counter() - started
    finish_run(
        bank,
        RunSummary(counts, [QUERY_STAGE] if "queries:in" in counts else [], summary.wall_s),
        cfg,
        "train-embedder",
    )
    summary.check()
    return summary


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


def _columns(
    pairs: list[tuple[str, str]],
    text: dict[str, str],
    bi: BankIndex,
    train_ids: list[str],
    cfg: Config,
    counts: Counter[str],
) -> dict[str, list[str]]:
    """The training columns: anchor (query), positive (persona text), negative_1.. (texts)."""
    tcfg = cfg.train_embedder
    row_of = {pid: i for i, pid in enumerate(bi.ids.to_pylist())}
    allowed = np.zeros(bi.n, bool)
    train_rows = np.array([row_of[pid] for pid in train_ids], np.int64)
    allowed[train_rows] = True
    query_vectors = bi.embedder(cfg.embed).encode([q for q, _ in pairs])
    positives = np.array([row_of[pid] for _, pid in pairs], np.int64)
    negatives, dropped = mine_negatives(bi, query_vectors, positives, allowed, cfg)
    counts["dropped_false_negatives"] = dropped
    counts["hard_negatives"] = int((negatives >= 0).sum())
    rng = np.random.default_rng(cfg.seed)
    for i, j in zip(*np.nonzero(negatives < 0), strict=True):
        choices = train_rows[(train_rows != positives[i]) & ~np.isin(train_rows, negatives[i])]
        negatives[i, j] = rng.choice(choices)
        counts["random_negatives"] += 1
    ids = bi.ids.to_pylist()
    columns = {"anchor": [q for q, _ in pairs], "positive": [text[pid] for _, pid in pairs]}
    for j in range(tcfg.negatives):
        columns[f"negative_{j + 1}"] = [text[ids[r]] for r in negatives[:, j]]
    return columns


def _corpus(text: dict[str, str], held: list[str], limit: int, seed: int) -> dict[str, str]:
    """The held-out personas plus a seeded sample of the others, `limit` in all (at least all
    held-out ones)."""
    others = sorted(set(text) - set(held))
    room = max(0, limit - len(held))
    if len(others) > room:
        others = [
            others[i]
            for i in np.sort(np.random.default_rng(seed).choice(len(others), room, replace=False))
        ]
    return {pid: text[pid] for pid in [*held, *others]}
