"""personagen.api: the README's Python API example runs as written (a small synthetic bank,
offline), the verbs take their arguments in one order, and `score` runs through the API against
a test LLM server."""

from __future__ import annotations

import inspect
import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from llm_test_server import Faults, LLMTestServer
from synthetic import embed_and_index, stub_llm_sets, write_mined, write_scored_bank

from personagen import TRAITS, api
from personagen.errors import PersonagenError
from personagen.io.bank import KEY

README = Path(__file__).resolve().parents[1] / "README.md"
ORDER = ["bank", "personas", "path", "spec", "query", "reference", "n", "k", "to", "out"]
"""The order of the verbs' positional arguments: what they work on, then what with, then where."""


def readme_examples() -> list[str]:
    """The Python code blocks of the README's "Python API" section."""
    section = README.read_text(encoding="utf-8").split("\n## Python API\n", 1)[1]
    return re.findall(r"```python\n(.*?)```", section.split("\n## ", 1)[0], re.S)


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    """A folder with runs/bank: 60 personas, 55 scored, embedded and indexed; and its scores."""
    root = tmp_path_factory.mktemp("api")
    scores = write_scored_bank(root / "runs" / "bank", 60, unscored=5)
    embed_and_index(root / "runs" / "bank")
    return root, scores


def test_the_readme_example_runs(indexed, monkeypatch):
    root, scores = indexed
    monkeypatch.chdir(root)
    bank = Path("runs/bank")
    (example,) = readme_examples()
    namespace: dict = {}
    exec(compile(example, f"{README}: Python API", "exec"), namespace)

    assert namespace["bank"].path == bank.resolve()
    personas = namespace["personas"]
    assert personas.column(KEY).to_pylist() == scores.column(KEY).to_pylist()
    assert namespace["report"]["n_after"] == 55 and (Path("runs/eval/report.html")).is_file()
    aligned = namespace["aligned"]
    assert (aligned.counts["read"], aligned.counts["unscored"], aligned.counts["chosen"]) == (
        60,
        5,
        20,
    )
    chosen = pq.read_table("runs/east-asia/personas.parquet")
    ids = chosen.column(KEY).to_pylist()
    hits = namespace["hits"].to_pylist()
    openness = dict(
        zip(scores.column(KEY).to_pylist(), scores["openness"].to_pylist(), strict=True)
    )
    assert len(hits) == 3 and all(openness[h[KEY]] >= 3 for h in hits)
    assert "nurse" in hits[0]["narrative"] and "hiking" in hits[0]["narrative"]
    profiles = json.loads((namespace["profiles"] / "reddit_profiles.json").read_text())
    assert [p[KEY] for p in profiles] == ids

    import datasets

    dataset = datasets.load_from_disk(str(namespace["dataset"]))
    assert dataset[KEY] == ids
    assert [[row[t] for t in TRAITS] for row in dataset] == [
        [row[t] for t in TRAITS] for row in chosen.to_pylist()
    ]


def test_adapt_without_revision_runs_through_the_api(indexed, tmp_path):
    """Unrevised candidates keep their bank scores: retrieval and alignment, no LLM (the filter
    leaves out the unscored personas, which would be scored)."""
    root, scores = indexed
    cfg = api.load_config(overrides=["adapt.filters=[openness>=1]", "reference.builtin_rows=2000"])
    summary = api.adapt(
        root / "runs" / "bank", "retired farmer", "builtin:europe", tmp_path / "farmers",
        n=10, k=30, revise=False, cfg=cfg,
    )  # fmt: skip
    counts = summary.counts
    assert (counts["candidates"], counts["bank_scores_reused"], counts["chosen"]) == (30, 30, 10)
    chosen = api.read_set(tmp_path / "farmers")
    traits = {r[KEY]: [r[t] for t in TRAITS] for r in scores.to_pylist()}
    assert chosen.num_rows == 10
    assert all([r[t] for t in TRAITS] == traits[r[KEY]] for r in chosen.to_pylist())
    assert api.export(tmp_path / "farmers", "csv", tmp_path / "farmers.csv").is_file()


def test_every_verb_takes_its_arguments_in_one_order():
    verbs = [getattr(api, name) for name in api.__all__ if name not in ("Config", "load_config")]
    assert len(verbs) == 9
    for verb in verbs:
        params = inspect.signature(verb).parameters.values()
        positional = [p.name for p in params if p.kind is p.POSITIONAL_OR_KEYWORD]
        keywords = [p.name for p in params if p.kind is p.KEYWORD_ONLY]
        assert positional == sorted(positional, key=ORDER.index), verb.__name__
        assert "cfg" not in keywords or keywords[-1] == "cfg", verb.__name__


def test_a_set_is_a_path_a_table_or_a_dataframe(tmp_path):
    write_scored_bank(tmp_path / "bank", 30)
    rng = np.random.default_rng(2)
    y = np.clip(rng.normal(3.2, 0.6, (300, 5)), 1, 5)
    pq.write_table(pa.table({t: y[:, j] for j, t in enumerate(TRAITS)}), tmp_path / "ref.parquet")
    ref = api.reference(str(tmp_path / "ref.parquet"))
    table = api.read_set(tmp_path / "bank")
    energies = {
        api.evaluate(given, ref)["sets"]["after"]["metrics"]["energy"]
        for given in (tmp_path / "bank", table, table.to_pandas())
    }
    assert len(energies) == 1


def test_open_bank_refuses_a_folder_without_personas(tmp_path):
    with pytest.raises(PersonagenError, match="no persona bank at"):
        api.open_bank(tmp_path)


@pytest.mark.slow
def test_score_runs_through_the_api(ray_local, tmp_path):
    bank = tmp_path / "bank"
    narratives = {f"u{i}/0": f"Person {i} keeps bees and sings in a choir." for i in range(3)}
    write_mined(bank, narratives)
    with LLMTestServer(Faults(seed=5)) as server:
        cfg = api.load_config(overrides=stub_llm_sets(server))
        summary = api.score(bank, instrument="ipip-50", cfg=cfg)
    assert (summary.counts["score:in"], summary.counts["score:out"]) == (3, 3)
    scored = api.read_set(bank)
    assert sorted(scored.column(KEY).to_pylist()) == sorted(narratives)
    assert set(scored.column("instrument").to_pylist()) == {"ipip-50"}
