"""`personagen import SRC --out BANK`: an external persona set (PersonaHub, Nemotron-Personas, any
JSONL/CSV/Parquet) becomes a bank that `score`, `embed`, `evaluate` and `align` take like a
mined one, so the two can be compared.

    SRC -> personagen.io.persona_sets (schema, column mapping, rows) -> BANK/personas, failures
The set is read in one process, batch by batch (no LLM, no Ray: it is one file). Every row read
ends as a persona or in `failures` (stage `import`, its place in the file and the reason); the
summary proves rows read = imported + failed. The manifest's `import` section records where
the set came from (path, format, sha256, size, column mapping, counts, time).

A bank holds one set: importing another (other bytes, name, format or mapping) into it, or
importing into a bank of mined personas, is refused (`--replace` starts it over). Importing the
same set again rewrites the same rows under the same ids, so scores and embeddings already in
the bank stay joined to them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from personagen.config import Config
from personagen.io.bank import Bank, failure_rows
from personagen.io.persona_sets import (
    BAD_ROW_KINDS,
    BadRow,
    SourceSet,
    describe_file,
    open_persona_set,
)
from personagen.runtime.context import RunContext
from personagen.runtime.summary import Summary

STAGE = "import"
ROWS = [
    ("rows read", f"{STAGE}:in"),
    ("  imported as personas", f"{STAGE}:out"),
    ("  failed (in failures)", f"{STAGE}:failed"),
]
KIND_ROWS = [(f"    {label}", f"{STAGE}:failed:{kind}") for kind, label in BAD_ROW_KINDS.items()]
"""Shown where the import had such failures."""
EQUATIONS = [((f"{STAGE}:failed",), tuple(f"{STAGE}:failed:{kind}" for kind in BAD_ROW_KINDS))]
"""Rows read = imported + failed is the stage's own check (`Summary.stages`)."""


def import_set(
    cfg: Config,
    src: str | Path,
    bank: str | Path,
    *,
    fmt: str = "auto",
    text_columns: Sequence[str] = (),
    attribute_columns: Sequence[str] = (),
    id_column: str | None = None,
    name: str | None = None,
    replace: bool = False,
) -> Summary:
    """Import the persona set `src` into `bank` (see the module docstring and
    `open_persona_set` for the format and column options); `replace` starts the bank over."""
    ctx = RunContext(cfg, bank, STAGE)
    source = open_persona_set(
        src, fmt, name=name, text=text_columns, attributes=attribute_columns, id_column=id_column
    )
    file = describe_file(source.path)
    if replace:
        ctx.bank.clear()
    claim(ctx.bank, source, file)
    ctx.bank.update_manifest(**{STAGE: {"source": file["path"], "finished": None}})
    # the same set again: its rows are rewritten whole, under the same ids
    ctx.bank.drop(["personas"], failed_stages=[STAGE])
    counts: Counter[str] = Counter()
    first: BadRow | None = None
    for batch in source.batches():
        ctx.bank.write("personas", batch.personas)
        record_bad(ctx.bank, source.name, batch.bad)
        first = first or next(iter(batch.bad), None)
        counts[f"{STAGE}:in"] += batch.rows
        counts[f"{STAGE}:out"] += batch.personas.num_rows
        counts[f"{STAGE}:failed"] += len(batch.bad)
        counts.update(f"{STAGE}:failed:{row.kind}" for row in batch.bad)
    rows = ROWS + [(label, key) for label, key in KIND_ROWS if counts[key]]
    summary = Summary(STAGE, counts, [STAGE], equations=EQUATIONS, rows=rows)
    summary.outputs = {"bank": str(ctx.bank.path), "source": file}
    if first is not None:
        summary.lines.append(
            f"{counts[f'{STAGE}:failed']} rows not imported, recorded in "
            f"{ctx.bank.path / 'failures'} (stage {STAGE}; first: {first.place}: {first.reason})"
        )
    ctx.finish(summary)
    ctx.bank.update_manifest(**{STAGE: provenance(source, file, counts)})
    return summary


def record_bad(bank: Bank, name: str, bad: list[BadRow]) -> None:
    """Bad rows in the bank's `failures`, known by the set's name and their place in it."""
    if bad:
        ids = [f"{name}:{row.place}" for row in bad]
        bank.write_failures(failure_rows(ids, STAGE, [row.reason for row in bad], [1] * len(bad)))


def claim(bank: Bank, source: SourceSet, file: dict[str, Any]) -> None:
    """Refuse a bank that holds personas of another set or mined ones; record this set."""
    bank.claim_origin("imported")
    fingerprint = fingerprint_of(source, file)
    earlier = bank.manifest().get(STAGE, {}).get("source", "another file")
    bank.claim(
        STAGE,
        fingerprint,
        lambda recorded: refusal(bank, recorded, fingerprint, earlier),
        held=bank.has("personas"),
    )


def fingerprint_of(source: SourceSet, file: dict[str, Any]) -> dict[str, Any]:
    """What makes two imports the same set: the bytes, the id prefix, the schema, the mapping
    (not the path: a moved copy is the same set)."""
    return {
        "sha256": file["sha256"],
        "name": source.name,
        "format": source.format,
        "columns": source.mapping.as_dict(),
    }


def refusal(bank: Bank, recorded: dict[str, Any], fingerprint: dict[str, Any], earlier: str) -> str:
    if recorded["sha256"] != fingerprint["sha256"]:
        what = f"the set {earlier} (sha256 {str(recorded['sha256'])[:12]}...), not this file"
    else:
        differ = [k for k in fingerprint if recorded[k] != fingerprint[k]]
        what = "this file imported with " + " and ".join(
            f"{k} {recorded[k]!r}, not {fingerprint[k]!r}" for k in differ
        )
    return (
        f"bank {bank.path} holds personas of {what}: pass --replace to start it over with "
        "this set, or choose another --out"
    )


def provenance(source: SourceSet, file: dict[str, Any], counts: Counter[str]) -> dict[str, Any]:
    """The manifest's `import` section: where the set came from, how it was read, what came
    of it."""
    return {
        **fingerprint_of(source, file),
        "source": file["path"],
        "bytes": file["bytes"],
        "container": source.container,
        "counts": {
            "rows_read": counts[f"{STAGE}:in"],
            "imported": counts[f"{STAGE}:out"],
            "failed": counts[f"{STAGE}:failed"],
            "failed_by_kind": {k: counts[f"{STAGE}:failed:{k}"] for k in BAD_ROW_KINDS},
        },
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
