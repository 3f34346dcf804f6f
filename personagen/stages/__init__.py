"""The stages of the data flow, as plain data and pure functions (no Ray, no client).

ingest (batch functions over input files), mine, judge, score, consistency, revise, queries (LLM
stages: `request(row, params)` and `parse(row, answer, params)`, see `base`), embed (batch
functions over persona texts). Executors in `personagen.runtime` run them; commands in
`personagen.commands` decide which rows go to which stage.
"""
