"""`personagen score --mode embedding` and `--surrogate` on the known-answer set: the zero-shot
scorer without any LLM, and a surrogate that LLM-scores 10% (a stub whose answers follow the
designed levels) and predicts the rest, with the bank's vectors used where it has them."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
from click.testing import CliRunner
from llm_test_server import LLMTestServer
from synthetic import stub_llm_sets
from test_validate_scorer import designed_logprobs

from personagen import TRAITS
from personagen.cli import cli
from personagen.commands.score_embedding import narrative_vectors
from personagen.commands.validate_scorer import bank_personas
from personagen.config import load_config
from personagen.evaluate.validity import spearman
from personagen.index.embedder import load_embedder
from personagen.io.bank import (
    KEY,
    NO_PERSONA_ORIGIN,
    Bank,
    read_group,
    read_manifest,
    write_group,
)
from personagen.psychometrics.known_answer import known_answer_set

PERSONAS, DESIGN = known_answer_set()
IDS = PERSONAS.column(KEY).to_pylist()


@pytest.fixture(scope="module")
def vectors():
    """The known-answer narratives' MiniLM vectors and the model id (encoded once)."""
    embedder = load_embedder(load_config().embed)
    return embedder.encode(PERSONAS.column("narrative").to_pylist()), embedder


def known_answer_bank(path, vectors, embedder, rows: slice) -> Bank:
    """A bank of the known-answer personas whose `rows` are already embedded."""
    bank = Bank(path)
    bank.write("personas", bank_personas(PERSONAS, pa.array([], pa.string())))
    ids = IDS[rows]
    write_group(
        path,
        "embeddings",
        pa.table(
            {
                KEY: ids,
                "embedding": pa.FixedSizeListArray.from_arrays(
                    pa.array(vectors[rows].ravel(), pa.float32()), embedder.dim
                ),
                "embed_model": [embedder.model_id] * len(ids),
            }
        ),
    )
    return bank


def traits_by_id(bank) -> tuple[list[dict], np.ndarray, np.ndarray]:
    """(the scores rows in the known-answer order, their traits, the designed levels)."""
    rows = {r[KEY]: r for r in read_group(bank, "scores").to_pylist()}
    ordered = [rows[i] for i in IDS if i in rows]
    design = DESIGN[[IDS.index(r[KEY]) for r in ordered]]
    return ordered, np.array([[r[t] for t in TRAITS] for r in ordered], float), design


@pytest.mark.slow
def test_zero_shot_scores_follow_the_design_without_an_llm(tmp_path, vectors):
    encoded, embedder = vectors
    bank = known_answer_bank(tmp_path / "bank", encoded, embedder, slice(0, 100))
    stored, from_bank = narrative_vectors(bank, load_config().embed, IDS, embedder)
    assert from_bank == 100 and np.allclose(stored, encoded, atol=1e-5)

    # no llm.base_url and no server: the embedded LLM would take minutes to start
    result = CliRunner().invoke(cli, ["score", str(bank.path), "--mode", "embedding"])
    assert result.exit_code == 0, result.output
    assert "zero-shot from embeddings (no LLM)" in result.output
    counts = json.loads((bank.path / "summary-score.json").read_text())["counts"]
    assert counts["score:in"] == counts["score:out"] == counts["score:predicted"] == 200
    assert counts.get("score:requests", 0) == 0 and counts["bank:mode:embedding"] == 200
    rows, traits, design = traits_by_id(bank.path)
    assert {r["answer_mode"] for r in rows} == {"embedding"}
    assert all(r["score_flags"] == ["predicted"] for r in rows)
    assert all(r["item_ids"] is None and r["trait_interval"] is None for r in rows)
    assert {r["score_model"] for r in rows} == {embedder.model_id}
    assert np.all((traits >= 1) & (traits <= 5))
    assert traits.mean(axis=0) == pytest.approx([3] * 5, abs=0.05)  # set, not measured
    r = [spearman(design[:, j], traits[:, j]) for j in range(5)]
    print("zero-shot Spearman r per trait:", np.round(r, 3))
    assert min(r) > 0 and np.mean(r) > 0.15
    manifest = read_manifest(bank.path)["score"]
    assert manifest["answer_mode"] == "embedding"
    assert manifest["embedding"]["standardised_over"] == 200
    assert manifest["embedding"]["vectors_from_bank"] == 100  # the other 100 encoded

    again = CliRunner().invoke(cli, ["score", str(bank.path), "--mode", "embedding"])
    assert again.exit_code == 0, again.output
    counts = json.loads((bank.path / "summary-score.json").read_text())["counts"]
    assert counts["score:skipped_done"] == 200 and counts.get("score:in", 0) == 0


@pytest.mark.slow
def test_a_surrogate_at_ten_percent_predicts_the_rest_with_intervals(ray_local, tmp_path, vectors):
    encoded, embedder = vectors
    bank = known_answer_bank(tmp_path / "bank", encoded, embedder, slice(0, 200))
    with LLMTestServer(logprobs=designed_logprobs) as server:
        sets = [*stub_llm_sets(server), "seed=7", "progress_s=60"]
        args = ["score", str(bank.path), "--surrogate", "0.1"]
        result = CliRunner().invoke(cli, [*args, *[a for s in sets for a in ("--set", s)]])
        assert result.exit_code == 0, result.output
        asked = len(server.records())
        counts = json.loads((bank.path / "summary-score.json").read_text())["counts"]
        # the mode probe and 20 personas' items (no structured-output probe: none is asked for)
        assert counts["score:requests"] == 1 + 20 * 50 == asked

        again = CliRunner().invoke(cli, [*args, *[a for s in sets for a in ("--set", s)]])
        assert again.exit_code == 0, again.output
        assert len(server.records()) == asked, "a finished bank was asked again"
    print(result.output)
    assert "held-out agreement" in result.output and "avoided" in result.output
    assert counts["score:in"] == counts["score:out"] == 200 and counts["score:predicted"] == 180
    assert counts["bank:mode:logprob"] == 20 and counts["bank:mode:surrogate"] == 180

    rows, traits, design = traits_by_id(bank.path)
    predicted = np.array([r["answer_mode"] == "surrogate" for r in rows])
    answered = traits[~predicted]
    assert answered == pytest.approx(0.75 * design[~predicted] + 0.75)  # the stub's answers
    assert all(r["score_flags"] == ["predicted"] for r in rows if r["answer_mode"] == "surrogate")
    intervals = [r["trait_interval"] for r in rows if r["trait_interval"] is not None]
    low = np.array([[i[f"{t}_low"] for t in TRAITS] for i in intervals])
    high = np.array([[i[f"{t}_high"] for t in TRAITS] for i in intervals])
    assert len(intervals) == 180 and np.all((low >= 1) & (low <= high) & (high <= 5))
    # what an LLM that follows the design would have answered: inside the 90% intervals?
    truth = 0.75 * design[predicted] + 0.75
    coverage = float(np.mean((low <= truth) & (truth <= high)))
    r = [spearman(design[predicted, j], traits[predicted, j]) for j in range(5)]
    print("surrogate at 10%: Spearman r per trait", np.round(r, 3), "coverage", coverage)
    assert np.mean(r) > 0.1 and coverage > 0.75

    report = read_manifest(bank.path)["score"]["surrogate"]
    assert (report["llm_scored"], report["predicted"], report["fraction"]) == (20, 180, 0.1)
    assert report["requests_avoided"] == round(180 * (1 + 20 * 50) / 20)
    assert report["tokens_avoided"] > 0 and report["level"] == 0.9
    assert report["vectors_from_bank"] == 200
    for trait in TRAITS:
        row = report["traits"][trait]
        assert row["n"] == 20 and 0 <= row["coverage"] <= 1 and row["alpha"] > 0
        assert row["zero_shot_weight"] in (0.0, 0.1, 0.3, 1.0, 3.0)


def test_the_embedding_scorers_refuse_what_they_cannot_do(tmp_path):
    bank = Bank(tmp_path / "bank")
    bank.write("personas", bank_personas(PERSONAS.slice(0, 3), pa.array([], pa.string())))
    runner = CliRunner()
    both = runner.invoke(
        cli, ["score", str(bank.path), "--mode", "embedding", "--surrogate", "0.5"]
    )
    assert both.exit_code == 2 and "learns from LLM scores" in both.output
    bad = runner.invoke(cli, ["score", str(bank.path), "--surrogate", "1.5"])
    assert bad.exit_code == 2 and "1.5" in bad.output
    bank.update_manifest(origin=NO_PERSONA_ORIGIN, baseline={"temperature": 1.0})
    bare = runner.invoke(cli, ["score", str(bank.path), "--mode", "embedding"])
    assert bare.exit_code == 2 and "no narratives to embed" in bare.output
