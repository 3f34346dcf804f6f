"""Trait scores from narrative embeddings: the zero-shot scorer and the surrogate of `personagen
score` (`--mode embedding`, `--surrogate F`).

The algorithms are in `personagen.psychometrics.embedding_scorer` and `.surrogate` (arrays in,
arrays out); this module brings them vectors and writes their rows. Narrative vectors are the
bank's own (`personagen embed`) where it holds them for the configured model and text, else
encoded here in the driver (and not stored). Item statements are encoded here.

Rows written: the bank's `scores` columns with no item answers (`item_ids` and responses null),
`answer_mode` `embedding` or `surrogate`, the flag `predicted`, `score_model` the embedding
model id; surrogate rows also get `trait_interval`. Personas with an empty narrative cannot be
embedded: they go to `failures`.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from personagen import TRAITS
from personagen.config import EmbedConfig
from personagen.errors import PersonagenError
from personagen.index.embedder import Embedder, load_embedder
from personagen.io.bank import GROUPS, KEY, TRAIT_INTERVAL_TYPE, Bank, failure_rows, scores_of
from personagen.psychometrics import surrogate
from personagen.psychometrics.embedding_scorer import (
    SPREAD,
    cosine,
    keyed_similarity,
    zero_shot_scores,
)
from personagen.psychometrics.flags import PREDICTED
from personagen.psychometrics.instruments import Instrument
from personagen.runtime.context import RunContext
from personagen.stages.embed import persona_texts
from personagen.stages.score import STAGE, persona_seed

PREDICTED_MODES = ("embedding", "surrogate")
"""`answer_mode`s of traits predicted from embeddings rather than answered by an LLM."""
MIN_TRAINING = 10
"""Fewest LLM-scored personas a surrogate learns from, whatever the fraction."""
FOLDS = 5
"""Cross-validation folds of the surrogate's held-out agreement."""


# ------------------------------------------------------------------------------ vectors


def narrative_vectors(
    bank: Bank, embed: EmbedConfig, ids: list[str], embedder: Embedder
) -> tuple[np.ndarray, int]:
    """((n, dim) vectors of the personas `ids`, how many came from the bank): the bank's
    `embeddings` where they are of `embedder`'s model and `embed.text`, the rest encoded."""
    vectors = np.zeros((len(ids), embedder.dim), np.float32)
    found = np.zeros(len(ids), bool)
    stored = bank.read("embeddings", [KEY, "embedding", "embed_model"])
    same_text = bank.manifest().get("embed", {}).get("text", "narrative") == embed.text
    if stored.num_rows and same_text:
        stored = stored.filter(pc.equal(stored.column("embed_model"), embedder.model_id))
        at = pc.index_in(pa.array(ids, pa.string()), value_set=stored.column(KEY))
        found = pc.is_valid(at).to_numpy(zero_copy_only=False)
        if found.any():
            rows = stored.column("embedding").take(pc.drop_null(at)).combine_chunks()
            vectors[found] = rows.flatten().to_numpy(zero_copy_only=False).reshape(-1, embedder.dim)
    if not found.all():
        missing = [pid for pid, hit in zip(ids, found, strict=True) if not hit]
        vectors[~found] = embedder.encode(persona_texts(_personas(bank, missing), embed.text))
    return vectors, int(found.sum())


def _personas(bank: Bank, ids: list[str]) -> pa.Table:
    """The `personas` rows of `ids`, in that order."""
    personas = bank.read("personas", [KEY, "narrative", "attributes"])
    return personas.take(pc.index_in(pa.array(ids, pa.string()), value_set=personas.column(KEY)))


class Similarity(NamedTuple):
    vectors: np.ndarray
    """(n, dim) narrative vectors."""
    keyed: np.ndarray
    """(n, 5) standardised keyed trait similarities (`keyed_similarity`)."""
    embedder: Embedder
    from_bank: int
    """How many vectors were the bank's own (the rest were encoded)."""


def trait_similarity(
    bank: Bank, embed: EmbedConfig, ids: list[str], instrument: Instrument
) -> Similarity:
    """The narrative vectors of the personas `ids` and their keyed similarity to the
    instrument's items, standardised over `ids`."""
    embedder = load_embedder(embed)
    vectors, from_bank = narrative_vectors(bank, embed, ids, embedder)
    items = embedder.encode([item.text for item in instrument.items])
    keyed = keyed_similarity(cosine(vectors, items), instrument)
    return Similarity(vectors, keyed, embedder, from_bank)


def with_text(personas: pa.Table) -> pa.Table:
    """The rows of `personas` whose narrative is not empty (nothing to embed otherwise)."""
    texts = pc.utf8_trim_whitespace(pc.fill_null(personas.column("narrative"), ""))
    return personas.filter(pc.not_equal(texts, ""))


def split_empty(bank: Bank, personas: pa.Table, instrument: str) -> tuple[pa.Table, int]:
    """(`personas` with a narrative, how many had none): those are recorded in `failures`."""
    kept = with_text(personas)
    ids = sorted(set(personas.column(KEY).to_pylist()) - set(kept.column(KEY).to_pylist()))
    if ids:
        reason = "empty narrative: no embedding to score from"
        bank.write_failures(
            failure_rows(ids, STAGE, [reason] * len(ids), [0] * len(ids), instrument)
        )
    return kept, len(ids)


def predicted_rows(
    ids: list[str],
    traits: np.ndarray,
    instrument: Instrument,
    mode: str,
    model: str,
    intervals: tuple[np.ndarray, np.ndarray] | None = None,
) -> pa.Table:
    """`scores` rows of predicted traits (NaN -> null); `intervals`: (lows, highs)."""
    n = len(ids)
    schema = GROUPS["scores"]
    columns: dict[str, Any] = {f.name: pa.nulls(n, f.type) for f in schema}
    columns[KEY] = pa.array(ids, pa.string())
    columns["instrument"] = pa.array([instrument.id] * n, pa.string())
    columns["answer_mode"] = pa.array([mode] * n, pa.string())
    columns["score_flags"] = pa.array([[PREDICTED]] * n, pa.list_(pa.string()))
    columns["score_model"] = pa.array([model] * n, pa.string())
    for j, trait in enumerate(TRAITS):
        columns[trait] = pa.array(traits[:, j], pa.float64(), mask=np.isnan(traits[:, j]))
    if intervals is not None:
        low, high = intervals
        fields = {
            f"{trait}_{end}": pa.array(bound[:, j], pa.float64(), mask=np.isnan(bound[:, j]))
            for j, trait in enumerate(TRAITS)
            for end, bound in (("low", low), ("high", high))
        }
        columns["trait_interval"] = pa.StructArray.from_arrays(
            [fields[f.name] for f in TRAIT_INTERVAL_TYPE], fields=list(TRAIT_INTERVAL_TYPE)
        )
    return pa.table(columns, schema=schema)


# ------------------------------------------------------------------------------ zero-shot


def score_zero_shot(
    ctx: RunContext, instrument: Instrument, scorable: pa.Table, pending: pa.Table
) -> Counter[str]:
    """Zero-shot scores of the `pending` personas, standardised over every `scorable` persona of
    the bank (id, narrative): what a persona's score is relative to."""
    scorable = with_text(scorable)
    pending, empty = split_empty(ctx.bank, pending, instrument.id)
    counts = Counter({"score:in": pending.num_rows + empty, "score:failed": empty})
    if not pending.num_rows:
        return counts
    ids = scorable.column(KEY).to_pylist()
    similarity = trait_similarity(ctx.bank, ctx.cfg.embed, ids, instrument)
    embedder = similarity.embedder
    at = pc.index_in(pending.column(KEY), value_set=scorable.column(KEY)).to_numpy()
    traits = zero_shot_scores(similarity.keyed[at])
    todo = pending.column(KEY).to_pylist()
    ctx.bank.write(
        "scores", predicted_rows(todo, traits, instrument, "embedding", embedder.model_id)
    )
    ctx.bank.update_manifest(
        score={
            "instrument": instrument.id,
            "answer_mode": "embedding",
            "embedding": {
                "model": embedder.model_id,
                "text": ctx.cfg.embed.text,
                "spread": SPREAD,
                "standardised_over": len(ids),
                "vectors_from_bank": similarity.from_bank,
            },
        }
    )
    counts.update({"score:out": len(todo), "score:predicted": len(todo)})
    return counts


# ------------------------------------------------------------------------------ surrogate


def llm_scored(bank: Bank, instrument: str) -> pa.Table:
    """The bank's `scores` rows of `instrument` answered by an LLM (not predicted)."""
    scores = scores_of(bank.path, instrument, [*TRAITS, "answer_mode"])
    predicted = pc.is_in(scores.column("answer_mode"), value_set=pa.array(PREDICTED_MODES))
    return scores.filter(pc.invert(pc.fill_null(predicted, False)))


def surrogate_sample(
    bank: Bank, pending: pa.Table, instrument: str, fraction: float, seed: int
) -> pa.Table:
    """The pending personas to LLM-score: enough that `fraction` of those the surrogate covers
    (pending + LLM-scored already), and at least `MIN_TRAINING`, are LLM-scored; chosen by a
    hash of seed and persona id, so a resumed run picks the same ones."""
    have = llm_scored(bank, instrument).num_rows
    need = max(math.ceil(fraction * (pending.num_rows + have)), MIN_TRAINING) - have
    if need <= 0:
        return pending.slice(0, 0)
    keys = [persona_seed(seed, f"surrogate:{pid}") for pid in pending.column(KEY).to_pylist()]
    return pending.take(pa.array(np.argsort(keys, kind="stable")[:need]))


def predict_rest(
    ctx: RunContext, instrument: Instrument, rest: pa.Table, fraction: float, llm: Counter[str]
) -> tuple[Counter[str], dict[str, Any]]:
    """Predict the traits of the `rest` personas from the bank's LLM-scored ones: the counts,
    and the report (also in the manifest's `score.surrogate`): the held-out agreement
    (`FOLDS`-fold cross-validation over the LLM-scored personas) and the cost avoided. `llm`:
    the counts of this run's LLM scoring, for its cost per persona."""
    rest, empty = split_empty(ctx.bank, rest, instrument.id)
    counts = Counter({"score:in": rest.num_rows + empty, "score:failed": empty})
    training = llm_scored(ctx.bank, instrument.id)
    training = with_text(_join_narratives(ctx.bank, training))
    targets = np.column_stack(
        [training.column(t).to_numpy(zero_copy_only=False) for t in TRAITS]
    ).astype(np.float64)
    ids = training.column(KEY).to_pylist() + rest.column(KEY).to_pylist()
    similarity = trait_similarity(ctx.bank, ctx.cfg.embed, ids, instrument)
    vectors, keyed, embedder = similarity.vectors, similarity.keyed, similarity.embedder
    n = training.num_rows
    models = surrogate.fit_surrogate(vectors[:n], targets, keyed[:n])
    if all(model is None for model in models):
        raise PersonagenError(
            f"the surrogate has {n} LLM-scored personas to learn from, too few: raise --surrogate"
        )
    held = surrogate.held_out(vectors[:n], targets, keyed[:n], FOLDS, seed=ctx.cfg.seed)
    agreement = surrogate.agreement(targets, *held)
    pred, low, high = surrogate.predict(models, vectors[n:], keyed[n:])
    todo = rest.column(KEY).to_pylist()
    rows = predicted_rows(todo, pred, instrument, "surrogate", embedder.model_id, (low, high))
    ctx.bank.write("scores", rows)
    counts.update({"score:out": len(todo), "score:predicted": len(todo)})
    report = _report(fraction, n, len(todo), models, agreement, embedder, llm)
    report["vectors_from_bank"] = similarity.from_bank
    ctx.bank.update_manifest(score={"surrogate": report})
    return counts, report


def _join_narratives(bank: Bank, scores: pa.Table) -> pa.Table:
    personas = bank.read("personas", [KEY, "narrative"])
    at = pc.index_in(scores.column(KEY), value_set=personas.column(KEY))
    return scores.append_column("narrative", personas.column("narrative").take(at))


def _report(
    fraction: float,
    trained: int,
    predicted: int,
    models: surrogate.Surrogate,
    agreement: list[dict[str, Any]],
    embedder: Embedder,
    llm: Counter[str],
) -> dict[str, Any]:
    """The surrogate's record: how it was fitted, its held-out agreement, the cost avoided (at
    this run's requests and tokens per LLM-scored persona; None when it LLM-scored none)."""
    scored = llm["score:out"]
    asked = llm["score:requests"] + llm["score:cache_hits"]
    tokens = llm["score:prompt_tokens"] + llm["score:completion_tokens"]
    return {
        "fraction": fraction,
        "level": surrogate.LEVEL,
        "model": embedder.model_id,
        "llm_scored": trained,
        "predicted": predicted,
        "held_out": f"{FOLDS}-fold cross-validation over the LLM-scored personas",
        "traits": {
            trait: {
                "alpha": None if model is None else model.ridge.alpha,
                "zero_shot_weight": None if model is None else model.weight,
                **agreement[j],
            }
            for j, (trait, model) in enumerate(zip(TRAITS, models, strict=True))
        },
        "requests_avoided": round(predicted * asked / scored) if scored else None,
        "tokens_avoided": round(predicted * tokens / scored) if scored and tokens else None,
    }


def report_lines(report: dict[str, Any]) -> list[str]:
    """The surrogate's report as console lines: agreement per trait, cost avoided."""
    lines = [
        f"surrogate: {report['predicted']} personas predicted from {report['llm_scored']} "
        f"LLM-scored ones ({report['model']}); held-out agreement ({FOLDS}-fold CV over the "
        f"LLM-scored, {report['level']:.0%} intervals):",
        f"  {'trait':<18}{'r':>7}{'MAE':>7}{'coverage':>10}{'width':>7}",
    ]
    for trait, row in report["traits"].items():
        cells = [row.get(k) for k in ("r", "mae", "coverage", "width")]
        shown = ["-" if v is None else f"{v:.2f}" for v in cells]
        lines.append(f"  {trait:<18}{shown[0]:>7}{shown[1]:>7}{shown[2]:>10}{shown[3]:>7}")
    if report["llm_scored"] < 50:
        lines.append(
            "  (from fewer than 50 LLM-scored personas these estimates are noisy: a weak but real "
            "correlation can read as negative in cross-validation)"
        )
    if report["requests_avoided"] is not None:
        avoided = f"~{report['requests_avoided']:,} requests"
        if report["tokens_avoided"] is not None:
            avoided += f", ~{report['tokens_avoided']:,} tokens"
        lines.append(f"  avoided (at this run's cost per LLM-scored persona): {avoided}")
    return lines
