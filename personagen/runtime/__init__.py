"""Ray wiring: the only package that knows Ray Data.

`cluster` (Ray start-up, task maps), `context` (the run context and `run_stage`), `executors`
(how a stage's requests reach a model: the OpenAI-endpoint actor pool, in-cluster vLLM), `sinks`
(the one Datasink: atomic Parquet parts with counters), `progress`, `provenance` (the manifest),
`summary` (counts that add up), and the Ray side of ingest, embedding, sharded transport.
"""
