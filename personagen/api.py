"""personagen from Python (notebooks, scripts): one verb per step, without the CLI.

The verbs call the same commands as the CLI (`personagen.commands`) with the same
configuration: `cfg` is a `Config` from `load_config(path, overrides, seed)`, the embedded
defaults when left out. Every verb takes its arguments in one order: what it works on (a bank
or a persona set) first, then the query, the reference, how many (`n`, `k`) and where it writes
(`out`); options are keywords, `cfg` last. A persona set is a path (bank folder, `align`/`adapt`
output folder, Parquet file), an Arrow table or a pandas DataFrame; a reference is a spec such as
`builtin:east-asia` or `big5:PATH`, or what `reference` returns. Commands are imported when a
verb first runs them (some bring Ray and the models along).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from personagen.config import Config, load_config
from personagen.errors import PersonagenError
from personagen.io.bank import Bank
from personagen.io.personas import PersonaSet, persona_set, read_personas
from personagen.io.reference import Reference

if TYPE_CHECKING:
    from typing import TypeAlias

    import pandas as pd

    from personagen.runtime.summary import Summary

    Personas: TypeAlias = str | Path | pa.Table | pd.DataFrame | PersonaSet

__all__ = [
    "Config",
    "adapt",
    "align",
    "evaluate",
    "export",
    "load_config",
    "open_bank",
    "read_set",
    "reference",
    "score",
    "search",
]


def open_bank(path: str | Path) -> Bank:
    """The bank at `path` (its groups, failures and manifest), checked to hold personas."""
    bank = Bank(path)
    if not bank.has("personas"):
        raise PersonagenError(f"no persona bank at {path} (a folder with personas/)")
    return bank


def read_set(path: str | Path, *, instrument: str | None = None) -> pa.Table:
    """Every column of a persona set as Arrow (`.to_pandas()` for pandas): a bank's scored
    personas on `instrument`, or an aligned/adapted set with its alignment weights."""
    from personagen.exports.sets import read_source

    return read_source(path, instrument).table


def reference(
    spec: str,
    *,
    group: str | None = None,
    countries: Sequence[str] | None = None,
    cfg: Config | None = None,
) -> Reference:
    """A human reference (`builtin:<group>`, `big5:PATH`, ...), narrowed to an M49 `group` or
    to `countries`, as `--reference/--group/--countries` load it."""
    from personagen.commands.reference import load

    return load(_cfg(cfg), spec, group=group, countries=list(countries) if countries else None)


def score(
    bank: str | Path | Bank,
    *,
    instrument: str | None = None,
    mode: str | None = None,
    replace: bool = False,
    surrogate: float | None = None,
    cfg: Config | None = None,
) -> Summary:
    """Personas of `bank` answer the inventory (`personagen score`; needs an LLM endpoint,
    `llm.base_url`, or the embedded model; none with `mode="embedding"`). `surrogate`: the
    fraction to LLM-score, the others' traits predicted from their embeddings."""
    from personagen.commands.score import score as run

    settings = _cfg(cfg).updated({"score.instrument": instrument, "score.mode": mode})
    return run(settings, Path(bank), replace=replace, surrogate=surrogate)


def evaluate(
    personas: Personas,
    reference: str | Reference,
    *,
    before: Personas | None = None,
    out: str | Path | None = None,
    instrument: str | None = None,
    cfg: Config | None = None,
) -> dict[str, Any]:
    """Distances of `personas` (and `before`) from the reference, each also as a multiple of
    its noise floor (`personagen evaluate`); the report files go to `out` when given."""
    from personagen.commands.evaluate import evaluate as run

    settings = _cfg(cfg)
    earlier = _persona_set(before, instrument) if before is not None else None
    report, _ = run(
        settings,
        _persona_set(personas, instrument),
        _reference(reference, settings),
        before=earlier,
        out=out,
    )
    return report


def align(
    personas: Personas,
    reference: str | Reference,
    n: int,
    out: str | Path,
    *,
    method: str | None = None,
    instrument: str | None = None,
    cfg: Config | None = None,
) -> Summary:
    """Choose `n` personas whose traits match the reference and write them, their weights and
    the report to `out` (`personagen align`); `summary.outputs["result"]` has the choice."""
    from personagen.commands.align import align as run

    settings = _cfg(cfg).updated({"align.method": method})
    chosen = _persona_set(personas, instrument)
    return run(settings, chosen, _reference(reference, settings), n, out)


def adapt(
    bank: str | Path | Bank,
    query: str,
    reference: str | Reference,
    out: str | Path,
    *,
    n: int | None = None,
    k: int | None = None,
    revise: bool | None = None,
    overwrite: bool = False,
    cfg: Config | None = None,
) -> Summary:
    """Retrieve `k` personas for `query`, revise them toward the group, re-score and align `n`
    of them to the group's reference (`personagen adapt`; revising and re-scoring need an LLM)."""
    from personagen.commands.adapt import adapt as run

    settings = _cfg(cfg).updated({"adapt.n": n, "adapt.k": k, "adapt.revise": revise})
    return run(
        settings, Path(bank), query, _reference(reference, settings), out, overwrite=overwrite
    )


def search(
    bank: str | Path | Bank,
    query: str,
    k: int = 10,
    *,
    where: Sequence[str] = (),
    columns: Sequence[str] = ("narrative",),
    cfg: Config | None = None,
) -> pa.Table:
    """The `k` personas closest to `query` among those meeting every `where` filter
    (`personagen search`: `kept=true`, `openness>=3.5`, `attributes.location~wales`)."""
    from personagen.commands.index import search_bank

    return search_bank(_cfg(cfg), Path(bank), query, k, list(where), list(columns))


def export(
    personas: str | Path,
    to: str,
    out: str | Path,
    *,
    instrument: str | None = None,
    overwrite: bool = False,
    license: str | None = None,
) -> Path:
    """Write a persona set as `to` (oasis, concordia, hf, jsonl, csv) at `out`, atomically
    (`personagen export`); returns the path written."""
    from personagen.commands.export import export as run

    summary = run(personas, to, out, instrument=instrument, overwrite=overwrite, license=license)
    return summary.outputs["out"]


def _cfg(cfg: Config | None) -> Config:
    return cfg if cfg is not None else load_config()


def _reference(spec: str | Reference, cfg: Config) -> Reference:
    return spec if isinstance(spec, Reference) else reference(spec, cfg=cfg)


def _persona_set(personas: Personas, instrument: str | None) -> PersonaSet:
    """A checked persona set from any of the forms the verbs take."""
    if isinstance(personas, PersonaSet):
        return personas
    if isinstance(personas, str | Path):
        from personagen.exports.sets import set_path

        return read_personas(set_path(personas), instrument=instrument)
    if not isinstance(personas, pa.Table):
        personas = pa.Table.from_pandas(personas, preserve_index=False)
    return persona_set(personas, "<table>", instrument)
