"""The options of the index package: the embedder, the FAISS index, the embedder's training.

Kept apart from the code that reads them, so that the configuration imports no model library."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from personagen.options import Options


class IndexOptions(Options):
    """The FAISS index over persona embeddings (stage `index`, `search`)."""

    type: Literal["auto", "flat", "hnsw", "ivfpq"] = Field(
        "auto", description="auto picks by size: flat <= flat_max < hnsw <= hnsw_max < ivfpq"
    )
    flat_max: int = Field(200_000, ge=0, description="auto: exact search up to this many vectors")
    hnsw_max: int = Field(
        5_000_000, ge=0, description="auto: HNSW up to this many vectors, IVF-PQ beyond"
    )
    hnsw_m: int = Field(32, ge=4, description="HNSW graph degree")
    hnsw_ef_construction: int = Field(64, ge=8)
    hnsw_ef_search: int = Field(192, ge=1, description="HNSW candidate list at query time")
    ivf_nlist: int | None = Field(
        None,
        ge=1,
        description="IVF lists; unset = about 4 * sqrt(n), at most train_size / 39",
    )
    ivf_nprobe: int = Field(32, ge=1, description="IVF lists visited per query")
    pq_m: int = Field(48, ge=1, description="PQ sub-quantizers (bytes per vector at 8 bits)")
    refine: int = Field(
        16, ge=0, description="IVF-PQ: re-rank k*refine candidates with exact vectors (0 = off)"
    )
    train_size: int = Field(100_000, ge=1000, description="vectors sampled to train IVF-PQ")
    shards: int | None = Field(
        None,
        ge=1,
        description="flat/IVF-PQ build shards on Ray workers; unset = 1 below "
        "shard_min vectors, else the cluster's CPUs",
    )
    shard_min: int = Field(1_000_000, ge=1)
    ondisk: bool = Field(
        False, description="IVF-PQ: merge shards into an on-disk inverted-list file"
    )
    exact_filter_max: int = Field(
        20_000, ge=0, description="filters leaving at most this many personas: exact search"
    )


class EmbedderOptions(Options):
    """Which sentence-embedding model, and how it runs."""

    model: str = Field(
        "all-MiniLM-L6-v2",
        description="sentence-transformers model: the packaged default, a local folder (e.g. a "
        "fine-tuned model), or a model name already in the local Hugging Face cache",
    )
    backend: Literal["torch", "onnx", "onnx-int8"] = Field(
        "torch",
        description="torch, or ONNX Runtime (fp32 or dynamic int8; needs the `onnx` extra); "
        "see benchmarks/RESULTS.md for speed and retrieval quality",
    )
    device: str = Field("cpu", description="torch device for backend=torch: cpu, cuda, cuda:1")
    encode_batch_size: int = Field(32, ge=1, description="texts per forward pass")
    max_seq_length: int | None = Field(
        None, ge=8, description="token limit per text; unset = the model's own"
    )
    cache_dir: str | None = Field(
        None, description="where ONNX exports are kept; unset = ~/.cache/personagen"
    )


class TrainingOptions(Options):
    """How the embedder is fine-tuned and evaluated."""

    max_personas: int | None = Field(
        None, ge=2, description="use a seeded sample of this many personas; unset = all"
    )
    heldout: float = Field(0.2, gt=0, lt=1, description="share of personas held out (by persona)")
    negatives: int = Field(1, ge=0, description="hard negatives per (query, persona) pair")
    negative_pool: int = Field(30, ge=1, description="top-k retrieved per query to mine from")
    false_negative_max: float = Field(
        0.9,
        gt=-1,
        le=1,
        description="drop a candidate negative whose cosine to the positive persona is above",
    )
    relative_margin: float = Field(
        0.95,
        gt=0,
        le=1,
        description="drop a candidate negative scoring above this x the positive's score",
    )
    loss: Literal["mnrl", "cached-mnrl", "gist"] = Field(
        "mnrl",
        description="MultipleNegativesRankingLoss, its cached (large-batch) form, or GISTEmbed "
        "guided by the frozen base model",
    )
    mini_batch_size: int = Field(16, ge=1, description="cached-mnrl: texts per forward pass")
    epochs: float = Field(1.0, gt=0)
    max_steps: int | None = Field(None, ge=1, description="stop after this many steps")
    batch_size: int = Field(32, ge=2, description="pairs per step (in-batch negatives)")
    learning_rate: float = Field(2e-5, gt=0)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    eval_corpus_max: int = Field(
        20_000,
        ge=10,
        description="evaluation corpus: held-out personas plus a seeded sample up to this size",
    )
    threads: int | None = Field(None, ge=1, description="torch threads; unset = torch's default")


# ------------------------------------------------------------------------------ pieces
