"""Contrastive fine-tuning of the persona embedder on query-driven pairs, with hard negatives
mined from the bank's index: the pieces of `personagen train-embedder` (see
`personagen.commands.train_embedder` for the whole procedure)."""

from __future__ import annotations

import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from personagen.errors import PersonagenError
from personagen.index.options import EmbedderOptions, IndexOptions, TrainingOptions
from personagen.index.search import BankIndex, search_rows

log = logging.getLogger(__name__)

METRICS = ("recall@1", "recall@10", "mrr@10")


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
    tcfg: TrainingOptions,
    index: IndexOptions,
) -> tuple[np.ndarray, int]:
    """Hard negatives for each (query vector, positive row) from the index, among `allowed`
    rows; returns (rows (q, negatives), candidates dropped as likely false negatives)."""
    if tcfg.negatives == 0 or len(queries) == 0:
        return np.full((len(queries), tcfg.negatives), -1, np.int64), 0
    pool = min(tcfg.negative_pool + 1, bi.n)  # +1: the positive is often among them
    scores, rows = search_rows(bi, queries, pool, allowed, index)
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


def make_loss(model: Any, tcfg: TrainingOptions, guide: Any = None) -> Any:
    from sentence_transformers.sentence_transformer import losses

    if tcfg.loss == "cached-mnrl":
        return losses.CachedMultipleNegativesRankingLoss(
            model, mini_batch_size=tcfg.mini_batch_size
        )
    if tcfg.loss == "gist":
        return losses.GISTEmbedLoss(model, guide=guide)
    return losses.MultipleNegativesRankingLoss(model)


def fit(
    model: Any,
    columns: dict[str, list[str]],
    tcfg: TrainingOptions,
    *,
    work: Path,
    seed: int,
    use_cpu: bool,
    guide: Any = None,
    progress_s: float = 10.0,
) -> int:
    """Train `model` in place on the (anchor, positive[, negative_i]) columns; returns steps."""
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer
    from sentence_transformers.sentence_transformer.training_args import (
        BatchSamplers,
        SentenceTransformerTrainingArguments,
    )
    from transformers.trainer_callback import PrinterCallback

    args = SentenceTransformerTrainingArguments(
        output_dir=str(work),
        num_train_epochs=tcfg.epochs,
        max_steps=tcfg.max_steps or -1,
        per_device_train_batch_size=tcfg.batch_size,
        learning_rate=tcfg.learning_rate,
        warmup_steps=tcfg.warmup_ratio,  # below 1: a share of the steps
        batch_sampler=BatchSamplers.NO_DUPLICATES,
        seed=seed,
        data_seed=seed,
        report_to="none",
        save_strategy="no",
        logging_strategy="steps",
        logging_steps=1,
        disable_tqdm=True,
        dataloader_num_workers=0,
        use_cpu=use_cpu,
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
        callbacks=[_progress_callback(progress_s)],
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


def training_columns(
    pairs: list[tuple[str, str]],
    text: dict[str, str],
    bi: BankIndex,
    train_ids: list[str],
    counts: Counter[str],
    *,
    tcfg: TrainingOptions,
    index: IndexOptions,
    embedder: EmbedderOptions,
    seed: int,
) -> dict[str, list[str]]:
    """The training columns: anchor (query), positive (persona text), negative_1.. (texts);
    adds how the negatives were found to `counts`."""
    row_of = {pid: i for i, pid in enumerate(bi.ids.to_pylist())}
    allowed = np.zeros(bi.n, bool)
    train_rows = np.array([row_of[pid] for pid in train_ids], np.int64)
    allowed[train_rows] = True
    query_vectors = bi.embedder(embedder).encode([q for q, _ in pairs])
    positives = np.array([row_of[pid] for _, pid in pairs], np.int64)
    negatives, dropped = mine_negatives(bi, query_vectors, positives, allowed, tcfg, index)
    counts["dropped_false_negatives"] = dropped
    counts["hard_negatives"] = int((negatives >= 0).sum())
    rng = np.random.default_rng(seed)
    for i, j in zip(*np.nonzero(negatives < 0), strict=True):
        choices = train_rows[(train_rows != positives[i]) & ~np.isin(train_rows, negatives[i])]
        negatives[i, j] = rng.choice(choices)
        counts["random_negatives"] += 1
    ids = bi.ids.to_pylist()
    columns = {"anchor": [q for q, _ in pairs], "positive": [text[pid] for _, pid in pairs]}
    for j in range(tcfg.negatives):
        columns[f"negative_{j + 1}"] = [text[ids[r]] for r in negatives[:, j]]
    return columns


def evaluation_corpus(
    text: dict[str, str], held: list[str], limit: int, seed: int
) -> dict[str, str]:
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
