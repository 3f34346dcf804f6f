"""The embed stage: text building, failure isolation, and the real Ray actor-pool run."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from synthetic import persona_table

from personagen.commands.embed import embed
from personagen.config import Config, EmbedConfig
from personagen.errors import PersonagenError
from personagen.index.embedder import load_embedder
from personagen.io.bank import (
    read_failures,
    read_group,
    read_manifest,
    update_manifest,
    write_group,
)
from personagen.runtime.embed import actor_layout
from personagen.stages.embed import embed_rows, persona_text, split_embedded


def test_persona_text_modes():
    attributes = {"age_range": "25-34", "location": "Osaka", "interests": ["go", "jazz"]}
    assert persona_text("  Aiko teaches.  ", attributes, "narrative") == "Aiko teaches."
    text = persona_text("Aiko teaches.", attributes, "attributes+narrative")
    assert text == "Age: 25-34. Location: Osaka. Interests: go, jazz.\nAiko teaches."
    assert persona_text("Aiko teaches.", None, "attributes+narrative") == "Aiko teaches."
    assert persona_text(None, attributes, "attributes+narrative") == ""


class FlakyEmbedder:
    """Fault injection: the real model, except for texts that raise or give a broken vector."""

    def __init__(self, real):
        self.real, self.dim, self.model_id = real, real.dim, real.model_id

    def encode(self, texts):
        if any("BOOM" in t for t in texts):
            raise RuntimeError("injected failure")
        vectors = self.real.encode(texts)
        vectors[[i for i, t in enumerate(texts) if "NAN" in t]] = np.nan
        return vectors

    def too_long(self, texts):
        return self.real.too_long(texts)


@pytest.fixture(scope="module")
def embedder():
    return load_embedder(EmbedConfig(), threads=1)


def test_a_bad_row_fails_alone_and_the_sink_counts_it(embedder):
    texts = ["a calm gardener", "BOOM", "a loud drummer", "NAN here", "a baker"]
    batch = pa.table({"persona_id": [f"p{i}" for i in range(5)], "text": texts})
    out = embed_rows(batch, FlakyEmbedder(embedder))
    errors = out.column("error").to_pylist()
    assert errors[0] is None and errors[2] is None and errors[4] is None
    assert "injected failure" in errors[1] and "bad vector" in errors[3]
    routed, counts, records = split_embedded(out)
    rows = routed["embeddings"]
    assert counts["embedded"] == 3 and counts["failed"] == 2
    assert [r["persona_id"] for r in records] == ["p1", "p3"]
    assert rows.schema.field("embedding").type == pa.list_(pa.float32(), 384)
    good = np.stack(rows.column("embedding").to_numpy(zero_copy_only=False))
    np.testing.assert_allclose(good, embedder.encode([texts[0], texts[2], texts[4]]), atol=1e-5)


def _vectors(bank) -> dict[str, np.ndarray]:
    table = read_group(bank, "embeddings")
    return dict(
        zip(
            table.column("persona_id").to_pylist(),
            table.column("embedding").to_numpy(zero_copy_only=False),
            strict=True,
        )
    )


@pytest.mark.slow
def test_embed_stage_on_ray_is_complete_resumable_and_deterministic(ray_local, tmp_path, embedder):
    bank = tmp_path / "bank"
    personas = persona_table(45, empty_every=10)
    write_group(bank, "personas", personas)
    # an earlier, interrupted run embedded the first five personas
    earlier = embed_rows(
        pa.table({"persona_id": personas["persona_id"][:5], "text": personas["narrative"][:5]}),
        embedder,
    )
    write_group(bank, "embeddings", earlier.drop_columns(["error", "truncated"]))
    update_manifest(bank, embed=embedder.describe() | {"text": "narrative"})
    before = _vectors(bank)
    cfg = Config()
    cfg.embed.batch_size = 8

    first = embed(cfg, bank)
    c = first.counts
    assert (c["personas"], c["already_embedded"], c["embedded"]) == (45, 5, 36)
    assert (c["failed"], c["failed_empty"]) == (4, 4)
    vectors = _vectors(bank)
    assert len(vectors) == 41
    for pid, vector in before.items():
        np.testing.assert_array_equal(vectors[pid], vector)  # not redone
    stacked = np.stack(list(vectors.values()))
    assert stacked.shape == (41, 384) and stacked.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(stacked, axis=1), 1.0, atol=1e-5)
    failures = read_failures(bank, "embed")
    assert sorted(failures.column("input_id").to_pylist()) == sorted(
        f"u{i}/0" for i in (9, 19, 29, 39)
    )
    # deterministic: the stage's vectors are the model's vectors of the narratives, whatever
    # the batching and the actor that computed them
    rows = [r for r in personas.to_pylist() if r["narrative"].strip()]
    direct = embedder.encode([r["narrative"] for r in rows])
    for row, vector in zip(rows, direct, strict=True):
        np.testing.assert_allclose(vectors[row["persona_id"]], vector, atol=1e-5)
    manifest = read_manifest(bank)["embed"]
    assert manifest["model_id"] == embedder.model_id and manifest["dim"] == 384
    assert manifest["normalized"] is True and manifest["text"] == "narrative"

    # resumed again: nothing left to do, recorded failures are not retried
    again = embed(cfg, bank)
    assert again.counts["embedded"] == 0 and again.counts["already_embedded"] == 41
    assert again.counts["skipped_failed"] == 4

    # vectors of another model (here: the int8 ONNX variant) may not be mixed in
    cfg_other = Config()
    cfg_other.embed.backend = "onnx-int8"
    with pytest.raises(PersonagenError, match="--replace"):
        embed(cfg_other, bank)


def test_replace_drops_embeddings_and_index_and_retries_failures(tmp_path):
    bank = tmp_path / "bank"
    write_group(bank, "personas", persona_table(4, empty_every=1))  # nothing to embed
    (bank / "embeddings").mkdir()
    (bank / "index").mkdir()
    first = embed(Config(), bank)
    assert first.counts["failed_empty"] == 4
    assert embed(Config(), bank).counts["skipped_failed"] == 4
    replaced = embed(Config(), bank, replace=True)
    assert replaced.counts["failed_empty"] == 4 and replaced.counts["skipped_failed"] == 0
    assert not (bank / "embeddings").exists() and not (bank / "index").exists()


def test_embed_needs_personas(tmp_path):
    with pytest.raises(PersonagenError, match="no personas"):
        embed(Config(), tmp_path)


def test_actor_layout():
    assert actor_layout(EmbedConfig(), cpus=2, gpus=0) == (2, 1, 0)
    assert actor_layout(EmbedConfig(threads=2), cpus=2, gpus=0) == (1, 2, 0)
    assert actor_layout(EmbedConfig(threads=4, actors=3), cpus=2, gpus=0) == (3, 2, 0)
    assert actor_layout(EmbedConfig(device="cuda"), cpus=16, gpus=2) == (2, 1, 1)
    with pytest.raises(PersonagenError, match="no GPU"):
        actor_layout(EmbedConfig(device="cuda"), cpus=16, gpus=0)


def test_a_bank_keeps_one_text_mode(tmp_path):
    bank = tmp_path / "bank"
    write_group(bank, "personas", persona_table(3))
    cfg = Config()
    embedder = load_embedder(cfg.embed, threads=1)
    rows = embed_rows(
        pa.table({"persona_id": ["u0/0"], "text": ["a nurse"]}), embedder
    ).drop_columns(["error", "truncated"])
    write_group(bank, "embeddings", rows)
    update_manifest(bank, embed=embedder.describe() | {"text": "narrative"})
    cfg.embed.text = "attributes+narrative"
    with pytest.raises(PersonagenError, match=r"embed\.text=narrative"):
        embed(cfg, bank)
