"""The LLM layer: one OpenAI-compatible async client, the embedded llama.cpp endpoint, prompts."""
