"""User histories with self-reported Big Five traits: the input of `validate-scorer --histories`.

JSONL, one user a line::

    {"user_id": "u1", "posts": [{"date": "2004-05-14", "text": "..."}, "a post as a string"],
     "openness": 3.8, "conscientiousness": 2.9, "extraversion": 4.1, "agreeableness": 3.3,
     "neuroticism": 2.0}

`posts` is what `personagen ingest` takes in a per-user row: a list of `{date, text}` objects
(`date` optional) or of strings. The five trait columns are numbers on any scale (a 1-5 mean, a
percentile, a T-score: only their order counts), `null` where a user did not report a trait.
Other columns are ignored: only `user_id` and `posts` ever reach an LLM, so a self-report cannot
leak into the persona it is compared with.

Bad input is an error that names the line and the problem and says how to fix it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from personagen import TRAITS
from personagen.errors import PersonagenError

MIN_USERS = 10
"""Fewer users than this give a correlation too uncertain to say anything."""
FORMAT_HINT = (
    "each line needs user_id, posts (a list of {date, text} objects or strings) and the "
    f"self-reported {', '.join(TRAITS)} (numbers on any scale, null where unknown)"
)


@dataclass(frozen=True)
class SelfReports:
    user_ids: list[str]
    posts: list[list[Any]]
    """Each user's posts as given (objects or strings), for `personagen ingest`."""
    traits: np.ndarray
    """(users, 5) self-reports in `TRAITS` order, NaN where not reported."""


def read_self_reports(path: str | Path, limit: int | None = None) -> SelfReports:
    """The first `limit` users (all: None) of the JSONL file at `path`, checked."""
    path = Path(path)
    user_ids: list[str] = []
    posts: list[list[Any]] = []
    values: list[list[float]] = []
    lines: dict[str, int] = {}
    seen_traits: set[str] = set()
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(_lines(path, fh), 1):
            if not line.strip():
                continue
            if limit is not None and len(user_ids) >= limit:
                break
            row = _parse(path, number, line)
            user = _user_id(path, number, row)
            if user in lines:
                raise PersonagenError(
                    f"{path}: user {user!r} is on lines {lines[user]} and {number}: give each "
                    "user one line, with all their posts"
                )
            lines[user] = number
            user_ids.append(user)
            posts.append(_posts(path, number, row))
            seen_traits.update(t for t in TRAITS if t in row)
            values.append([_number(path, number, trait, row.get(trait)) for trait in TRAITS])
    missing = [t for t in TRAITS if t not in seen_traits]
    if user_ids and missing:
        raise PersonagenError(f"{path} has no trait columns {', '.join(missing)}: {FORMAT_HINT}")
    traits = np.array(values, dtype=np.float64).reshape(len(user_ids), len(TRAITS))
    _enough(path, traits, limit)
    return SelfReports(user_ids, posts, traits)


def _lines(path: Path, fh: TextIO) -> Iterator[str]:
    """The file's lines; an error that says so where it is not UTF-8."""
    try:
        yield from fh
    except UnicodeDecodeError as exc:
        raise PersonagenError(
            f"{path} is not UTF-8 (a byte 0x{exc.object[exc.start]:02x}): save it as UTF-8 "
            "JSON lines"
        ) from None


def _parse(path: Path, number: int, line: str) -> dict[str, Any]:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise PersonagenError(
            f"{path} line {number} is not JSON ({exc.msg}): {FORMAT_HINT}"
        ) from None
    if not isinstance(row, dict):
        raise PersonagenError(f"{path} line {number} is not a JSON object: {FORMAT_HINT}")
    return row


def _user_id(path: Path, number: int, row: dict[str, Any]) -> str:
    user = row.get("user_id")
    if isinstance(user, bool) or not isinstance(user, str | int) or str(user) == "":
        raise PersonagenError(f"{path} line {number} has no user_id: {FORMAT_HINT}")
    return str(user)


def _posts(path: Path, number: int, row: dict[str, Any]) -> list[Any]:
    posts = row.get("posts")
    good = isinstance(posts, list) and posts
    if good:
        good = all(
            isinstance(p, str) or (isinstance(p, dict) and isinstance(p.get("text"), str))
            for p in posts
        )
    if not good:
        raise PersonagenError(
            f"{path} line {number}: posts must be a non-empty list of {{date, text}} objects "
            f"or strings, not {json.dumps(posts)[:60]}"
        )
    return posts


def _number(path: Path, number: int, trait: str, value: Any) -> float:
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise PersonagenError(
            f"{path} line {number}: {trait} is {json.dumps(value)}, not a number: give each "
            "trait as a number on any scale (null where unknown)"
        )
    return float(value)


def _enough(path: Path, traits: np.ndarray, limit: int | None) -> None:
    reported = np.isfinite(traits).sum(axis=0)
    short = {t: int(n) for t, n in zip(TRAITS, reported, strict=True) if n < MIN_USERS}
    if not short:
        return
    within = f" within --limit {limit}" if limit is not None else ""
    counts = ", ".join(f"{t} {n}" for t, n in short.items())
    raise PersonagenError(
        f"{path} has too few users with self-reports{within} ({counts}); a correlation needs "
        f"at least {MIN_USERS} per trait: add users"
    )
