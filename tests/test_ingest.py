import json
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import shared_path
from hypothesis import given
from hypothesis import strategies as st

from personagen.commands.ingest import ingest
from personagen.config import load_config
from personagen.errors import PersonagenError
from personagen.io.histories import read_histories
from personagen.runtime.ingest import READ_TASK_BYTES, read_blocks
from personagen.text.redact import PATTERNS

pytestmark = pytest.mark.usefixtures("ray_local")


def errors_of(out):
    return [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]


@pytest.mark.shared_data
def test_all_shared_blog_files_ingest_without_failures(tmp_path):
    src = shared_path("blogs", "blogs")
    summary = ingest(load_config(), src, tmp_path)
    c = summary.counts
    assert c["files_found"] == c["files_read"] == len(list(src.glob("*.xml")))
    assert c["files_failed"] == 0 and c["records_failed"] == 0
    assert c["users_with_history"] == c["files_read"]
    assert c["posts_read"] == (
        c["posts_empty"]
        + c["posts_in_windows"]
        + c["posts_outside_windows"]
        + c["posts_of_skipped_users"]
    )
    table = read_histories(tmp_path)
    assert table.num_rows == c["windows"]
    assert len(set(table.column("history_id").to_pylist())) == table.num_rows
    assert table.schema.field("age").type == pa.int32()
    assert set(table.column("gender").to_pylist()) == {"male", "female"}
    assert max(table.column("n_tokens").to_pylist()) <= 3000
    texts = [p["text"] for posts in table.column("posts").to_pylist() for p in posts]
    assert not any(PATTERNS["email"].search(t) for t in texts)
    assert json.loads((tmp_path / "summary.json").read_text())["counts"]["files_read"] == 2000


def write_jsonl(path, rows, extra=b""):
    path.write_bytes(b"".join(json.dumps(r).encode() + b"\n" for r in rows) + extra)


def test_jsonl_posts_grouped_across_files_and_bad_lines_recorded(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    write_jsonl(
        src / "a.jsonl",
        [
            {"user_id": "u1", "date": "2020-01-02", "text": "second post", "country": "JP"},
            {"user_id": "u2", "text": "only post of u2, mail me at a@b.com", "age": 31},
            {"user_id": "u1", "date": "2020-01-01", "text": "first post", "country": "JP"},
        ],
        extra=b'{"user_id": "u3", "text": broken json\n[1, 2]\n{"text": "no user"}\n',
    )
    write_jsonl(
        src / "b.jsonl",
        [
            {
                "user_id": "u1",
                "posts": [{"date": "2020-01-03", "text": "third post, in another file"}],
            },
            {"user_id": "u4", "text": "   "},
            {"user_id": "u5", "posts": []},
        ],
    )
    (src / "binary.jsonl").write_bytes(b"\x00\x01\x02\xff" * 100)
    (src / "empty.jsonl").write_bytes(b"")
    out = tmp_path / "out"
    summary = ingest(load_config(), src, out)
    c = summary.counts
    assert (c["files_found"], c["files_read"], c["files_failed"]) == (4, 3, 1)
    assert c["records_failed"] == 4
    assert c["users_with_history"] == 2 and c["users_skipped"] == 1  # u4 has only an empty post
    assert c["posts_empty"] == 1
    table = read_histories(out).sort_by("user_id")
    rows = table.to_pylist()
    assert [r["user_id"] for r in rows] == ["u1", "u2"]
    assert [p["text"] for p in rows[0]["posts"]] == [
        "first post",
        "second post",
        "third post, in another file",
    ]
    assert rows[0]["country"] == "JP"
    assert rows[1]["age"] == "31"  # generic metadata is carried as strings
    assert "[EMAIL]" in rows[1]["posts"][0]["text"]
    errors = errors_of(out)
    assert len(errors) == 5
    reasons = " | ".join(e["reason"] for e in errors)
    assert "malformed JSON" in reasons and "expected a JSON object" in reasons
    assert "'posts' is empty" in reasons
    assert "missing user_id" in reasons and "binary content" in reasons


def test_per_user_rows_windows_strategy_and_parquet(tmp_path):
    posts = [{"date": f"2021-01-{d:02d}", "text": "word " * 300} for d in range(1, 21)]
    plain = [{"date": None, "text": "plain post"}]
    table = pa.table({"user_id": ["p1", "p2"], "posts": [posts, plain], "region": ["europe", None]})
    pq.write_table(table, tmp_path / "users.parquet")
    cfg = load_config(
        overrides=[
            "ingest.window.strategy=windows",
            "ingest.window.max_tokens=1000",
            "ingest.window.max_windows=3",
        ]
    )
    out = tmp_path / "out"
    summary = ingest(cfg, tmp_path / "users.parquet", out)
    histories = read_histories(out)
    ids = sorted(histories.column("history_id").to_pylist())
    assert ids == ["p1/0", "p1/1", "p1/2", "p2/0"]
    assert summary.counts["posts_outside_windows"] == 20 - sum(
        r["n_posts"] for r in histories.to_pylist() if r["user_id"] == "p1"
    )
    newest = max(
        (r for r in histories.to_pylist() if r["user_id"] == "p1"), key=lambda r: r["window_id"]
    )
    assert newest["posts"][-1]["date"] == "2021-01-20"


def test_broken_blog_files_are_recorded_and_do_not_stop_the_run(tmp_path):
    src = tmp_path / "blogs"
    src.mkdir()
    good = b"<Blog>\n<date>01,May,2004</date>\n<post>\n  Hello &amp; welcome.\n</post>\n</Blog>"
    (src / "1.female.20.Arts.Leo.xml").write_bytes(good)
    (src / "2.male.30.indUnk.Aries.xml").write_bytes(good[:60])  # truncated mid-post
    (src / "3.male.40.Arts.Leo.xml").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00binary")
    (src / "4.female.50.Arts.Leo.xml").write_bytes(b"")
    (src / "readme.xml").write_bytes(good)
    out = tmp_path / "out"
    summary = ingest(load_config(), src, out)
    assert summary.counts["files_found"] == 5
    assert summary.counts["files_read"] == 2 and summary.counts["files_failed"] == 3
    assert sorted(read_histories(out).column("user_id").to_pylist()) == ["1", "2"]
    failed = {e["path"].rsplit("/", 1)[1] for e in errors_of(out)}
    assert failed == {"3.male.40.Arts.Leo.xml", "4.female.50.Arts.Leo.xml", "readme.xml"}


def test_rerun_replaces_the_previous_output(tmp_path):
    src = tmp_path / "a.jsonl"
    write_jsonl(src, [{"user_id": "u1", "text": "hello"}])
    out = tmp_path / "out"
    ingest(load_config(), src, out)
    ingest(load_config(), src, out)
    assert read_histories(out).num_rows == 1


def test_input_errors(tmp_path):
    with pytest.raises(PersonagenError, match="input not found"):
        ingest(load_config(), tmp_path / "missing", tmp_path / "out")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(PersonagenError, match="no input files"):
        ingest(load_config(), tmp_path, tmp_path / "out")
    with pytest.raises(PersonagenError, match="no histories"):
        read_histories(tmp_path)
    shutil.rmtree(tmp_path)


@given(
    sizes=st.lists(st.integers(0, 64 * 2**20), min_size=1, max_size=300),
    cpus=st.integers(1, 64),
)
def test_read_tasks_keep_the_cpus_busy_and_their_input_bounded(sizes, cpus):
    blocks = read_blocks(sizes, cpus)
    assert min(len(sizes), 4 * cpus) <= blocks <= len(sizes)
    assert blocks == len(sizes) or sum(sizes) / blocks <= READ_TASK_BYTES


def test_read_tasks_grow_with_a_large_input_only():
    assert read_blocks([45_000] * 2000, cpus=2) == 8  # the blog corpus (88 MB): as many as before
    assert read_blocks([18 * 2**20] * 30, cpus=2) == 30  # 30k users as Parquet: one file each
    assert read_blocks([18 * 2**20] * 300, cpus=2) == 300
