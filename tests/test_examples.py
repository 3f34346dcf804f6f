"""The bundled example histories meet the demo's contract and ingest cleanly."""

import json
from collections import Counter, defaultdict

import pytest

from personagen.commands.demo import example_histories
from personagen.commands.ingest import ingest
from personagen.config import load_config
from personagen.io.histories import read_histories


def test_examples_have_enough_varied_users():
    rows = [json.loads(line) for line in example_histories().read_text().splitlines()]
    posts = Counter(r["user_id"] for r in rows)
    assert len(posts) >= 24
    assert min(posts.values()) >= 15
    meta = defaultdict(set)
    for r in rows:
        meta[r["user_id"]].add((r["gender"], r["age"], r["country"], r["occupation"]))
    assert all(len(v) == 1 for v in meta.values()), "metadata differs between a user's posts"
    assert len({next(iter(v))[2] for v in meta.values()}) >= 8  # countries
    ages = [next(iter(v))[1] for v in meta.values()]
    assert min(ages) < 20 and max(ages) > 65


@pytest.mark.usefixtures("ray_local")
def test_examples_ingest_without_failures(tmp_path):
    summary = ingest(load_config(), example_histories(), tmp_path)
    assert summary.counts["files_failed"] == 0 and summary.counts["records_failed"] == 0
    assert summary.counts["users_with_history"] >= 24
    assert summary.counts["redacted_email"] >= 1 and summary.counts["redacted_phone"] >= 1
    assert read_histories(tmp_path).num_rows == summary.counts["windows"]
