"""Task-specific adaptation: persona embeddings, the FAISS index, retrieval."""
