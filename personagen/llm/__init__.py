"""The LLM layer: one OpenAI-compatible async client, the embedded llama.cpp server, prompt
templates, structured answers, the response cache and token accounting.

Nothing here knows Ray or the configuration: the client and the server take their own options
(`ClientOptions`, `EmbeddedServerOptions`), and the stages' Ray executors live in
`personagen.runtime.executors`.
"""
