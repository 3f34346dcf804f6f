"""Small synthetic histories and persona banks for the tests (real formats, made-up content)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from personagen.io.bank import embedding_type, update_manifest, write_group
from personagen.io.histories import HISTORY_COLUMNS

OCCUPATIONS = ["nurse", "teacher", "software engineer", "farmer", "chef", "retired postman"]
PLACES = ["Manila", "rural Ohio", "Berlin", "Osaka", "Lagos", "Toronto", "a village in Wales"]
HOBBIES = ["hiking", "reading", "gaming", "cooking", "gardening"]


def write_mined(bank: Path, narratives: dict[str, str]) -> None:
    """The bank's `personas` group for these narratives, as a miner would have written it."""
    ids = list(narratives)
    n = len(ids)
    table = pa.table(
        {
            "persona_id": ids,
            "user_id": [i.split("/")[0] for i in ids],
            "window_id": pa.array([0] * n, pa.int32()),
            "narrative": list(narratives.values()),
            "attributes": pa.nulls(n),
            "source_meta": ["{}"] * n,
            "model": ["miner"] * n,
            "prompt_version": ["mine-x"] * n,
        }
    )
    write_group(bank, "personas", table)


def stub_llm_sets(server) -> list[str]:
    """`--set` values for a run against a local stub LLM server, on a small local Ray."""
    return [
        f"llm.base_url={server.base_url}",
        "llm.timeout_s=5",
        "llm.backoff_s=0.01",
        "llm.concurrency=16",
        "ray.num_cpus=2",
        "ray.object_store_mb=512",
    ]


def persona_table(n: int, start: int = 0, empty_every: int = 0) -> pa.Table:
    """`personas` rows with varied narratives and attributes; every `empty_every`-th is empty."""
    rows = []
    for i in range(start, start + n):
        job, place = OCCUPATIONS[i % len(OCCUPATIONS)], PLACES[(i // 2) % len(PLACES)]
        hobby = HOBBIES[i % len(HOBBIES)]
        narrative = (
            f"Persona {i} works as a {job} in {place}. In spare time they love {hobby}, "
            f"and friends describe them as {'quiet' if i % 3 else 'outgoing'}."
        )
        if empty_every and i % empty_every == empty_every - 1:
            narrative = "  "
        rows.append(
            {
                "persona_id": f"u{i}/0",
                "user_id": f"u{i}",
                "window_id": 0,
                "narrative": narrative,
                "attributes": {
                    "age_range": ["18-24", "25-34", "35-44", "65+"][i % 4],
                    "gender": ["female", "male"][i % 2],
                    "occupation": job,
                    "location": place,
                    "interests": [hobby, "music"],
                    "values": ["family"],
                },
                "source_meta": "{}",
                "model": "test",
                "prompt_version": "v0",
            }
        )
    return pa.Table.from_pylist(rows)


def clustered_vectors(
    n: int, dim: int, seed: int = 0, clusters: int = 20, spread: float = 0.5
) -> np.ndarray:
    """Unit vectors around random cluster centres (closer to real embeddings than uniform)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    x = centres[rng.integers(0, clusters, n)] + rng.normal(size=(n, dim)) * spread
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32)


def vector_bank(bank: Path, vectors: np.ndarray, parts: int = 4) -> list[str]:
    """A bank with personas and precomputed embeddings in `parts` part files; returns the ids."""
    n, dim = vectors.shape
    ids = [f"u{i}/0" for i in range(n)]
    model_id = "synthetic@000000000000"
    for chunk in np.array_split(np.arange(n), parts):
        a, b = int(chunk[0]), int(chunk[-1]) + 1
        write_group(bank, "personas", persona_table(b - a, start=a))
        flat = pa.array(vectors[a:b].reshape(-1), pa.float32())
        write_group(
            bank,
            "embeddings",
            pa.table(
                {
                    "persona_id": ids[a:b],
                    "embedding": pa.FixedSizeListArray.from_arrays(flat, dim).cast(
                        embedding_type(dim)
                    ),
                    "embed_model": [model_id] * (b - a),
                }
            ),
        )
    update_manifest(bank, embed={"model": "synthetic", "model_id": model_id, "dim": dim})
    return ids


def embed_and_index(bank: Path) -> None:
    """Embed the bank's narratives with the packaged MiniLM in-process (no Ray actors: the fast
    tests skip the embed stage's start-up) and build its index."""
    from personagen.commands.index import index
    from personagen.config import EmbedConfig, load_config
    from personagen.index.embedder import load_embedder
    from personagen.io.bank import read_group

    personas = read_group(bank, "personas", ["persona_id", "narrative"])
    embedder = load_embedder(EmbedConfig(), threads=1)
    vectors = embedder.encode(personas.column("narrative").to_pylist())
    flat = pa.array(vectors.reshape(-1), pa.float32())
    write_group(
        bank,
        "embeddings",
        pa.table(
            {
                "persona_id": personas.column("persona_id"),
                "embedding": pa.FixedSizeListArray.from_arrays(flat, embedder.dim).cast(
                    embedding_type(embedder.dim)
                ),
                "embed_model": [embedder.model_id] * personas.num_rows,
            }
        ),
    )
    update_manifest(bank, embed=embedder.describe() | {"text": "narrative"})
    index(load_config(), bank)


def keywords(text: str) -> list[str]:
    """The distinct words of four letters or more that are not English stop words, in order."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    words = [w.lower() for w in re.findall(r"[A-Za-z]{4,}", text)]
    return [w for w in dict.fromkeys(words) if w not in ENGLISH_STOP_WORDS]


def keyword_queries(text: str, n: int) -> list[str]:
    """Query i: every n-th distinctive word of the persona from the i-th on, six of them (what
    the stub LLM answers; deterministic, and about the persona's own content)."""
    words = keywords(text)
    return [" ".join(words[i::n][:6]) for i in range(n)]


def query_writer(body: dict, rng: object) -> str:
    """A stub-server responder for query requests: `keyword_queries` of the persona (an answer
    that fails validation, even after a repair, for personas marked FAILQUERIES)."""
    content = next(m["content"] for m in body["messages"] if "<data>\n" in m["content"])
    persona = json.loads(content.split("<data>\n", 1)[1].split("\n</data>", 1)[0])["persona"]
    n = body["response_format"]["json_schema"]["schema"]["properties"]["queries"]["maxItems"]
    if "FAILQUERIES" in persona:
        return json.dumps({"queries": ["one"] * n})  # too short: invalid even after a repair
    return json.dumps({"queries": keyword_queries(persona, n)})


def write_histories(
    folder: Path, n: int, text=lambda i: f"Post of user {i}: tea and work."
) -> Path:
    """`n` one-window histories as `personagen ingest` writes them, in three part files."""
    out = folder / "histories"
    out.mkdir(parents=True)
    table = pa.table(
        {
            "history_id": [f"u{i:04d}/0" for i in range(n)],
            "user_id": [f"u{i:04d}" for i in range(n)],
            "window_id": [0] * n,
            "posts": [[{"date": "2,June,2004", "text": text(i)}] for i in range(n)],
            "n_posts": [1] * n,
            "n_tokens": [10] * n,
            "source": ["test"] * n,
        },
        schema=HISTORY_COLUMNS,
    ).append_column("gender", pa.array(["female", "male"] * (n // 2) + ["male"] * (n % 2)))
    for part, start in enumerate(range(0, n, n // 3 + 1)):
        pq.write_table(table.slice(start, n // 3 + 1), out / f"part-{part}.parquet")
    return folder


def write_scored_bank(
    bank: Path, n: int, unscored: int = 0, instrument: str = "ipip-50", seed: int = 0
) -> pa.Table:
    """A bank of `n` varied personas (`persona_table`), all but the last `unscored` scored on
    `instrument` with seeded traits around 3.3 (every tenth flagged `low_variance`), recorded
    in the manifest as built from the blog corpus; returns the scores written."""
    from personagen import TRAITS
    from personagen.io.bank import GROUPS

    write_group(bank, "personas", persona_table(n))
    ids = [f"u{i}/0" for i in range(n - unscored)]
    x = np.clip(np.random.default_rng(seed).normal(3.3, 0.6, (len(ids), len(TRAITS))), 1, 5)
    scores = {f.name: pa.nulls(len(ids), f.type) for f in GROUPS["scores"]}
    scores.update(
        {
            "persona_id": pa.array(ids),
            "instrument": pa.array([instrument] * len(ids)),
            "answer_mode": pa.array(["logprob"] * len(ids)),
            "score_model": pa.array(["scorer-1"] * len(ids)),
            "score_prompt_version": pa.array(["score-v1"] * len(ids)),
            "score_flags": pa.array(
                [["low_variance"] if i % 10 == 0 else [] for i in range(len(ids))],
                pa.list_(pa.string()),
            ),
            **{t: pa.array(x[:, j]) for j, t in enumerate(TRAITS)},
        }
    )
    table = pa.table(scores)
    write_group(bank, "scores", table)
    update_manifest(
        bank,
        build={"input": "/data/blogs", "format": "blogs-xml"},
        score={
            "model": "scorer-1",
            "endpoint": "http://llm:8000/v1",
            "temperature": 0.0,
            "seed": 0,
        },
    )
    return table
