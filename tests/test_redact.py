import re

import pytest
from conftest import shared_path
from hypothesis import given
from hypothesis import strategies as st

from personagen.io.blogs import read_blog_file
from personagen.text.redact import PATTERNS, redact


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # Shapes taken from real posts of the Blog Authorship Corpus (numbers changed).
        (
            "My yahoo addres is abc10ca@yahoo.ca Bye for now.",
            "My yahoo addres is [EMAIL] Bye for now.",
        ),
        (
            "Phone : 847-555-0908 Email : stick@aol.com Shipment",
            "Phone : [PHONE] Email : [EMAIL] Shipment",
        ),
        (
            "or call Paul at 090-5300-2651 Tokyo Arts Forum",
            "or call Paul at [PHONE] Tokyo Arts Forum",
        ),
        ("CSW on +44 (0) 20 8329 0045 or email", "CSW on [PHONE] or email"),
        ("at work, (202) 555-6979. Best wishes", "at work, [PHONE]. Best wishes"),
        ("that number is 301 555 6359, haha", "that number is [PHONE], haha"),
        ("Visitors to Baio's site, www.waxy.org, began", "Visitors to Baio's site, [URL], began"),
        ("from http://www.snopes.com/holidays/physics.asp I'm", "from [URL] I'm"),
        ("see example.com/path/page.html now", "see [URL] now"),
        ("the poem. @maggie_j: i hate you.", "the poem. [HANDLE]: i hate you."),
        ("mail ur comments to mihir@spymac.com will", "mail ur comments to [EMAIL] will"),
    ],
)
def test_redacts_real_shapes(text, expected):
    assert redact(text)[0] == expected


@pytest.mark.parametrize(
    "text",
    [
        "on 2004-02-16 at 12:30 we met",
        "scores 141 148 154 170 174 178 LVT",
        "paid $1,234,567 for 3 cars in 1999",
        "zip code 60048 USA, room 12.30",
        "ISBN 978-3-16-148410-0",
        "I am 5'11 and weigh 170 lbs",
        "just a normal sentence. Really.",
    ],
)
def test_leaves_numbers_and_dates_alone(text):
    assert redact(text)[0] == text


def test_types_are_configurable_and_counted():
    text = "mail me@x.org or see http://x.org or call 555-123-4567 @bob"
    only_email, counts = redact(text, ["email"])
    assert only_email == "mail [EMAIL] or see http://x.org or call 555-123-4567 @bob"
    assert counts == {"email": 1}
    _, all_counts = redact(text)
    assert all_counts == {"email": 1, "url": 1, "phone": 1, "handle": 1}


@given(
    user=st.from_regex(r"[a-z][a-z0-9._]{0,12}[a-z0-9]", fullmatch=True),
    host=st.from_regex(r"[a-z]{2,10}\.(com|org|net|de)", fullmatch=True),
    before=st.text(alphabet=st.characters(whitelist_categories=("L", "Zs")), max_size=30),
)
def test_no_email_survives(user, host, before):
    text = f"{before} {user}@{host} end"
    redacted, _ = redact(text)
    assert f"{user}@{host}" not in redacted
    assert "[EMAIL]" in redacted


@pytest.mark.shared_data
def test_no_pii_pattern_survives_in_real_posts():
    folder = shared_path("blogs", "blogs")
    names = [
        "106651.male.25.indUnk.Leo.xml",
        "1031806.male.17.Technology.Sagittarius.xml",
        "1157144.female.17.Student.Libra.xml",
        "1335479.male.37.Religion.Cancer.xml",
    ]
    seen = 0
    for name in names:
        for post in read_blog_file(folder / name).posts:
            redacted, counts = redact(post["text"])
            seen += sum(counts.values())
            assert not PATTERNS["email"].search(redacted)
            assert not re.search(r"https?://", redacted)
    assert seen > 20
