"""Persona retrieval: the sentence embedder, the FAISS index (build, load, filtered search),
retrieval statistics, and contrastive fine-tuning of the embedder. No Ray and no configuration:
sharded index builds take a `map_shards` function, which `personagen.runtime` maps onto Ray."""
