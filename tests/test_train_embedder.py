"""`personagen train-embedder`: query writing (stub LLM with queries derived from the persona
text), hard-negative filtering, a few real training steps of the packaged MiniLM on CPU, the
held-out evaluation against an exact computation, and the saved model in `embed` / `index` /
`search`; then a bank written by `personagen build`, trained on and adapted with its model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from llm_test_server import Faults, LLMTestServer, request_schema, schema_responder
from synthetic import embed_and_index, keyword_queries, query_writer, stub_llm_sets, write_mined
from test_adapt import run_adapt
from test_build import build_settings, write_users

from personagen import TRAITS
from personagen.commands.build import build
from personagen.commands.embed import embed
from personagen.commands.index import index
from personagen.commands.train_embedder import train_embedder, write_queries
from personagen.config import EmbedConfig, load_config
from personagen.errors import PersonagenError
from personagen.index.embedder import load_embedder, resolve_model
from personagen.index.search import search
from personagen.index.training import evaluate, filter_negatives, ir_evaluator, split_personas
from personagen.io.bank import KEY, read_failures, read_group, read_manifest
from personagen.llm.structured import OutputError, parse_answer
from personagen.runtime.context import RunContext
from personagen.stages.queries import PersonaQueries, queries_schema

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "histories.jsonl"


def example_bank(bank: Path, failing: str) -> dict[str, str]:
    """One persona per example user: the first 120 words of their posts (`failing` marked)."""
    posts: dict[str, list[str]] = {}
    for line in EXAMPLES.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        posts.setdefault(row["user_id"], []).extend(row["text"].split())
    texts = {f"{user}/0": " ".join(words[:120]) for user, words in sorted(posts.items())}
    texts[failing] += " FAILQUERIES"
    write_mined(bank, texts)
    embed_and_index(bank)
    return texts


def exact_metrics(model, queries, relevant, corpus) -> dict[str, float]:
    """recall@1/@10 and MRR@10 by brute force: the rank of each query's persona by cosine."""
    ids = list(corpus)
    docs = model.encode([corpus[i] for i in ids], normalize_embeddings=True)
    q = model.encode(queries, normalize_embeddings=True)
    scores = q @ docs.T
    target = np.array([ids.index(r) for r in relevant])
    rank = (scores > scores[np.arange(len(q)), target][:, None]).sum(axis=1) + 1
    return {
        "recall@1": float(np.mean(rank <= 1)),
        "recall@10": float(np.mean(rank <= 10)),
        "mrr@10": float(np.mean(np.where(rank <= 10, 1 / rank, 0))),
    }


def train_sets(server, *extra: str) -> list[str]:
    return [
        *stub_llm_sets(server),
        "train_embedder.heldout=0.3",
        "train_embedder.max_steps=4",
        "train_embedder.batch_size=12",
        "train_embedder.learning_rate=2e-4",
        "train_embedder.threads=2",
        "embed.batch_size=16",
        *extra,
    ]


@pytest.mark.slow
def test_train_a_few_steps_then_embed_index_and_search_with_the_model(ray_local, tmp_path):
    bank, model_dir = tmp_path / "bank", tmp_path / "model"
    failing = "u07/0"
    texts = example_bank(bank, failing)
    with LLMTestServer(Faults(rates={"500": 0.05}, seed=4), query_writer) as server:
        cfg = load_config(None, train_sets(server))
        with pytest.raises(PersonagenError, match="exists and is not empty"):
            model_dir.mkdir()
            (model_dir / "x").write_text("x")
            train_embedder(cfg, bank, model_dir)
        summary = train_embedder(cfg, bank, model_dir, overwrite=True)
        requests = len(server.records())

        c = summary.counts
        assert c["personas"] == 30 == c["train_personas"] + c["heldout_personas"]
        assert c["heldout_personas"] == 9
        assert c["queries:in"] == 30 and c["queries:out"] == 29 and c["queries:failed"] == 1
        assert c["no_queries"] == 1
        assert read_failures(bank, "queries")["input_id"].to_pylist() == [failing]
        with_queries = 29
        assert c["train_pairs"] + c["heldout_queries"] == 3 * with_queries
        assert c["hard_negatives"] + c["random_negatives"] == c["train_pairs"]
        assert c["steps"] == 4
        stored = {r[KEY]: r["queries"] for r in read_group(bank, "queries").to_pylist()}
        assert stored["u01/0"] == keyword_queries(texts["u01/0"], 3)

        # held-out retrieval gets better after four steps on its own kind of query: the base
        # model ranks 23 of the 27 held-out queries' personas first (MRR@10 0.885), the trained
        # one 24 (0.938); a model that learned nothing keeps the base model's figures
        before, after = summary.outputs["before"], summary.outputs["after"]
        assert after["recall@1"] > before["recall@1"]
        assert after["mrr@10"] >= before["mrr@10"] + 0.03
        assert not (model_dir / "README.md").exists(), "a model card would copy training texts"
        for file in model_dir.rglob("*.json"):
            assert (
                texts["u01/0"][:40] not in file.read_text()
                and stored["u01/0"][0] not in file.read_text()
            )
        info = json.loads((model_dir / "training.json").read_text())
        assert info["heldout_after"] == summary.outputs["after"] and info["loss"] == "mnrl"

        # the saved model loads offline, is a new vector space, and the evaluator is exact
        trained = load_embedder(EmbedConfig(model=str(model_dir)))
        base = load_embedder(EmbedConfig())
        assert trained.model_id.startswith("model@") and trained.model_id != base.model_id
        assert trained.model_id == summary.outputs["model_id"]
        vectors = trained.encode(["a nurse who works night shifts"])
        assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
        _, held = split_personas(list(texts), 0.3, cfg.seed)
        queries = [(q, pid) for pid in held if pid != failing for q in stored[pid]]
        corpus = {pid: texts[pid] for pid in texts}
        asked, relevant = [q for q, _ in queries], [p for _, p in queries]
        evaluator = ir_evaluator(asked, relevant, corpus, "t")
        exact = exact_metrics(trained.model, asked, relevant, corpus)
        assert evaluate(evaluator, trained.model) == pytest.approx(exact, abs=1e-6)
        assert after == pytest.approx(exact, abs=1e-6)
        assert before == pytest.approx(exact_metrics(base.model, asked, relevant, corpus), abs=1e-6)

        # a second run asks the LLM nothing: the queries (and the failure) are in the bank
        pending = pa.table({KEY: list(texts), "text": list(texts.values())})
        assert write_queries(RunContext(cfg, bank, "train-embedder"), pending) == {
            "queries:skipped_done": 30
        }
        assert len(server.records()) == requests

    # the trained folder is usable by embed (a new space: replace), index and search
    use = load_config(
        None, ["ray.num_cpus=2", "ray.object_store_mb=512", f"embed.model={model_dir}"]
    )
    with pytest.raises(PersonagenError, match="cannot share an index"):
        embed(use, bank)
    embedded = embed(use, bank, replace=True)
    assert embedded.counts["embedded"] == 30
    info = index(use, bank)
    assert info["embed"]["model_id"] == summary.outputs["model_id"]
    found = search(bank, stored["u01/0"][0], 3, options=use.index, embedder=use.embed)
    assert found[KEY].to_pylist()[0] == "u01/0"


def build_and_query_answers(body, rng) -> str:
    """Query requests: `query_writer`'s keyword queries; any other request (mine, judge, score,
    revise): a valid instance of its schema, as the stub server answers by default."""
    schema = request_schema(body) or {}
    if "queries" in schema.get("properties", {}):
        return query_writer(body, rng)
    return schema_responder(Faults().string_words)(body, rng)


@pytest.mark.slow
def test_a_built_bank_trains_and_adapt_retrieves_with_the_trained_model(ray_local, tmp_path):
    """What `personagen build` writes (histories group included) is a bank train-embedder and
    adapt take as it is; after `embed --replace` and `index` with the trained folder, adapt's
    retrieval runs on the trained model (without revision: the bank's scores are used, so no
    LLM stage runs here; test_adapt.py covers revision)."""
    n, query = 12, "a quiet reader who likes music and coffee"
    bank, model_dir, out = tmp_path / "bank", tmp_path / "model", tmp_path / "adapted"
    src = write_users(tmp_path / "users.jsonl", n)
    with LLMTestServer(Faults(seed=5), build_and_query_answers) as server:
        sets = build_settings(
            server,
            "build.align.enabled=false",
            "train_embedder.max_steps=2",
            "train_embedder.batch_size=8",
            "train_embedder.threads=2",
            "reference.builtin_rows=2000",
            "evaluate.floor_repeats=2",
            "align.atoms=256",
        )
        built = build(load_config(overrides=[*sets, f"build.input={src}"]), bank)
        assert (bank / "histories").is_dir() and built.counts["embed:out"] == n

        summary = train_embedder(load_config(overrides=sets), bank, model_dir)
        c = summary.counts
        assert c["personas"] == n == c["queries:out"] and c["steps"] == 2
        assert c["train_pairs"] + c["heldout_queries"] == 3 * n
        assert read_manifest(bank)["train_embedder"]["model_id"] == summary.outputs["model_id"]
        requests = len(server.records())

        use = load_config(overrides=[*sets, f"embed.model={model_dir}"])
        assert embed(use, bank, replace=True).counts["embedded"] == n
        assert index(use, bank)["embed"]["model_id"] == summary.outputs["model_id"]
        expected = search(bank, query, 6, ["kept=true"], options=use.index, embedder=use.embed)
        result = run_adapt(bank, query, "builtin:east-asia", out, use, n=3, k=6, revise=False)
        assert len(server.records()) == requests, "every candidate has bank scores"

    assert result.outputs["retrieval"]["model_id"] == summary.outputs["model_id"]
    assert result.counts["candidates"] == min(6, built.counts["bank:kept"])
    candidates = pq.read_table(out / "candidates.parquet")
    assert candidates[KEY].to_pylist() == expected[KEY].to_pylist()
    assert candidates["similarity"].to_pylist() == pytest.approx(expected["score"].to_pylist())
    bank_scores = {r[KEY]: r for r in read_group(bank, "scores").to_pylist()}
    for row in candidates.to_pylist():
        assert row["trait_source"] == "bank"
        assert [row[t] for t in TRAITS] == [bank_scores[row[KEY]][t] for t in TRAITS]
    assert pq.read_table(out / "personas.parquet").num_rows == 3


# ------------------------------------------------------------------------------ pieces


@settings(max_examples=60, deadline=None)
@given(st.integers(3, 200), st.floats(0.01, 0.9), st.integers(0, 5))
def test_split_is_seeded_disjoint_and_complete(n, heldout, seed):
    ids = [f"p{i}" for i in range(n)]
    train, held = split_personas(list(reversed(ids)), heldout, seed)
    assert sorted(train + held) == sorted(ids) and not set(train) & set(held)
    assert len(held) >= 1 and len(train) >= 2
    assert (train, held) == split_personas(ids, heldout, seed)


@settings(max_examples=100, deadline=None)
@given(
    st.integers(1, 6),
    st.integers(1, 12),
    st.integers(0, 3),
    st.floats(0.3, 1.0),
    st.floats(0.5, 1.0),
    st.integers(0, 10_000),
)
def test_filter_negatives_keeps_the_hardest_allowed(q, p, count, fn_max, margin, seed):
    rng = np.random.default_rng(seed)
    scores = -np.sort(-rng.uniform(-1, 1, size=(q, p)), axis=1)
    rows = rng.integers(-1, 20, size=(q, p))
    positives = rng.integers(0, 20, size=q)
    to_positive = rng.uniform(-1, 1, size=(q, p))
    positive_scores = rng.uniform(-1, 1, size=q)
    picked, dropped = filter_negatives(
        scores, rows, positives, to_positive, positive_scores, count, fn_max, margin
    )
    assert picked.shape == (q, count)
    for i in range(q):
        ok = [
            rows[i, j]
            for j in range(p)
            if rows[i, j] >= 0
            and rows[i, j] != positives[i]
            and to_positive[i, j] <= fn_max
            and scores[i, j] <= margin * positive_scores[i]
        ]
        expected = ok[:count] + [-1] * (count - len(ok[:count]))
        assert picked[i].tolist() == expected
        assert positives[i] not in picked[i]
    assert not (dropped & (rows < 0)).any()


def test_queries_answer_is_cleaned_and_needs_enough():
    answer = parse_answer(
        json.dumps(
            {
                "queries": [
                    '  "retired teacher  in Wales" ',
                    "retired teacher in Wales",
                    "x",
                    "a b c",
                ]
            }
        ),
        PersonaQueries,
        {"n": 2},
    )
    assert answer.queries == ["retired teacher in Wales", "a b c"]
    few = parse_answer(json.dumps({"queries": ["nurse in Osaka", "x"]}), PersonaQueries, {"n": 3})
    assert few.queries == ["nurse in Osaka"]  # fewer than asked, but usable
    with pytest.raises(OutputError, match="no usable query"):
        parse_answer(json.dumps({"queries": ['"]\n{', "one", "w " * 31]}), PersonaQueries, {"n": 2})
    schema = queries_schema(4)
    assert (
        schema["properties"]["queries"]["minItems"]
        == 4
        == schema["properties"]["queries"]["maxItems"]
    )


def test_a_trained_folder_gets_its_own_model_id(tmp_path):
    base = resolve_model("all-MiniLM-L6-v2")
    copy = tmp_path / "persona-model"
    import shutil

    shutil.copytree(base.path, copy)
    same = resolve_model(str(copy))
    assert same.fingerprint == base.fingerprint  # same bytes, same space
    assert same.model_id("torch").startswith("persona-model@")
    (copy / "training.json").write_text("{}")
    assert resolve_model(str(copy)).fingerprint != base.fingerprint
