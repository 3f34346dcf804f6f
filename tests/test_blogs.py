import random
import re

import pytest
from conftest import shared_path

from personagen.errors import PersonagenError
from personagen.io.blogs import (
    chronological,
    clean_post_text,
    decode_bytes,
    parse_blog,
    parse_blog_date,
    parse_file_name,
    read_blog_file,
    split_posts,
)

MOJIBAKE = re.compile("Ã.|â€|\ufffd|[\u0000-\u0008\u000e-\u001f\u0080-\u009f]")
KNOWN_OTHER_ENCODINGS = {
    # Holds a Shift-JIS post and pasted binary data: not cp1252, see personagen.io.blogs.
    "925742.male.16.Student.Gemini.xml",
}


def blog_dir():
    return shared_path("blogs", "blogs")


@pytest.mark.parametrize(
    ("raw", "iso"),
    [
        ("16,February,2004", "2004-02-16"),
        ("03,mai,2004", "2004-05-03"),
        ("21,juillet,2004", "2004-07-21"),
        ("1,Julho,2003", "2003-07-01"),
        ("02,elokuu,2004", "2004-08-02"),
        ("09,desember,2003", "2003-12-09"),
        ("30,February,2004", None),
        ("", None),
        ("yesterday", None),
    ],
)
def test_dates_in_the_corpus_languages(raw, iso):
    assert parse_blog_date(raw) == iso


def test_file_name_metadata():
    meta = parse_file_name("1031806.male.17.Technology.Sagittarius.xml")
    assert meta == {
        "user_id": "1031806",
        "gender": "male",
        "age": 17,
        "industry": "Technology",
        "sign": "Sagittarius",
    }
    assert parse_file_name("5.female.24.indUnk.Leo.xml")["industry"] is None
    with pytest.raises(PersonagenError, match=r"ID\.gender\.age"):
        parse_file_name("notes.xml")


def test_decoding_mixed_utf8_and_cp1252_bytes_per_byte():
    raw = "café ".encode() + b"don\x92t \x93quote\x94 so\x85 " + "naïve".encode()
    text, label = decode_bytes(raw)
    assert text == "café don’t “quote” so… naïve"
    assert label == "utf-8+cp1252"


def test_line_ends_and_control_characters_normalised():
    text, label = decode_bytes("a\r\nb\rc\u2028d again\u0085why\x00\x00\x07\tz".encode())
    assert text == "a\nb\nc\nd again…why\tz"
    assert label == "utf-8"


def test_clean_post_text():
    raw = "\n\n      Go  urlLink here &amp; there&nbsp;now.   \n\n\n\n   Next &lt;p&gt;  \n "
    assert clean_post_text(raw) == "Go here & there now.\n\nNext <p>"


def test_split_posts_tolerates_missing_tags_and_truncation():
    text = (
        "<Blog>\n<date>1,May,2004</date>\n<post>first</post>\n"
        "<date>2,May,2004</date>\n<post>second, no closing tag\n"
        "<date>3,May,2004</date>\n<post>third & truncated file"
    )
    pairs = split_posts(text)
    assert [(d, b.strip()) for d, b in pairs] == [
        ("1,May,2004", "first"),
        ("2,May,2004", "second, no closing tag"),
        ("3,May,2004", "third & truncated file"),
    ]


def test_posts_come_out_oldest_first():
    raw = (
        b"<Blog><date>03,March,2004</date><post>c</post><date>02,March,2004</date><post>b2</post>"
        b"<date>02,March,2004</date><post>b1</post><date></date><post>undated</post>"
        b"<date>01,March,2004</date><post>a</post><post>  </post></Blog>"
    )
    blog = parse_blog(raw, "9.female.30.Arts.Leo.xml")
    assert [p["text"] for p in blog.posts] == ["a", "undated", "b1", "b2", "c"]
    assert blog.n_posts_raw == 6
    assert blog.n_empty == 1


def test_chronological_keeps_ascending_input():
    posts = [{"date": "2004-01-01", "text": "a"}, {"date": "2004-01-02", "text": "b"}]
    assert chronological(posts) == posts


def test_not_a_blog_file_is_an_error():
    with pytest.raises(PersonagenError, match="no <Blog>"):
        parse_blog(b"\x00\x01\x02 binary junk", "1.male.20.Arts.Leo.xml")


@pytest.mark.shared_data
def test_real_non_utf8_files_decode_without_mojibake():
    folder = blog_dir()
    blog = read_blog_file(folder / "1031806.male.17.Technology.Sagittarius.xml")
    assert blog.encoding == "utf-8+cp1252"
    text = "\n".join(p["text"] for p in blog.posts)
    assert "i’ve totally been unde" in text
    assert "“a striving after the wind.”" in text
    assert "So… events of the past" in text
    accented = read_blog_file(folder / "106651.male.25.indUnk.Leo.xml")
    accented_text = "\n".join(p["text"] for p in accented.posts)
    assert "Cliché as it was" in accented_text
    assert "Gérard Depardieu" in accented_text
    non_utf8 = []
    for path in sorted(folder.glob("*.xml")):
        if path.name in KNOWN_OTHER_ENCODINGS:
            continue
        raw = path.read_bytes()
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            non_utf8.append(path)
    assert len(non_utf8) > 20
    for path in non_utf8:
        posts = read_blog_file(path).posts
        bad = [m.group() for p in posts for m in MOJIBAKE.finditer(p["text"])]
        assert not bad, f"{path.name}: {bad[:5]}"


@pytest.mark.shared_data
def test_post_counts_match_an_independent_count_of_post_elements():
    files = sorted(blog_dir().glob("*.xml"))
    random.Random(7).shuffle(files)
    for path in files[:150]:
        raw = path.read_bytes()
        independent = len(re.findall(rb"<post>", raw))
        blog = read_blog_file(path)
        assert blog.n_posts_raw == independent, path.name
        assert len(blog.posts) + blog.n_empty == independent
        assert all(p["text"] and "urlLink" not in p["text"] for p in blog.posts)
        dates = [p["date"] for p in blog.posts if p["date"]]
        assert dates == sorted(dates), path.name


def test_utf8_sequence_cut_short_is_dropped_not_mojibake():
    text, _ = decode_bytes(b"made.\xe2\x80? Good \xe2\x80\x94 fine")
    assert text == "made.? Good — fine"
