"""PII redaction: emails, phone numbers, URLs and @handles become typed placeholders.

Applied at ingest, before any text can reach an LLM. Patterns are deliberately conservative on
phone numbers (groups of digits ending in a 4-digit group, e.g. 555-123-4567, (202) 452-6979,
+44 (0) 20 8329 0045) so dates, years, prices, scores and lists of numbers survive.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

PLACEHOLDERS = {"email": "[EMAIL]", "url": "[URL]", "phone": "[PHONE]", "handle": "[HANDLE]"}

_TLD = (
    r"(?:com|org|net|edu|gov|mil|int|info|biz|io|co|us|uk|ca|au|de|fr|nl|jp|cn|in|ru|br|it|es"
    r"|se|no|fi|dk|ch|at|be|nz|ie|za|mx|kr|tw|hk|sg|tv|me|ly)"
)

PATTERNS: dict[str, re.Pattern[str]] = {
    # Order matters: emails before handles (user@host), URLs before handles (x.com/@name).
    "email": re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b"),
    "url": re.compile(
        r"(?:\b(?:https?|ftp)://|\bwww\.)[^\s<>\"']+[^\s<>\"'.,;:!?)\]]"
        rf"|\b(?:[a-z0-9-]+\.)+{_TLD}/[^\s<>\"']*[^\s<>\"'.,;:!?)\]]",
        re.IGNORECASE,
    ),
    "phone": re.compile(
        r"(?<![\w/.-])"
        r"(?:\+\d{1,3}[\s.-]?)?"
        r"(?:\(\d{1,4}\)\s?)*(?:\d{2,4}[\s.-])?"
        r"\d{3,4}[\s.-]\d{4}"
        r"(?![\w/-])"
    ),
    "handle": re.compile(r"(?<![\w@.])@[A-Za-z_][A-Za-z0-9_]{1,30}\b"),
}


_CANNOT_MATCH = {
    # Cheap tests that rule a pattern out, so most posts cost four substring scans.
    "email": lambda text: "@" not in text,
    "handle": lambda text: "@" not in text,
    "url": lambda text: "://" not in text and "www." not in text.lower() and "/" not in text,
    "phone": lambda text: _DIGIT_RUN.search(text) is None,
}
_DIGIT_RUN = re.compile(r"\d\d")


def redact(text: str, types: Iterable[str] = tuple(PATTERNS)) -> tuple[str, Counter[str]]:
    """Replace each PII match of the given types by its placeholder; returns (text, counts)."""
    counts: Counter[str] = Counter()
    wanted = set(types)
    for kind, pattern in PATTERNS.items():
        if kind not in wanted or _CANNOT_MATCH[kind](text):
            continue
        text, n = pattern.subn(PLACEHOLDERS[kind], text)
        if n:
            counts[kind] += n
    return text, counts
