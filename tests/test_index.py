"""The FAISS index: build, save, memory-mapped load, search, filters, sharded builds."""

from __future__ import annotations

import faiss
import numpy as np
import pyarrow as pa
import pytest
from synthetic import clustered_vectors, vector_bank

from personagen.commands.index import index
from personagen.config import Config
from personagen.errors import PersonagenError
from personagen.index.build import choose_kind, ivf_nlist, plan_rows, read_vectors
from personagen.index.options import IndexOptions
from personagen.index.search import load_index, search, search_rows
from personagen.io.bank import embedding_type, read_group, read_manifest, write_group

DIM = 32


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A 3,000-persona bank in 5 part files, its vectors (by persona number), and queries."""
    bank = tmp_path_factory.mktemp("index") / "bank"
    vectors = clustered_vectors(3000, DIM, seed=0)
    vector_bank(bank, vectors, parts=5)
    return bank, vectors, clustered_vectors(40, DIM, seed=1)


def config(**index) -> Config:
    cfg = Config()
    for key, value in index.items():
        setattr(cfg.index, key, value)
    return cfg


def numbers(bi) -> np.ndarray:
    """Persona number (u{i}/0 -> i) of each index row."""
    return np.array([int(p[1:].split("/")[0]) for p in bi.ids.to_pylist()])


def exact(vectors, queries, k, allowed=None):
    """Brute-force numpy reference: (scores, persona numbers)."""
    scores = queries @ vectors.T
    if allowed is not None:
        scores[:, ~allowed] = -np.inf
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, top, axis=1), top


def recall(found, truth) -> float:
    return float(
        np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth, strict=True)])
    )


def test_kind_by_size_and_nlist():
    cfg = IndexOptions(flat_max=10, hnsw_max=100)
    assert [choose_kind(n, cfg) for n in (10, 11, 100, 101)] == ["flat", "hnsw", "hnsw", "ivfpq"]
    assert choose_kind(5, IndexOptions(type="ivfpq")) == "ivfpq"
    assert ivf_nlist(1_000_000, IndexOptions()) == 2048  # 100k training vectors / 39
    assert ivf_nlist(1_000_000, IndexOptions(train_size=200_000)) == 4096
    assert ivf_nlist(3000, IndexOptions()) == 64
    assert ivf_nlist(100, IndexOptions()) == 2


def test_rows_follow_the_bank_reading_rules(tmp_path):
    bank = tmp_path / "bank"
    vectors = clustered_vectors(50, DIM)
    vector_bank(bank, vectors, parts=2)
    newer = clustered_vectors(10, DIM, seed=7)
    write_group(
        bank,
        "embeddings",
        pa.table(
            {
                "persona_id": [f"u{i}/0" for i in range(10)],
                "embedding": pa.FixedSizeListArray.from_arrays(
                    pa.array(newer.reshape(-1)), DIM
                ).cast(embedding_type(DIM)),
                "embed_model": ["synthetic@000000000000"] * 10,
            }
        ),
    )
    plan = plan_rows(bank)
    group = read_group(bank, "embeddings")
    assert plan.n == 50 and plan.ids.to_pylist() == group.column("persona_id").to_pylist()
    got = read_vectors(plan.files, plan.rows, plan.dim)
    np.testing.assert_array_equal(got, np.stack(group.column("embedding").to_numpy(False)))


def test_flat_is_exact_and_mmap_loads_the_same(data):
    bank, vectors, queries = data
    info = index(config(), bank)
    assert info["kind"] == "flat" and info["n"] == 3000 and info["dim"] == DIM
    assert read_manifest(bank)["index"]["kind"] == "flat"
    for mmap in (True, False):
        bi = load_index(bank, mmap=mmap)
        scores, rows = search_rows(bi, queries, 10, None, IndexOptions())
        ref_scores, ref = exact(vectors, queries, 10)
        np.testing.assert_array_equal(numbers(bi)[rows], ref)
        np.testing.assert_allclose(scores, ref_scores, atol=1e-5)


@pytest.mark.parametrize(
    ("kind", "extra"), [("hnsw", {}), ("ivfpq", {"pq_m": 8}), ("ivfpq", {"pq_m": 8, "refine": 0})]
)
def test_approximate_kinds_recall_against_exact(data, kind, extra):
    bank, vectors, queries = data
    cfg = config(type=kind, **extra)
    index(cfg, bank)
    bi = load_index(bank)
    assert bi.kind == kind
    _, rows = search_rows(bi, queries, 10, None, cfg.index)
    _, ref = exact(vectors, queries, 10)
    assert recall(numbers(bi)[rows], ref) >= (0.9 if extra.get("refine", 8) else 0.6)


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivfpq"])
@pytest.mark.parametrize("exact_filter_max", [0, 100_000])
def test_filtered_search_keeps_only_allowed_rows(data, kind, exact_filter_max):
    bank, vectors, queries = data
    cfg = config(type=kind, pq_m=8, exact_filter_max=exact_filter_max)
    index(cfg, bank)
    bi = load_index(bank)
    allowed = np.zeros(len(vectors), bool)
    allowed[np.random.default_rng(3).choice(len(vectors), 300, replace=False)] = True
    scores, rows = search_rows(bi, queries, 10, allowed[numbers(bi)], cfg.index)
    got = numbers(bi)[rows]
    assert allowed[got].all()
    ref_scores, ref = exact(vectors, queries, 10, allowed)
    if kind == "flat" or exact_filter_max:
        np.testing.assert_array_equal(got, ref)
        np.testing.assert_allclose(scores, ref_scores, atol=1e-5)
    else:
        assert recall(got, ref) >= 0.9


def test_filters_on_bank_columns_through_the_api(data):
    bank, vectors, queries = data
    index(config(), bank)
    results = search(
        bank,
        queries[:3],
        5,
        filters=["attributes.gender=male", "attributes.age_range=65+"],
        columns=["attributes"],
    )
    assert results.column_names == ["query", "rank", "persona_id", "score", "attributes"]
    assert results.num_rows == 15
    for attributes in results.column("attributes").to_pylist():
        assert attributes["gender"] == "male" and attributes["age_range"] == "65+"
    allowed = np.arange(len(vectors)) % 4 == 3
    _, ref = exact(vectors, queries[:3], 5, allowed)
    got = [int(p[1:].split("/")[0]) for p in results.column("persona_id").to_pylist()]
    assert got == ref.reshape(-1).tolist()
    nothing = search(bank, queries[:2], 5, filters={"attributes.gender": "other"})
    assert nothing.num_rows == 0


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kind", "extra"),
    [("flat", {}), ("ivfpq", {"pq_m": 8}), ("ivfpq", {"pq_m": 8, "ondisk": True})],
)
def test_sharded_build_equals_single_build(ray_local, data, kind, extra):
    bank, _, queries = data
    single = config(type=kind, **extra, shards=1)
    if extra.get("ondisk"):
        single.index.ondisk = False
    index(single, bank)
    one = load_index(bank)
    expected = search_rows(one, queries, 10, None, single.index)
    sharded = config(type=kind, **extra, shards=3)
    info = index(sharded, bank)
    assert info["shards"] == 3
    many = load_index(bank)
    assert many.ids.to_pylist() == one.ids.to_pylist()
    got = search_rows(many, queries, 10, None, sharded.index)
    np.testing.assert_array_equal(got[1], expected[1])
    np.testing.assert_allclose(got[0], expected[0], atol=1e-6)
    assert not list(bank.glob(".index*")), "staging folders are cleaned up"


def test_errors_are_clear(tmp_path, data):
    bank, _, queries = data
    with pytest.raises(PersonagenError, match="no embeddings"):
        index(Config(), tmp_path)
    with pytest.raises(PersonagenError, match="no index"):
        load_index(tmp_path)
    with pytest.raises(PersonagenError, match="must divide"):
        index(config(type="ivfpq", pq_m=5), bank)
    index(config(), bank)
    with pytest.raises(PersonagenError, match="dimensions"):
        search(bank, np.ones((1, DIM + 1), np.float32), 3)
    with pytest.raises(PersonagenError, match="no column"):
        search(bank, queries[:1], 3, filters=["nope=1"])


def test_query_vectors_are_normalised(data):
    bank, _, queries = data
    index(config(), bank)
    plain = search(bank, queries[:2], 5)
    scaled = search(bank, queries[:2] * 7.5, 5)
    assert plain.column("persona_id").to_pylist() == scaled.column("persona_id").to_pylist()
    np.testing.assert_allclose(plain.column("score"), scaled.column("score"), atol=1e-5)
    assert load_index(bank).index.metric_type == faiss.METRIC_INNER_PRODUCT


def test_flat_filter_falls_back_when_overfetch_finds_too_few(data):
    bank, vectors, queries = data
    cfg = config(type="flat", exact_filter_max=0)
    index(cfg, bank)
    bi = load_index(bank)
    # allowed: the 10% of personas least similar to the first query
    allowed = np.zeros(len(vectors), bool)
    allowed[np.argsort(vectors @ queries[0])[: len(vectors) // 10]] = True
    scores, rows = search_rows(bi, queries[:3], 10, allowed[numbers(bi)], cfg.index)
    ref_scores, ref = exact(vectors, queries[:3], 10, allowed)
    np.testing.assert_array_equal(numbers(bi)[rows], ref)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-5)
