"""The commands: one module per `personagen` command, each a function `command(cfg, ...)` that
runs on the configuration alone (flags are folded into it by the CLI with `Config.updated`) and
returns what it did (`personagen.runtime.summary.Summary`, a report, an index's info).

ingest, mine, judge, score, consistency, embed, index (+ search), align, evaluate, adapt,
train_embedder, build (+ estimate, demo), reference, reliability; `render` draws their results.
"""
