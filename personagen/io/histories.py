"""History inputs: format detection, per-file readers, and the histories table schema.

Every reader turns one input file into `FileRead`: user records (blogs: one per file, posts in
chronological order, metadata as plain values) or post records (generic inputs: one per post,
grouped by user in the ingest), plus per-line errors. A file that cannot be read at all
raises; the ingest stage records it.

Input formats:
- `blogs-xml`: a Blog Authorship Corpus folder (see `personagen.io.blogs`).
- `jsonl`:   one JSON object per line, either one row per post (`user_id`, `text`, optional `date`)
             or one row per user (`user_id`, `posts`: list of {date, text} or of strings).
- `parquet`: the same two shapes as Parquet.
Other columns are carried through as metadata. In generic inputs their values are stored as
strings, so that files whose columns have different types still concatenate.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from personagen.errors import PersonagenError
from personagen.io.blogs import read_blog_file

FORMATS = ("blogs-xml", "jsonl", "parquet")
_EXTENSIONS = {".xml": "blogs-xml", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}

POST_TYPE = pa.struct([("date", pa.string()), ("text", pa.string())])

HISTORY_COLUMNS = pa.schema(
    [
        ("history_id", pa.string()),
        ("user_id", pa.string()),
        ("window_id", pa.int32()),
        ("posts", pa.list_(POST_TYPE)),
        ("n_posts", pa.int32()),
        ("n_tokens", pa.int32()),
        ("source", pa.string()),
    ]
)
"""Fixed columns of a histories table; metadata columns follow them."""

BLOG_METADATA = pa.schema(
    [("gender", pa.string()), ("age", pa.int32()), ("industry", pa.string()), ("sign", pa.string())]
)


def history_id(user_id: str, window_id: int) -> str:
    """The id a history row (and the persona mined from it) is known by everywhere."""
    return f"{user_id}/{window_id}"


@dataclass
class FileRead:
    """What one input file yielded."""

    users: list[dict[str, Any]] = field(default_factory=list)
    posts: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    encoding: str = "utf-8"


def detect_format(paths: list[Path]) -> str:
    kinds = {_EXTENSIONS.get(p.suffix.lower()) for p in paths}
    kinds.discard(None)
    if len(kinds) != 1:
        found = ", ".join(sorted(k for k in kinds if k)) or "none"
        raise PersonagenError(
            f"cannot tell the input format (found: {found}); pass --format {'|'.join(FORMATS)}"
        )
    return kinds.pop()  # type: ignore[return-value]


def list_inputs(src: str | Path, fmt: str) -> list[Path]:
    """Input files under `src` (a file or a folder, searched recursively), sorted."""
    src = Path(src)
    if not src.exists():
        raise PersonagenError(f"input not found: {src}")
    if src.is_file():
        return [src]
    suffixes = (
        {ext for ext, kind in _EXTENSIONS.items() if kind == fmt}
        if fmt != "auto"
        else set(_EXTENSIONS)
    )
    files = sorted(p for p in src.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
    if not files:
        raise PersonagenError(
            f"no input files ({', '.join(sorted(suffixes))}) under {src}: point at a file or a "
            "folder that holds some"
        )
    return files


def check_parquet_inputs(files: list[Path]) -> None:
    """Refuse, before any work, Parquet inputs of which not one can be ingested: each cut
    short or not Parquet, or without `user_id` and `posts` or `text` (one such file among good
    ones is only a line of the ingest's errors)."""
    problems = []
    for path in files:
        try:
            names = pq.read_schema(path).names
        except (pa.ArrowException, OSError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
            problems.append(f"{path}: {reason}")
            continue
        if "user_id" in names and ("posts" in names or "text" in names):
            return
        problems.append(f"{path} lacks columns user_id and posts or text (has: {', '.join(names)})")
    raise PersonagenError(
        f"none of the {len(files)} input Parquet files can be ingested ({problems[0]}): give "
        "rows of user_id with posts (a list) or text, one post a row"
    )


# ----------------------------------------------------------------------------------- readers


def read_file(path: Path, fmt: str) -> FileRead:
    if fmt == "blogs-xml":
        blog = read_blog_file(path)
        user = {
            "user_id": blog.user_id,
            "posts": blog.posts,
            "n_posts_raw": blog.n_posts_raw,
            "n_empty": blog.n_empty,
            "meta": {
                "gender": blog.gender,
                "age": blog.age,
                "industry": blog.industry,
                "sign": blog.sign,
            },
        }
        return FileRead(users=[user], encoding=blog.encoding)
    if fmt == "jsonl":
        return _read_jsonl(path)
    if fmt == "parquet":
        return _records_to_read(pq.read_table(path).to_pylist(), f"{path}")
    raise PersonagenError(f"unknown format {fmt!r}; formats: {', '.join(FORMATS)}")


def _read_jsonl(path: Path) -> FileRead:
    raw = path.read_bytes()
    if b"\x00" in raw[:4096]:
        raise PersonagenError("binary content (NUL bytes), not JSON lines")
    from personagen.io.blogs import decode_bytes

    text, encoding = decode_bytes(raw)
    records, errors = [], []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            errors.append(f"{path}:{number}: malformed JSON ({exc.msg})")
            continue
        if not isinstance(record, dict):
            errors.append(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
            continue
        record["_line"] = number
        records.append(record)
    read = _records_to_read(records, str(path))
    read.errors[:0] = errors
    read.encoding = encoding
    return read


def _records_to_read(records: list[dict[str, Any]], where: str) -> FileRead:
    """Rows of either shape -> post records; the ingest groups them by user afterwards, so a
    user's posts may come from several files and from both shapes."""
    read = FileRead()
    for record in records:
        line = record.pop("_line", None)
        place = f"{where}:{line}" if line else where
        user_id = record.pop("user_id", None)
        if user_id is None or str(user_id).strip() == "":
            read.errors.append(f"{place}: missing user_id")
            continue
        if "posts" in record:
            try:
                posts = _user_posts(record.pop("posts"))
            except ValueError as exc:
                read.errors.append(f"{place}: {exc}")
                continue
        elif "text" in record:
            text = record.pop("text")
            posts = [{"date": _str_or_none(record.pop("date", None)), "text": text}]
        else:
            read.errors.append(f"{place}: row has neither 'posts' nor 'text'")
            continue
        meta = _meta(record)
        for post in posts:
            text = "" if post["text"] is None else str(post["text"])
            read.posts.append(
                {"user_id": str(user_id), "date": post["date"], "text": text, "meta": meta}
            )
    return read


def _user_posts(raw_posts: Any) -> list[dict[str, Any]]:
    if not isinstance(raw_posts, list):
        raise ValueError(f"'posts' must be a list, got {type(raw_posts).__name__}")
    if not raw_posts:
        raise ValueError("'posts' is empty")
    posts = []
    for item in raw_posts:
        if isinstance(item, str):
            posts.append({"date": None, "text": item})
        elif isinstance(item, dict):
            posts.append({"date": _str_or_none(item.get("date")), "text": item.get("text")})
        else:
            raise ValueError(f"a post must be a string or an object, got {type(item).__name__}")
    return posts


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def _meta(record: dict[str, Any]) -> dict[str, Any]:
    return {
        key: (value if isinstance(value, str) or value is None else json.dumps(value, default=str))
        for key, value in record.items()
    }


# ----------------------------------------------------------------------------------- reading

HISTORIES_DIR = "histories"
REQUIRED_COLUMNS = ("history_id", "user_id", "window_id", "posts")


def histories_files(path: str | Path) -> list[str]:
    """Parquet files (absolute paths: Ray workers may run elsewhere) of an ingest output folder,
    of its histories/ folder, or one file."""
    path = Path(path).resolve()
    if path.is_file():
        return [str(path)]
    if (path / HISTORIES_DIR).is_dir():
        path = path / HISTORIES_DIR
    files = sorted(str(p) for p in path.glob("*.parquet") if not p.name.startswith("."))
    if not files:
        raise PersonagenError(f"no histories Parquet in {path} (run `personagen ingest` first)")
    return files


def histories_schema(files: list[str]) -> pa.Schema:
    """The unified schema of history part files (metadata columns may differ between parts)."""
    import pyarrow.dataset as pds

    def schema_of(file: str) -> pa.Schema:
        try:
            return pds.dataset(file).schema
        except (pa.ArrowInvalid, OSError):
            raise PersonagenError(
                f"not a histories Parquet file: {file} (raw posts, JSONL or a blog corpus go "
                "through `personagen ingest` first, or `personagen build`)"
            ) from None

    schema = pa.unify_schemas([schema_of(f) for f in files])
    missing = [name for name in REQUIRED_COLUMNS if name not in schema.names]
    if missing:
        raise PersonagenError(
            f"histories lack columns {', '.join(missing)} (expected `personagen ingest` output)"
        )
    return schema


def read_histories(folder: str | Path) -> pa.Table:
    """An ingest output folder (or its histories/ subfolder) as one table (for tests and tools)."""
    files = histories_files(folder)
    return pa.concat_tables([pq.read_table(f) for f in files], promote_options="permissive")
