"""Reader for the Blog Authorship Corpus (Schler et al. 2006), one file per blogger.

File names are `ID.gender.age.industry.sign.xml`; the content is `<Blog>` with repeated
`<date>DD,Month,YYYY</date><post>...</post>`. The files are not well-formed XML (bare `&`, stray
`<`, truncated tails) and come in mixed encodings, so they are scanned with a tolerant tag
tokenizer rather than an XML parser.

Encoding: a file is decoded as UTF-8; bytes that are not valid UTF-8 are decoded one by one as
cp1252 (latin-1 for the five bytes cp1252 leaves undefined). Per-byte fallback keeps the valid
UTF-8 in files that mix both, which a per-file fallback would turn into mojibake. A UTF-8
sequence cut short (lead byte and continuation bytes, then garbage, e.g. `\xe2\x80?` where the
corpus lost a closing quote) is dropped rather than shown as `â€`. C1 control
characters (U+0080-U+009F) that survive decoding are cp1252 punctuation decoded as latin-1
upstream; in this corpus U+0085 is the cp1252 ellipsis mid-sentence ("again\\x85why am I"), never a
line end, so C1 characters are mapped back to their cp1252 meaning. C0 control characters other
than tab and line ends (NUL runs from pasted binaries) are dropped.

Known limit: text in another multi-byte encoding (one post of the corpus is Shift-JIS Japanese)
is not detected and comes out as cp1252 characters.
"""

from __future__ import annotations

import codecs
import html
import re
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from personagen.errors import PersonagenError

# ------------------------------------------------------------------------------------ decoding


def _cp1252_byte(byte: int) -> str:
    try:
        return bytes([byte]).decode("cp1252")
    except UnicodeDecodeError:
        return bytes([byte]).decode("latin-1")


_CP1252_FALLBACK = [_cp1252_byte(b) for b in range(256)]


def _utf8_cp1252_fallback(exc: UnicodeError) -> tuple[str, int]:
    if not isinstance(exc, UnicodeDecodeError):
        raise exc
    bad = exc.object[exc.start : exc.end]
    if len(bad) >= 2 and 0xC2 <= bad[0] <= 0xF4 and all(0x80 <= b <= 0xBF for b in bad[1:]):
        return "", exc.end  # a UTF-8 sequence cut short upstream: damage, not cp1252 text
    return "".join(_CP1252_FALLBACK[b] for b in bad), exc.end


codecs.register_error("personagen-cp1252", _utf8_cp1252_fallback)

_CONTROL_TABLE = {
    **{b: None for b in (*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F)},
    **{b: _CP1252_FALLBACK[b] for b in range(0x80, 0xA0)},
}
"""C0 control characters (NULs of pasted binaries) are dropped; C1 ones become cp1252 text."""


def decode_bytes(raw: bytes) -> tuple[str, str]:
    """Decode corpus bytes; returns (text, encoding label) with `\\n` line ends."""
    try:
        text, label = raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        text, label = raw.decode("utf-8", errors="personagen-cp1252"), "utf-8+cp1252"
    if text.startswith("\ufeff"):
        text = text[1:]
    text = text.translate(_CONTROL_TABLE)
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\u2028", "\n")
    return text, label


# -------------------------------------------------------------------------------------- dates

_MONTHS = {
    name: number
    for number, names in enumerate(
        [
            "january janvier januar enero janeiro gennaio januari tammikuu januarie ianuarie "
            "styczen leden",
            "february fevrier février februar febrero fevereiro febbraio februari helmikuu "
            "februarie luty unor",
            "march mars märz marz marzo março marco maart maaliskuu martie marzec brezen",
            "april avril abril aprile huhtikuu aprilie kwiecien duben",
            "may mai mayo maio maggio mei maj toukokuu maj kveten",
            "june juin juni junio junho giugno kesäkuu kesakuu iunie czerwiec cerven",
            "july juillet juli julio julho luglio heinäkuu heinakuu iulie lipiec cervenec",
            "august août aout agosto augustus elokuu augusti sierpien srpen",
            "september septembre septiembre setembro settembre syyskuu septembrie wrzesien zari",
            "october octobre oktober octubre outubro ottobre lokakuu octombrie pazdziernik rijen",
            "november novembre noviembre novembro marraskuu noiembrie listopad",
            "december décembre decembre dezember diciembre dezembro dicembre joulukuu desember "
            "decembrie grudzien prosinec",
        ],
        start=1,
    )
    for name in names.split()
}


def parse_blog_date(raw: str) -> str | None:
    """`16,February,2004` (any of the corpus's languages) -> `2004-02-16`; None if unparseable."""
    parts = [p.strip().lower() for p in raw.split(",")]
    if len(parts) != 3:
        return None
    day, month_name, year = parts
    month = _MONTHS.get(month_name)
    if month is None or not day.isdigit() or not year.isdigit():
        return None
    try:
        return date(int(year), month, int(day)).isoformat()
    except ValueError:
        return None


# -------------------------------------------------------------------------------------- posts

_TAG = re.compile(r"<(/?)(date|post|blog)\s*>", re.IGNORECASE)
_URLLINK = re.compile(r"urlLink\s*")


def clean_post_text(raw: str) -> str:
    """Unescape entities, drop `urlLink` artefacts, collapse whitespace, keep paragraph breaks."""
    text = html.unescape(raw) if "&" in raw else raw
    if "urlLink" in text:
        text = _URLLINK.sub("", text)
    lines: list[str] = []
    for line in text.split("\n"):
        words = line.split()
        if words:
            lines.append(" ".join(words))
        elif lines and lines[-1]:
            lines.append("")
    return "\n".join(lines).strip()


@dataclass
class BlogFile:
    """One parsed blogger: metadata from the file name, posts in chronological order."""

    user_id: str
    gender: str | None
    age: int | None
    industry: str | None
    sign: str | None
    encoding: str
    posts: list[dict[str, str | None]] = field(default_factory=list)
    n_posts_raw: int = 0
    n_empty: int = 0


def parse_file_name(name: str) -> dict[str, object]:
    """`ID.gender.age.industry.sign.xml` -> metadata; raises on a name of another shape."""
    stem = name[:-4] if name.lower().endswith(".xml") else name
    parts = stem.split(".")
    if len(parts) != 5 or not parts[0]:
        raise PersonagenError(f"file name {name!r} is not ID.gender.age.industry.sign.xml")
    user_id, gender, age, industry, sign = parts
    return {
        "user_id": user_id,
        "gender": gender or None,
        "age": int(age) if age.isdigit() else None,
        "industry": None if industry in ("", "indUnk") else industry,
        "sign": sign or None,
    }


def split_posts(text: str) -> list[tuple[str | None, str]]:
    """(raw date, raw post body) pairs in file order, tolerant of missing or extra tags.

    A post runs from `<post>` to `</post>`, or to the next `<date>`/`<post>` tag or the end of the
    file when the closing tag is missing (truncated files).
    """
    tags = list(_TAG.finditer(text))
    pairs: list[tuple[str | None, str]] = []
    current_date: str | None = None
    for i, tag in enumerate(tags):
        closing, name = tag.group(1) == "/", tag.group(2).lower()
        if closing:
            continue
        following = tags[i + 1] if i + 1 < len(tags) else None
        end = following.start() if following else len(text)
        if name == "date":
            current_date = (
                text[tag.end() : end].strip() if following and following.group(1) else None
            )
        elif name == "post":
            pairs.append((current_date, text[tag.end() : end]))
            current_date = None
    return pairs


def parse_blog(raw: bytes, name: str) -> BlogFile:
    """Parse one corpus file's bytes; posts sorted by date (undated ones keep their place)."""
    meta = parse_file_name(name)
    text, encoding = decode_bytes(raw)
    pairs = split_posts(text)
    if not pairs and "<blog>" not in text[:2000].lower():
        raise PersonagenError("no <Blog> or <post> element found (not a blog corpus file)")
    blog = BlogFile(encoding=encoding, n_posts_raw=len(pairs), **meta)  # type: ignore[arg-type]
    posts: list[dict[str, str | None]] = []
    for raw_date, body in pairs:
        post_text = clean_post_text(body)
        if not post_text:
            blog.n_empty += 1
            continue
        posts.append({"date": parse_blog_date(raw_date) if raw_date else None, "text": post_text})
    blog.posts = chronological(posts)
    return blog


def chronological(posts: list[dict[str, str | None]]) -> list[dict[str, str | None]]:
    """Oldest first. The corpus lists posts newest first, so a descending file is reversed before
    a stable sort by date; an undated post sorts with the dated post before it."""
    dates = [p["date"] for p in posts if p["date"]]
    if len(dates) >= 2 and dates[0] > dates[-1]:
        posts = posts[::-1]
    keyed, last = [], ""
    for position, post in enumerate(posts):
        last = post["date"] or last
        keyed.append((last, position, post))
    keyed.sort(key=lambda item: (item[0], item[1]))
    return [post for _, _, post in keyed]


def read_blog_file(path: str | Path) -> BlogFile:
    path = Path(path)
    return parse_blog(path.read_bytes(), path.name)
