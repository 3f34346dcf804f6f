"""Persona sets in the formats simulations and hubs load (`personagen export`).

One module per format, each a `write(rows, path, source)` that creates a file or a folder at
`path`: `oasis` (CAMEL OASIS agent profiles), `concordia` (Concordia player instances), `hf`
(a `datasets` folder with a dataset card), `flat` (`jsonl`, `csv`). `sets` reads the persona
set, builds the rows every format writes and publishes the result atomically; `formats` runs
one. This module stays light, so that the CLI can list the formats without importing them.
"""

FORMATS = ("oasis", "concordia", "hf", "jsonl", "csv")
