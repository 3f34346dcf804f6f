"""`oasis`: agent profiles for CAMEL-AI's OASIS (`camel-oasis` on PyPI), both platforms.

The fields are those OASIS 0.2.5's loaders read (`oasis/social_agent/agents_generator.py`):

- `reddit_profiles.json` for `generate_reddit_agent_graph` / `generate_reddit_agents`: a JSON
  list of objects with `realname`, `username`, `bio`, `persona`, `age`, `gender`, `mbti` and
  `country` (the Reddit system prompt states all of them);
- `twitter_profiles.csv` for `generate_twitter_agent_graph` / `generate_agents`: columns
  `name`, `username`, `description`, `user_char`, `following_agentid_list` and
  `previous_tweets` (Python list literals, read with `ast.literal_eval`; empty here).

The persona's narrative is its `persona` / `user_char` (the profile the agent plays), and its
first sentence the public `bio` / `description`. OASIS wants an MBTI type, which personas do not
have: it is read off the measured Big Five by the correspondence McCrae & Costa (1989) found
(E/I from extraversion, N/S openness, F/T agreeableness, J/P conscientiousness; above the scale
midpoint 3 = the first letter), so the prompt does not contradict the traits. Every profile also
carries `persona_id`, the five traits, the instrument and the weight (OASIS ignores fields it does
not read), so the simulation's agents can be joined back to the bank.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any

import pyarrow as pa

from personagen.exports.sets import ExportSource, agent_names, joinable

REDDIT_FILE = "reddit_profiles.json"
TWITTER_FILE = "twitter_profiles.csv"
BIO_CHARS = 160
MBTI_AXES = (
    ("extraversion", "E", "I"),
    ("openness", "N", "S"),
    ("agreeableness", "F", "T"),
    ("conscientiousness", "J", "P"),
)
MIDPOINT = 3.0


def write(rows: pa.Table, path: Path, source: ExportSource) -> None:
    """A folder with the Reddit-style JSON profiles and the Twitter-style CSV."""
    path.mkdir()
    reddit, twitter = [], []
    for name, row in zip(agent_names(rows.num_rows), rows.to_pylist(), strict=True):
        attributes = row["attributes"] or {}
        handle = name.lower().replace(" ", "_")
        bio = first_sentence(row["narrative"])
        extra = joinable(row)
        reddit.append(
            {
                "realname": name,
                "username": handle,
                "bio": bio,
                "persona": row["narrative"],
                "age": attributes.get("age_range"),
                "gender": attributes.get("gender"),
                "mbti": mbti(row),
                "country": attributes.get("location"),
                **extra,
            }
        )
        twitter.append(
            {
                "name": name,
                "username": handle,
                "description": bio,
                "user_char": row["narrative"],
                "following_agentid_list": "[]",
                "previous_tweets": "[]",
                **extra,
            }
        )
    (path / REDDIT_FILE).write_text(
        json.dumps(reddit, ensure_ascii=False, indent=1), encoding="utf-8"
    )
    with (path / TWITTER_FILE).open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(twitter[0]))
        writer.writeheader()
        writer.writerows(
            {k: "" if v is None else v for k, v in profile.items()} for profile in twitter
        )


def first_sentence(text: str) -> str:
    """The narrative's first sentence, cut at a word before BIO_CHARS."""
    sentence = re.split(r"(?<=[.!?])\s", text.strip(), maxsplit=1)[0]
    if len(sentence) <= BIO_CHARS:
        return sentence
    return sentence[:BIO_CHARS].rsplit(" ", 1)[0] + "…"


def mbti(traits: dict[str, Any]) -> str:
    """The MBTI type the Big Five point to (see the module docstring)."""
    return "".join(high if traits[trait] > MIDPOINT else low for trait, high, low in MBTI_AXES)
