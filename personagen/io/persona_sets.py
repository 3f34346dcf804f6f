"""External persona sets as rows of a bank's `personas` group, so that sets written elsewhere
are scored, embedded, evaluated and aligned like mined ones and can be compared with them.

Schemas (`FORMATS`), as confirmed in public sources (Hugging Face dataset cards, viewers and
code that loads the sets):

- `personahub`: PersonaHub (proj-persona/PersonaHub), JSON Lines files, one per subset. The
  `persona` subset (persona.jsonl, 200k rows) has one field, `persona` (code reading
  `load_dataset("proj-persona/PersonaHub", "persona")["train"]["persona"]`); the synthesis
  subsets (math, instruction, reasoning, knowledge, npc, tool) have `input persona`,
  `synthesized text` and `description` (the `dataset_info` of copies of the set). No id field:
  rows are known by their line number.
- `nemotron`: Nemotron-Personas (the column list of nvidia/Nemotron-Personas-USA's viewer),
  Parquet: `uuid`; the texts `persona`, `professional_persona`, `sports_persona`,
  `arts_persona`, `travel_persona`, `culinary_persona`; `cultural_background`,
  `skills_and_expertise`, `skills_and_expertise_list`, `hobbies_and_interests`,
  `hobbies_and_interests_list`, `career_goals_and_ambitions` (strings); `sex`, `age`
  (integer), `marital_status`, `education_level`, `bachelors_field`, `occupation`, `city`,
  `state`, `zipcode`, `country`. Not confirmed: how a `_list` column writes its list (JSON,
  Python or comma-separated text are all read, see `_items`) and the place columns of the
  regional sets (every column of `DEFAULT_ATTRIBUTES["location"]` present makes up
  `location`).
- `generic`: any table with a text column (`persona`, `narrative` or `text` by default).

Any schema may come as JSONL, CSV or Parquet (told by the file's extension). Demographic
columns become `attributes` (`DEFAULT_ATTRIBUTES`, or as mapped by the caller); every column
that is neither text, id nor attribute is kept in `source_meta` (JSON). A persona's id is
`<name>/<key>`: the key is the source's own id (`uuid`, or `--id-column`) where it has one,
else the row's number in the file (JSONL: its line number; CSV and Parquet: its 1-based record
number), so importing the same file twice gives the same ids. A row that cannot be imported
(not UTF-8, not JSON, not an object, wrong number of CSV fields, no text, no id, a repeated id)
becomes a `BadRow` with its place in the file and the reason: rows read = imported + bad.
"""

from __future__ import annotations

import ast
import csv
import hashlib
import json
import math
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from personagen.errors import PersonagenError
from personagen.io.bank import ATTRIBUTES_TYPE, GROUPS, KEY

FORMATS = ("personahub", "nemotron", "generic")
CONTAINERS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}

PERSONAHUB_TEXT = ("persona", "input persona")
"""The persona text of PersonaHub's persona subset, then of its synthesis subsets."""
PERSONAHUB_FIELDS = {*PERSONAHUB_TEXT, "synthesized text", "description"}
NEMOTRON_TEXT = (
    "persona",
    "professional_persona",
    "sports_persona",
    "arts_persona",
    "travel_persona",
    "culinary_persona",
)
GENERIC_TEXT = ("persona", "narrative", "text")
DEFAULT_TEXT = {"personahub": PERSONAHUB_TEXT, "nemotron": NEMOTRON_TEXT, "generic": GENERIC_TEXT}
"""Default text columns: nemotron joins all of its own present; the others take the first."""
ID_COLUMNS = ("uuid", "persona_id", "id")
"""A source's own id column, where present (the first of these)."""

ATTRIBUTE_FIELDS = tuple(f.name for f in ATTRIBUTES_TYPE)
LIST_FIELDS = ("interests", "values")
DEFAULT_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "age_range": ("age_range", "age"),
    "gender": ("gender", "sex"),
    "occupation": ("occupation",),
    "location": (
        "location",
        "city",
        "district",
        "prefecture",
        "state",
        "province",
        "region",
        "country",
    ),
    "interests": ("interests", "hobbies_and_interests_list"),
    "values": ("values",),
}
"""Source columns of each attributes field: age_range, gender and occupation take the first
present; location joins every one present (", "), interests and values concatenate them."""
SINGLE_FIELDS = ("age_range", "gender", "occupation")

BAD_ROW_KINDS = {
    "not_utf8": "not UTF-8",
    "not_json": "not JSON",
    "not_object": "not a JSON object",
    "bad_fields": "wrong number of CSV fields",
    "no_text": "no text",
    "no_id": "no id",
    "duplicate_id": "duplicate id",
}
PEEK_ROWS = 1000
"""JSONL rows whose keys make up a file's columns (JSONL has no header)."""
_SURROGATE = re.compile("[\udc80-\udcff]")


@dataclass(frozen=True)
class BadRow:
    place: str
    """Where the row is in the file: `line 7` (JSONL), `row 7` (CSV, Parquet)."""
    kind: str
    """One of `BAD_ROW_KINDS`."""
    reason: str


@dataclass(frozen=True)
class Mapping:
    """Which source columns make a persona's text, its attributes and its id."""

    text: tuple[str, ...]
    attributes: dict[str, tuple[str, ...]]
    id: str | None

    def columns(self) -> set[str]:
        used = {*self.text, *(c for cs in self.attributes.values() for c in cs)}
        return used | ({self.id} if self.id else set())

    def as_dict(self) -> dict[str, Any]:
        """JSON-native, as the manifest records it."""
        attributes = {f: list(cs) for f, cs in self.attributes.items()}
        return {"text": list(self.text), "attributes": attributes, "id": self.id}


@dataclass
class Batch:
    personas: pa.Table
    """Rows of the bank's `personas` group."""
    bad: list[BadRow]
    rows: int
    """Rows read: personas + bad."""


@dataclass
class SourceSet:
    """One source file, its schema told and its columns mapped; `batches` reads it."""

    path: Path
    container: str
    format: str
    name: str
    mapping: Mapping

    def batches(self, rows: int = 10_000) -> Iterator[Batch]:
        """The set in batches of about `rows` rows; ids repeated across batches are caught."""
        first_place: dict[str, str] = {}
        personas: list[dict[str, Any]] = []
        bad: list[BadRow] = []
        for number, place, record in _records(self.path, self.container):
            if isinstance(record, BadRow):
                bad.append(record)
            else:
                row = persona_row(record, number, place, self.mapping, self.name, first_place)
                (bad if isinstance(row, BadRow) else personas).append(row)
            if len(personas) + len(bad) >= rows:
                yield _batch(personas, bad)
                personas, bad = [], []
        if personas or bad:
            yield _batch(personas, bad)


def _batch(personas: list[dict[str, Any]], bad: list[BadRow]) -> Batch:
    table = pa.Table.from_pylist(personas, schema=GROUPS["personas"])
    return Batch(table, bad, len(personas) + len(bad))


# ------------------------------------------------------------------------------- opening


def open_persona_set(
    path: str | Path,
    fmt: str = "auto",
    *,
    name: str | None = None,
    text: Sequence[str] = (),
    attributes: Sequence[str] = (),
    id_column: str | None = None,
) -> SourceSet:
    """A source file with its schema (`fmt`, or told from its columns) and its column mapping:
    `text` columns (default per schema), `attributes` as `FIELD=COLUMN` or a known `COLUMN`
    (they replace the defaults of their fields), `id_column` ("" = row numbers). Every column
    named must exist; errors say which columns there are."""
    path = Path(path)
    container = CONTAINERS.get(path.suffix.lower())
    if container is None:
        raise PersonagenError(
            f"cannot tell how {path} is stored from its extension: use one of "
            f"{', '.join(CONTAINERS)}"
        )
    columns = _columns(path, container)
    if fmt == "auto":
        fmt = detect_format(columns)
    elif fmt not in FORMATS:
        raise PersonagenError(f"unknown format {fmt!r}; formats: auto, {', '.join(FORMATS)}")
    name = path.stem if name is None else name.strip()
    if not name or "/" in name:
        raise PersonagenError(f"bad --name {name!r}: the id prefix must be non-empty, without '/'")
    mapping = Mapping(
        text=_text_columns(fmt, columns, tuple(text), path),
        attributes=_attribute_columns(columns, attributes, path),
        id=_id_column(fmt, columns, id_column, path),
    )
    return SourceSet(path, container, fmt, name, mapping)


def detect_format(columns: Iterable[str]) -> str:
    """Nemotron-Personas by its `uuid` and topic personas, PersonaHub by its few fields."""
    names = set(columns)
    if "uuid" in names and names & set(NEMOTRON_TEXT[1:]):
        return "nemotron"
    if names & set(PERSONAHUB_TEXT) and names <= PERSONAHUB_FIELDS:
        return "personahub"
    return "generic"


def _missing(path: Path, columns: list[str], wanted: Iterable[str], flag: str) -> None:
    absent = [c for c in wanted if c not in columns]
    if absent:
        raise PersonagenError(
            f"{path} has no column {', '.join(map(repr, absent))} ({flag}); "
            f"its columns: {', '.join(columns) or 'none'}"
        )


def _text_columns(
    fmt: str, columns: list[str], given: tuple[str, ...], path: Path
) -> tuple[str, ...]:
    if given:
        _missing(path, columns, given, "--text-column")
        return given
    defaults = DEFAULT_TEXT[fmt]
    found = tuple(c for c in defaults if c in columns)
    if fmt != "nemotron":
        found = found[:1]
    if not found:
        raise PersonagenError(
            f"{path} has none of the {fmt} text columns ({', '.join(defaults)}): name its "
            f"text with --text-column (its columns: {', '.join(columns) or 'none'})"
        )
    return found


def _attribute_columns(
    columns: list[str], given: Sequence[str], path: Path
) -> dict[str, tuple[str, ...]]:
    explicit: dict[str, tuple[str, ...]] = {}
    for spec in given:
        fld, _, column = spec.rpartition("=")
        fld, column = fld.strip(), column.strip()
        if not fld:
            fld = next((f for f, cs in DEFAULT_ATTRIBUTES.items() if column in cs), "")
            if not fld:
                raise PersonagenError(
                    f"--attribute-column {spec}: which attribute is {column!r}? write "
                    f"FIELD={column} with FIELD one of {', '.join(ATTRIBUTE_FIELDS)}"
                )
        if fld not in ATTRIBUTE_FIELDS:
            raise PersonagenError(
                f"--attribute-column {spec}: unknown attribute {fld!r}; attributes: "
                f"{', '.join(ATTRIBUTE_FIELDS)}"
            )
        _missing(path, columns, [column], "--attribute-column")
        explicit[fld] = (*explicit.get(fld, ()), column)
    mapping = {}
    for fld, candidates in DEFAULT_ATTRIBUTES.items():
        present = explicit.get(fld) or tuple(c for c in candidates if c in columns)
        if fld in SINGLE_FIELDS and fld not in explicit:
            present = present[:1]
        if present:
            mapping[fld] = present
    return mapping


def _id_column(fmt: str, columns: list[str], given: str | None, path: Path) -> str | None:
    if given is not None:
        _missing(path, columns, [given] if given else [], "--id-column")
        return given or None
    if fmt == "personahub":
        return None
    return next((c for c in ID_COLUMNS if c in columns), None)


def _columns(path: Path, container: str) -> list[str]:
    """The file's columns: its header or schema; for JSONL the keys of its first rows."""
    if container == "parquet":
        try:
            return pq.read_schema(path).names
        except (pa.ArrowInvalid, OSError) as exc:
            raise PersonagenError(
                f"cannot read {path} as Parquet: {exc}: restore the file, or give it as JSONL or "
                "CSV"
            ) from None
    if container == "csv":
        return _csv_header(path)
    keys: dict[str, None] = {}
    seen = 0
    first_bad: BadRow | None = None
    for _, _, record in _jsonl_records(path):
        if isinstance(record, dict):
            keys.update(dict.fromkeys(record))
            seen += 1
            if seen >= PEEK_ROWS:
                break
        elif first_bad is None:
            first_bad = record
    if not keys and first_bad is not None:
        raise PersonagenError(
            f"{path} has no row that can be read ({first_bad.place}: {first_bad.reason}): "
            "give UTF-8 JSON lines, one object a line"
        )
    return list(keys)


# ------------------------------------------------------------------------------- records

Record = tuple[int, str, dict[str, Any] | BadRow]
"""(row number, place in the file, the row's values or why it could not be read)."""


def _records(path: Path, container: str) -> Iterator[Record]:
    if container == "jsonl":
        yield from _jsonl_records(path)
    elif container == "csv":
        yield from _csv_records(path)
    else:
        yield from _parquet_records(path)


def _jsonl_records(path: Path) -> Iterator[Record]:
    """One record per non-blank line; a line is read alone, so one bad line fails alone."""
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            place = f"line {number}"
            raw = raw.rstrip(b"\r\n")
            try:
                line = raw.decode("utf-8").removeprefix("\ufeff")
            except UnicodeDecodeError as exc:
                reason = f"not UTF-8 (byte 0x{raw[exc.start]:02x} at byte {exc.start + 1})"
                yield number, place, BadRow(place, "not_utf8", reason)
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                reason = f"not JSON ({exc.msg}: column {exc.colno})"
                yield number, place, BadRow(place, "not_json", reason)
                continue
            if not isinstance(record, dict):
                reason = f"not a JSON object (a {type(record).__name__})"
                yield number, place, BadRow(place, "not_object", reason)
                continue
            yield number, place, record


def _csv_header(path: Path) -> list[str]:
    with path.open(encoding="utf-8", errors="surrogateescape", newline="") as fh:
        header = next(csv.reader(fh), [])
    header = [h.removeprefix("\ufeff").strip() for h in header]
    if any(_SURROGATE.search(h) for h in header):
        raise PersonagenError(f"the header of {path} is not UTF-8: save the file as UTF-8")
    return header


def _csv_records(path: Path) -> Iterator[Record]:
    """One record per CSV record (quoted fields may span lines); empty fields are missing.
    Bytes that are not UTF-8 are kept apart (surrogates) so that only their row fails."""
    header = _csv_header(path)
    with path.open(encoding="utf-8", errors="surrogateescape", newline="") as fh:
        reader = csv.reader(fh)
        next(reader, None)
        number = 0
        for fields in reader:
            if not fields:
                continue
            number += 1
            place = f"row {number}"
            bad = next((i for i, f in enumerate(fields) if _SURROGATE.search(f)), None)
            if bad is not None:
                column = header[bad] if bad < len(header) else f"field {bad + 1}"
                byte = ord(_SURROGATE.search(fields[bad])[0]) - 0xDC00  # type: ignore[index]
                reason = f"not UTF-8 (byte 0x{byte:02x} in {column!r})"
                yield number, place, BadRow(place, "not_utf8", reason)
            elif len(fields) != len(header):
                reason = f"{len(fields)} fields, the header has {len(header)}"
                yield number, place, BadRow(place, "bad_fields", reason)
            else:
                values = zip(header, fields, strict=True)
                yield number, place, {h: (f if f.strip() else None) for h, f in values}


def _parquet_records(path: Path) -> Iterator[Record]:
    number = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=4096):
        for record in batch.to_pylist():
            number += 1
            yield number, f"row {number}", record


# ------------------------------------------------------------------------------- one row


def persona_row(
    record: dict[str, Any],
    number: int,
    place: str,
    mapping: Mapping,
    name: str,
    first_place: dict[str, str],
) -> dict[str, Any] | BadRow:
    """A source row -> a `personas` row, or why not. `first_place` (id -> where it was first
    seen) is updated: a repeated id fails the later row."""
    present = [c for c in mapping.text if c in record]
    if not present:
        reason = f"no text: no {' or '.join(map(repr, mapping.text))} in the row"
        return BadRow(place, "no_text", reason)
    texts = [t for t in (_text(record[c]) for c in present) if t]
    if not texts:
        return BadRow(place, "no_text", f"empty text in {', '.join(map(repr, present))}")
    key = str(number)
    if mapping.id is not None:
        key = _text(record.get(mapping.id)) or ""
        if not key:
            return BadRow(place, "no_id", f"no id: {mapping.id!r} is missing or empty")
        if key in first_place:
            reason = f"duplicate id {key!r} (first at {first_place[key]})"
            return BadRow(place, "duplicate_id", reason)
        first_place[key] = place
    used = mapping.columns()
    meta = {k: v for k, v in record.items() if k not in used}
    return {
        KEY: f"{name}/{key}",
        "user_id": key,
        "window_id": None,
        "narrative": "\n\n".join(texts),
        "attributes": _attributes(record, mapping.attributes),
        "source_meta": json.dumps(meta, ensure_ascii=False, default=str),
        "model": None,
        "prompt_version": None,
    }


def _attributes(record: dict[str, Any], columns: dict[str, tuple[str, ...]]) -> dict[str, Any]:
    out: dict[str, Any] = dict.fromkeys(ATTRIBUTE_FIELDS)
    for fld, names in columns.items():
        if fld in LIST_FIELDS:
            items = [item for c in names for item in _items(record.get(c))]
            out[fld] = items or None
        else:
            parts = [t for t in (_text(record.get(c)) for c in names) if t]
            out[fld] = ", ".join(parts) or None
    return out


def _text(value: Any) -> str | None:
    """A value as trimmed text (None when missing or blank); 34.0 reads as 34."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str | int) and not isinstance(value, bool):
        text = str(value)
    else:
        text = json.dumps(value, ensure_ascii=False, default=str)
    return text.strip() or None


def _items(value: Any) -> list[str]:
    """A list attribute: a list, a list written as JSON or Python text (Nemotron's `_list`
    columns), or comma-separated text."""
    if isinstance(value, str) and value.strip().startswith("["):
        for parse in (json.loads, ast.literal_eval):
            try:
                parsed = parse(value)
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                continue
            if isinstance(parsed, list):
                value = parsed
                break
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, list | tuple):
        value = [value]
    return [t for t in (_text(v) for v in value) if t]


def describe_file(path: str | Path) -> dict[str, Any]:
    """A source file's provenance: its absolute path, size and sha256 (of its bytes only, so a
    moved or renamed copy is the same source)."""
    path = Path(path).resolve()
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return {"path": str(path), "bytes": path.stat().st_size, "sha256": digest.hexdigest()}
