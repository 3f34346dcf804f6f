"""The persona bank: one folder, Parquet column groups joined on `persona_id`, and a manifest.

Layout of a bank folder::

    BANK/
      manifest.json        provenance: config (masked), models, prompt hashes, counts, times
      personas/            group "personas"   (mine)   persona_id, narrative, attributes, ...
      quality/             group "quality"    (judge)  quality scores, kept, reject_reason
      scores/              group "scores"     (score)  item responses and the five traits
      consistency/         group "consistency" (score --check-consistency) extreme traits
                           checked against the narrative
      embeddings/          group "embeddings" (embed)  embedding vector
      queries/             group "queries" (train-embedder) short search queries each persona
                           matches, written by an LLM (training pairs for the embedder)
      revisions/           group "revisions" (adapt, in OUT/work) a persona revised toward a
                           group; the bank's own narrative is never replaced
      failures/            rows that could not be processed: input id, stage, reason, attempts

Why column groups: each stage appends its own columns as new part files, without rewriting what
earlier stages wrote, and a resumed stage finds its finished rows by reading one small id column.
Every part file is written under a temporary name and renamed into place, so a killed writer
leaves no half-written part behind. Readers join the groups on `persona_id` (left join onto
`personas`) and, should a row have been written twice (a retried task), keep its latest copy.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pds
import pyarrow.parquet as pq

from personagen import TRAITS
from personagen.errors import PersonagenError
from personagen.io.lock import LOCK_FILE

KEY = "persona_id"
NO_PERSONA_ORIGIN = "baseline:no-persona"
"""The origin (manifest `origin`) of a bank of bare-model respondents: no narratives."""
MANIFEST = "manifest.json"

ATTRIBUTES_TYPE = pa.struct(
    [
        ("age_range", pa.string()),
        ("gender", pa.string()),
        ("occupation", pa.string()),
        ("location", pa.string()),
        ("interests", pa.list_(pa.string())),
        ("values", pa.list_(pa.string())),
    ]
)

CONSISTENCY_TYPE = pa.list_(
    pa.struct(
        [
            ("trait", pa.string()),
            ("level", pa.string()),
            ("score", pa.float64()),
            ("verdict", pa.string()),
            ("rationale", pa.string()),
        ]
    )
)

QUALITY_TYPE = pa.struct(
    [
        ("faithfulness", pa.float32()),
        ("specificity", pa.float32()),
        ("consistency", pa.float32()),
        ("plausibility", pa.float32()),
        ("overall", pa.float32()),
        ("rationale", pa.string()),
    ]
)

TRAIT_INTERVAL_TYPE = pa.struct(
    [(f"{trait}_{end}", pa.float64()) for trait in TRAITS for end in ("low", "high")]
)
"""A predicted persona's interval per trait (`personagen score --surrogate`); the coverage it is
made for is in the manifest (`score.surrogate.level`)."""

GROUPS: dict[str, pa.Schema] = {
    "personas": pa.schema(
        [
            (KEY, pa.string()),
            ("user_id", pa.string()),
            ("window_id", pa.int32()),
            ("narrative", pa.string()),
            ("attributes", ATTRIBUTES_TYPE),
            ("source_meta", pa.string()),
            ("model", pa.string()),
            ("prompt_version", pa.string()),
        ]
    ),
    "quality": pa.schema(
        [
            (KEY, pa.string()),
            ("quality", QUALITY_TYPE),
            ("kept", pa.bool_()),
            ("reject_reason", pa.string()),
            ("duplicate_of", pa.string()),
            ("judge_model", pa.string()),
            ("judge_prompt_version", pa.string()),
        ]
    ),
    "scores": pa.schema(
        [
            (KEY, pa.string()),
            ("instrument", pa.string()),
            ("answer_mode", pa.string()),
            ("item_ids", pa.list_(pa.string())),
            ("item_responses", pa.list_(pa.float32())),
            ("item_entropy", pa.list_(pa.float32())),
            *[(trait, pa.float64()) for trait in TRAITS],
            ("score_flags", pa.list_(pa.string())),
            ("score_model", pa.string()),
            ("score_prompt_version", pa.string()),
            ("score_seed", pa.int64()),  # the item order's shuffle seed
            ("item_errors", pa.list_(pa.string())),  # "<item id>: <reason>" of failed items
            ("trait_interval", TRAIT_INTERVAL_TYPE),  # predicted traits only (else null)
        ]
    ),
    "consistency": pa.schema(
        [
            (KEY, pa.string()),
            ("consistency", CONSISTENCY_TYPE),
            ("consistency_model", pa.string()),
            ("consistency_prompt_version", pa.string()),
        ]
    ),
    "embeddings": pa.schema(
        [
            (KEY, pa.string()),
            # A fixed-size list is written per part (dimension known); see `embedding_type`.
            ("embedding", pa.list_(pa.float32())),
            ("embed_model", pa.string()),
        ]
    ),
    "revisions": pa.schema(
        [
            (KEY, pa.string()),
            ("revised_narrative", pa.string()),
            ("revision_changes", pa.list_(pa.string())),
            ("revise_target", pa.string()),
            ("revise_model", pa.string()),
            ("revise_prompt_version", pa.string()),
        ]
    ),
    "queries": pa.schema(
        [
            (KEY, pa.string()),
            ("queries", pa.list_(pa.string())),
            ("queries_model", pa.string()),
            ("queries_prompt_version", pa.string()),
        ]
    ),
}

FAILURES_SCHEMA = pa.schema(
    [
        ("input_id", pa.string()),
        ("stage", pa.string()),
        ("reason", pa.string()),
        ("attempts", pa.int32()),
        ("time", pa.timestamp("ms", tz="UTC")),
        ("instrument", pa.string()),  # scoring failures: the instrument (null in older banks)
    ]
)

GROUP_KEYS: dict[str, tuple[str, ...]] = {"scores": (KEY, "instrument")}
"""What identifies a row of a group (default: `persona_id`): a persona has scores on each
instrument it was scored with."""


def embedding_type(dim: int) -> pa.DataType:
    return pa.list_(pa.float32(), dim)


def group_schema(group: str, embedding_dim: int | None = None) -> pa.Schema:
    if group not in GROUPS:
        raise PersonagenError(f"unknown bank group {group!r}; groups: {', '.join(GROUPS)}")
    schema = GROUPS[group]
    if group == "embeddings" and embedding_dim is not None:
        schema = schema.set(
            schema.get_field_index("embedding"),
            pa.field("embedding", embedding_type(embedding_dim)),
        )
    return schema


# ---------------------------------------------------------------------------------------------
# Writing


def write_part(folder: str | Path, table: pa.Table, prefix: str = "part") -> Path | None:
    """Write `table` as one new Parquet file in `folder`, atomically (temp name, then rename)."""
    if table.num_rows == 0:
        return None
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # Names sort in write order (readers keep the latest copy of a row): nanoseconds, then uuid.
    name = f"{prefix}-{time.time_ns():020d}-{uuid.uuid4().hex[:12]}.parquet"
    tmp = folder / f".tmp-{name}"
    pq.write_table(table, tmp, compression="zstd")
    final = folder / name
    os.replace(tmp, final)
    return final


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Select and cast `table` to `schema`, failing with the names of missing columns."""
    missing = [name for name in schema.names if name not in table.column_names]
    if missing:
        raise PersonagenError(f"table lacks bank columns: {', '.join(missing)}")
    return table.select(schema.names).cast(schema)


def conform_group(table: pa.Table, group: str) -> pa.Table:
    """`table` as rows of `group` (embeddings keep their fixed size, taken from the data)."""
    dim = None
    if group == "embeddings":
        kind = table.schema.field("embedding").type if "embedding" in table.column_names else None
        if isinstance(kind, pa.FixedSizeListType):
            dim = kind.list_size
        elif table.num_rows:
            dim = len(table.column("embedding")[0])
    return conform(table, group_schema(group, dim))


def write_group(bank: str | Path, group: str, table: pa.Table) -> Path | None:
    """Append rows of one column group (e.g. the judge's `quality` columns) to the bank."""
    return write_part(Path(bank) / group, conform_group(table, group))


def failure_rows(
    input_ids: Iterable[str],
    stage: str,
    reasons: Iterable[str],
    attempts: Iterable[int],
    instrument: str | None = None,
) -> pa.Table:
    ids = list(input_ids)
    now = datetime.now(timezone.utc)
    return pa.table(
        {
            "input_id": pa.array(ids, pa.string()),
            "stage": pa.array([stage] * len(ids), pa.string()),
            "reason": pa.array(list(reasons), pa.string()),
            "attempts": pa.array(list(attempts), pa.int32()),
            "time": pa.array([now] * len(ids), pa.timestamp("ms", tz="UTC")),
            "instrument": pa.array([instrument] * len(ids), pa.string()),
        },
        schema=FAILURES_SCHEMA,
    )


def write_failures(bank: str | Path, table: pa.Table) -> Path | None:
    return write_part(Path(bank) / "failures", conform(table, FAILURES_SCHEMA))


# ---------------------------------------------------------------------------------------------
# Reading


def part_files(folder: str | Path) -> list[Path]:
    """The finished part files of a folder, in write order (the order readers rely on)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("*.parquet") if not p.name.startswith("."))


def _dataset(folder: Path, schema: pa.Schema | None = None) -> pds.Dataset | None:
    files = part_files(folder)
    if not files:
        return None
    return pds.dataset([str(f) for f in files], schema=schema, format="parquet")


def _latest_per_key(table: pa.Table, keys: tuple[str, ...]) -> pa.Table:
    """Keep the last row of each key (part files are read in write order)."""
    if table.num_rows == 0:
        return table
    order = pa.array(np.arange(table.num_rows))
    last = (
        pa.table({**{k: table.column(k) for k in keys}, "_row": order})
        .group_by(list(keys), use_threads=False)
        .aggregate([("_row", "max")])
        .column("_row_max")
    )
    if len(last) == table.num_rows:
        return table
    return table.take(pa.array(np.sort(last.to_numpy())))


def read_group(bank: str | Path, group: str, columns: list[str] | None = None) -> pa.Table:
    """All rows of one column group, de-duplicated on its key (`GROUP_KEYS`, default
    `persona_id`; the key columns are always read), empty if none yet."""
    schema = group_schema(group)
    # Given the schema, parts written before a column was added read it as null (embeddings:
    # inferred, their fixed size is per part).
    keys = GROUP_KEYS.get(group, (KEY,))
    wanted = None if columns is None else [*keys, *(c for c in columns if c not in keys)]
    try:
        dataset = _dataset(Path(bank) / group, None if group == "embeddings" else schema)
        if dataset is None:
            empty = schema.empty_table()
            return empty if wanted is None else empty.select(wanted)
        table = dataset.to_table(columns=wanted)
    except (pa.ArrowException, OSError) as exc:
        raise damaged(Path(bank) / group, exc) from None
    return _latest_per_key(table, keys)


def damaged(folder: Path, exc: BaseException) -> PersonagenError:
    """The error for a bank folder whose part files cannot be read (cut short, not Parquet)."""
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return PersonagenError(
        f"cannot read the bank's part files in {folder} ({reason}): restore or remove the "
        "damaged part, or build the bank again"
    )


def read_failures(bank: str | Path, stage: str | None = None) -> pa.Table:
    files = part_files(Path(bank) / "failures")
    if not files:
        return FAILURES_SCHEMA.empty_table()
    # The schema is given: parts of older banks have no `instrument` (read as null).
    try:
        table = pds.dataset([str(f) for f in files], schema=FAILURES_SCHEMA).to_table()
    except (pa.ArrowException, OSError) as exc:
        raise damaged(Path(bank) / "failures", exc) from None
    if stage is not None:
        table = table.filter(pc.equal(table.column("stage"), stage))
    return table


def done_ids(
    bank: str | Path, group: str, failed_stage: str | None = None, instrument: str | None = None
) -> set[str]:
    """Ids already written to `group` (plus ids recorded as failed in `failed_stage`); with an
    `instrument`, only its scores and its scoring failures (and failures of older banks, which
    do not say)."""
    written = read_group(bank, group, list(GROUP_KEYS.get(group, (KEY,))))
    failed = read_failures(bank, failed_stage) if failed_stage is not None else None
    if instrument is not None:
        written = written.filter(pc.equal(written.column("instrument"), instrument))
        if failed is not None:
            same = pc.fill_null(pc.equal(failed.column("instrument"), instrument), True)
            failed = failed.filter(same)
    ids = set(written.column(KEY).to_pylist())
    if failed is not None:
        ids.update(failed.column("input_id").to_pylist())
    return ids


def instruments(bank: str | Path) -> list[str]:
    """The instruments the bank's personas were scored with."""
    scores = read_group(bank, "scores", [KEY, "instrument"])
    return sorted(v for v in pc.unique(scores.column("instrument")).to_pylist() if v)


def scores_of(
    bank: str | Path, instrument: str | None, columns: list[str] | None = None
) -> pa.Table:
    """The `scores` rows of one instrument; None = the bank's only one (an error naming them
    when it has several: their traits are not on one scale)."""
    if instrument is None:
        present = instruments(bank)
        if len(present) > 1:
            raise PersonagenError(
                f"bank {bank} is scored with {len(present)} instruments ({', '.join(present)}): "
                "choose one with --instrument"
            )
        instrument = present[0] if present else None
    scores = read_group(bank, "scores", columns)
    if instrument is None:
        return scores
    return scores.filter(pc.equal(scores.column("instrument"), instrument))


def read_bank(
    bank: str | Path,
    columns: list[str] | None = None,
    groups: Iterable[str] | None = None,
    instrument: str | None = None,
) -> pa.Table:
    """The bank as one table: `personas` left-joined with the other groups on `persona_id`,
    with the scores of `instrument` (None: the bank's only one, see `scores_of`).

    Rows a later stage has not reached yet get nulls in that stage's columns.
    """
    bank = Path(bank)
    if not bank.is_dir():
        raise PersonagenError(f"no persona bank at {bank}")
    wanted_groups = list(groups) if groups is not None else list(GROUPS)
    base = read_group(bank, "personas")
    for group in wanted_groups:
        if group == "personas":
            continue
        other = scores_of(bank, instrument) if group == "scores" else read_group(bank, group)
        base = _left_join(base, other)
    if columns is not None:
        unknown = [c for c in columns if c not in base.column_names]
        if unknown:
            raise PersonagenError(
                f"bank {bank} has no columns {', '.join(unknown)} "
                f"(has: {', '.join(base.column_names)})"
            )
        base = base.select(columns)
    return base


def _left_join(base: pa.Table, other: pa.Table) -> pa.Table:
    """Left join on KEY by index (works for list/struct columns, which hash joins may not)."""
    positions = pc.index_in(base.column(KEY), value_set=other.column(KEY))
    for name in other.column_names:
        if name == KEY:
            continue
        base = base.append_column(other.schema.field(name), other.column(name).take(positions))
    return base


# ---------------------------------------------------------------------------------------------
# Manifest


def read_manifest(bank: str | Path) -> dict[str, Any]:
    path = Path(bank) / MANIFEST
    if not path.exists():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))


def update_manifest(bank: str | Path, **sections: Any) -> dict[str, Any]:
    """Merge top-level sections into manifest.json (atomic replace); returns the new manifest."""
    bank = Path(bank)
    bank.mkdir(parents=True, exist_ok=True)
    manifest = read_manifest(bank)
    manifest.setdefault("format", "personagen-bank/1")
    for name, value in sections.items():
        if isinstance(value, dict) and isinstance(manifest.get(name), dict):
            manifest[name] = {**manifest[name], **value}
        else:
            manifest[name] = value
    tmp = bank / f".{MANIFEST}.{uuid.uuid4().hex[:8]}"
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str), encoding="utf-8")
    os.replace(tmp, bank / MANIFEST)
    return manifest


# ---------------------------------------------------------------------------------------------
# The bank as an object


class Bank:
    """One persona bank folder: its column groups, its failures, its manifest, and the claims
    that keep a resumed run from mixing rows made two different ways."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).resolve()  # workers write there; their working folder is not ours

    def __repr__(self) -> str:
        return f"Bank({str(self.path)!r})"

    def __fspath__(self) -> str:
        return str(self.path)

    def has(self, group: str) -> bool:
        return bool(part_files(self.path / group))

    def read(self, group: str, columns: list[str] | None = None) -> pa.Table:
        return read_group(self.path, group, columns)

    def write(self, group: str, table: pa.Table) -> Path | None:
        return write_group(self.path, group, table)

    def done(
        self, group: str, failed_stage: str | None = None, instrument: str | None = None
    ) -> pa.Array:
        """Ids written to `group` (plus those recorded as failed in `failed_stage`), sorted; see
        `done_ids` for `instrument`."""
        return pa.array(sorted(done_ids(self.path, group, failed_stage, instrument)), pa.string())

    def failures(self, stage: str | None = None) -> pa.Table:
        return read_failures(self.path, stage)

    def write_failures(self, table: pa.Table) -> Path | None:
        return write_failures(self.path, table)

    def manifest(self) -> dict[str, Any]:
        return read_manifest(self.path)

    def update_manifest(self, **sections: Any) -> dict[str, Any]:
        return update_manifest(self.path, **sections)

    def clear(self, keep: tuple[str, ...] = ("llm-cache",)) -> None:
        """Remove everything the bank holds but `keep` (by default the response cache, whose
        answers stay valid for any bank) and its writer's lock (`personagen.io.lock`)."""
        if not self.path.is_dir():
            return
        for child in self.path.iterdir():
            if child.name in keep or child.name == LOCK_FILE:
                continue
            if child.is_dir():
                shutil.rmtree(child)
            else:
                child.unlink()

    def drop(self, groups: Iterable[str], failed_stages: Iterable[str] = ()) -> None:
        """Remove column groups, and the failures recorded by `failed_stages`."""
        for group in groups:
            shutil.rmtree(self.path / group, ignore_errors=True)
        stages = pa.array(list(failed_stages), pa.string())
        if len(stages):
            failures = read_failures(self.path)
            self._rewrite(
                "failures", failures.filter(pc.invert(pc.is_in(failures["stage"], stages)))
            )

    def drop_instrument(self, instrument: str, stages: Iterable[str]) -> None:
        """Remove the scores on `instrument` and the failures `stages` recorded scoring with it
        (or without saying: older banks)."""
        scores = read_group(self.path, "scores")
        self._rewrite("scores", scores.filter(pc.not_equal(scores["instrument"], instrument)))
        failures = read_failures(self.path)
        mine = pc.and_(
            pc.is_in(failures["stage"], pa.array(list(stages), pa.string())),
            pc.fill_null(pc.equal(failures["instrument"], instrument), True),
        )
        self._rewrite("failures", failures.filter(pc.invert(mine)))

    def _rewrite(self, folder: str, table: pa.Table) -> None:
        """Replace a folder's parts by `table` as one part: written aside, then swapped in with
        two renames (a reader sees the old parts or the new one)."""
        if not (self.path / folder).is_dir():
            return
        staging = self.path / f".{folder}.{uuid.uuid4().hex[:8]}"
        staging.mkdir()
        write_part(staging, table)
        old = self.path / f".{folder}.old-{uuid.uuid4().hex[:8]}"
        (self.path / folder).rename(old)
        staging.rename(self.path / folder)
        shutil.rmtree(old)

    def claim_origin(self, origin: str, flag: str = "--replace") -> None:
        """Record where the bank's personas come from (`mined`, `imported`, `baseline:<kind>`);
        refuse to add personas of another origin to a bank that holds some (one set per bank:
        mixed origins could not be compared). Banks from before the record are mined ones."""
        held = self.has("personas")
        recorded = self.manifest().get("origin", "mined" if held else None)
        if held and recorded != origin:
            raise PersonagenError(
                f"bank {self.path} holds {recorded} personas, not {origin} ones: pass {flag} "
                "to start it over, or choose another --out"
            )
        self.update_manifest(origin=origin)

    def claim(
        self,
        section: str,
        fingerprint: dict[str, Any],
        refusal: Callable[[dict[str, Any]], str],
        *,
        held: bool = True,
    ) -> None:
        """Record in the manifest's `section` that the bank's rows of that kind are made as
        `fingerprint` says (e.g. the instrument of its scores). When the bank already holds such
        rows (`held`) made otherwise, refuse with `refusal(recorded)`: one line that says what
        differs and names the flag that starts over. `held=False` (the bank holds none)
        replaces an earlier record."""
        known = self.manifest().get(section)
        recorded = {k: known.get(k) for k in fingerprint} if isinstance(known, dict) else {}
        if held and any(v is not None for v in recorded.values()) and recorded != fingerprint:
            raise PersonagenError(refusal(recorded))
        self.update_manifest(**{section: fingerprint})
