"""Grouping a user's posts inside the read tasks (issue 13, item 2): which users span read tasks,
and that a user spanning files gets one history, the same one the group-by path makes."""

import json
import random
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from personagen.commands.ingest import ingest
from personagen.config import load_config
from personagen.io.histories import read_histories
from personagen.stages import ingest as ingest_stage
from personagen.stages.ingest import (
    INGEST_ROWS,
    finish_parts,
    read_parts,
    spanning_keys,
    split_for_sink,
    user_key,
    user_keys,
)
from personagen.stages.ingest import (
    read_histories as read_task_histories,
)

CFG = load_config().ingest
POST = "I wrote about my garden today, the tomatoes are late again this year."


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def spread_input(folder):
    """Posts as JSONL, u1 in three files (two posts on one day in different files, an undated
    post, metadata in two files), u2 and u3 in one file each."""
    folder.mkdir()
    write_jsonl(
        folder / "a.jsonl",
        [
            {"user_id": "u1", "date": "2020-01-02", "text": f"a1 {POST}", "country": "JP"},
            {"user_id": "u2", "date": "2020-01-01", "text": f"u2 mail me at a@b.com {POST}"},
            {"user_id": "u1", "date": "2020-01-05", "text": f"a2 {POST}"},
        ],
    )
    write_jsonl(
        folder / "b.jsonl",
        [
            {"user_id": "u1", "date": "2020-01-02", "text": f"b1 {POST}", "city": "Kyoto"},
            {"user_id": "u1", "text": f"b2 undated {POST}"},
            {"user_id": "u1", "date": "2020-01-01", "text": "   "},
        ],
    )
    write_jsonl(
        folder / "c.jsonl",
        [
            {"user_id": "u3", "date": "2021-03-01", "text": f"u3 {POST}"},
            {"user_id": "u1", "date": "2020-01-03", "text": f"c1 {POST}", "country": "FR"},
        ],
    )
    return sorted(folder.glob("*.jsonl"))


def task(paths, first=0):
    return pa.Table.from_pylist([{"paths": [str(p) for p in paths], "first": first}])


def histories_of(tables):
    """(history rows sorted by id, the counts) of blocks, as the sink makes them."""
    parts, counts = [], Counter()
    for table in tables:
        histories, block_counts, _ = split_for_sink(table, None)
        parts += [histories] if histories is not None else []
        counts.update(block_counts)
    histories = pa.concat_tables(parts, promote_options="permissive").sort_by("history_id")
    return histories.to_pylist(), +counts


def test_user_spanning_files_merged_in_a_read_task_as_the_group_by_merges_it(tmp_path):
    files = spread_input(tmp_path / "src")
    local = histories_of(read_task_histories(task(files), "jsonl", CFG))

    # the group-by path: every file its own read task, every user as parts, the parts of a
    # user arriving in any order (as a shuffle delivers them)
    part_rows = pa.concat_tables(
        read_parts(task([f], first=i), "jsonl", records=True) for i, f in enumerate(files)
    ).to_pylist()
    random.Random(3).shuffle(part_rows)
    by_user: dict[str, list] = {}
    for row in part_rows:
        by_user.setdefault(row["user_id"], []).append(row)
    grouped = [
        finish_parts(pa.Table.from_pylist(g, schema=INGEST_ROWS), CFG) for g in by_user.values()
    ]
    shuffled = histories_of(grouped)

    assert local == shuffled
    rows, counts = local
    assert [r["user_id"] for r in rows] == ["u1", "u2", "u3"]  # one history each
    u1 = rows[0]
    # input order breaks ties (a1 before b1), an undated post follows its predecessor (b2)
    assert [p["text"].split()[0] for p in u1["posts"]] == ["a1", "b1", "b2", "c1", "a2"]
    assert (u1["country"], u1["city"]) == ("FR", "Kyoto")  # the later file's value wins
    assert u1["source"].endswith("a.jsonl (+2)")
    assert counts["posts_read"] == 8 and counts["posts_empty"] == 1
    assert counts["users_with_history"] == 3 and counts["files_read"] == 3
    assert "[EMAIL]" in rows[1]["posts"][0]["text"]


def test_a_read_task_yields_its_users_in_blocks_that_add_up(tmp_path, monkeypatch):
    files = spread_input(tmp_path / "src")
    whole = histories_of(read_task_histories(task(files), "jsonl", CFG))
    monkeypatch.setattr(ingest_stage, "USERS_PER_BLOCK", 2)
    blocks = list(read_task_histories(task(files), "jsonl", CFG))
    assert len(blocks) == 2  # 3 users
    assert histories_of(blocks) == whole


def test_read_histories_leaves_spanning_users_to_the_group_by(tmp_path):
    files = spread_input(tmp_path / "src")
    spanning = np.array([user_key("u1")], np.uint64)
    rows, counts = histories_of(read_task_histories(task(files[:2]), "jsonl", CFG, spanning))
    assert [r["user_id"] for r in rows] == ["u2"]
    assert counts["files_read"] == 2  # the files are counted here, the user where it is merged
    parts = read_parts(task(files[:2]), "jsonl", spanning).to_pylist()
    assert [(p["kind"], p["user_id"]) for p in parts] == [("part", "u1"), ("counts", "")]
    assert json.loads(parts[1]["payload"]) == {}  # no file counted twice


def test_detection_on_grouped_and_ungrouped_inputs(tmp_path):
    # sharded by user (each user in one file): nothing spans
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    for shard in range(3):
        users = [f"s{shard}-{i}" for i in range(4)]
        pq.write_table(
            pa.table({"user_id": users, "posts": [[{"date": None, "text": POST}]] * 4}),
            sharded / f"users-{shard}.parquet",
        )
    files = [str(p) for p in sorted(sharded.glob("*.parquet"))]
    keys = [user_keys([f], "parquet") for f in files]
    assert [len(k) for k in keys] == [4, 4, 4]
    assert len(spanning_keys(keys)) == 0
    # two files of one task hold one user: still nothing spans tasks
    assert len(spanning_keys([user_keys(files[:2], "parquet"), keys[2]])) == 0

    # a few users in two files: only they span
    files = [str(p) for p in spread_input(tmp_path / "spread")]
    keys = [user_keys([f], "jsonl") for f in files]
    assert set(spanning_keys(keys).tolist()) == {user_key("u1")}

    # sharded by time (every user in every file): one group-by of everything
    assert spanning_keys([keys[0], keys[0], keys[0]]) is None

    # blog files: the ids are in the names
    blogs = tmp_path / "blogs"
    names = ["x/7.male.30.Arts.Leo.xml", "y/7.male.30.Arts.Leo.xml", "y/8.female.20.Arts.Leo.xml"]
    for name in names:
        (blogs / name).parent.mkdir(parents=True, exist_ok=True)
        (blogs / name).write_text("<Blog><date>01,May,2004</date><post>hello</post></Blog>")
    keys = [user_keys([str(blogs / name)], "blogs-xml") for name in names]
    assert spanning_keys(keys).tolist() == [user_key("7")]


@pytest.mark.usefixtures("ray_local")
@pytest.mark.parametrize("fmt", ["jsonl", "blogs-xml"])
def test_auto_gives_the_histories_of_the_group_by_of_everything(tmp_path, fmt):
    if fmt == "jsonl":
        src = tmp_path / "src"
        spread_input(src)
    else:  # one blogger in two folders of the corpus, one in one
        src = tmp_path / "blogs"
        for folder, dates in (("x", ("01,May,2004", "03,May,2004")), ("y", ("02,May,2004",))):
            (src / folder).mkdir(parents=True)
            body = "".join(f"<date>{d}</date><post>{folder} {d} {POST}</post>" for d in dates)
            (src / folder / "7.male.30.Arts.Leo.xml").write_text(f"<Blog>{body}</Blog>")
        (src / "y" / "8.female.20.indUnk.Aries.xml").write_text(
            f"<Blog><date>01,May,2004</date><post>{POST}</post></Blog>"
        )
    outputs = {}
    for grouped in ("auto", "false"):
        cfg = load_config(overrides=[f"ingest.grouped={grouped}"])
        summary = ingest(cfg, src, tmp_path / grouped)
        table = read_histories(tmp_path / grouped).sort_by("history_id")
        outputs[grouped] = (table.to_pylist(), summary.counts["posts_in_windows"])
    assert outputs["auto"] == outputs["false"]
    users = [r["user_id"] for r in outputs["auto"][0]]
    assert len(users) == len(set(users))  # never two partial histories of one user
    if fmt == "blogs-xml":
        seven = outputs["auto"][0][0]
        assert [p["date"] for p in seven["posts"]] == ["2004-05-01", "2004-05-02", "2004-05-03"]
        assert seven["age"] == 30
