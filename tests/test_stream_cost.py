"""What makes the build's stream cheaper (issue 13, item 3) keeps its results: token counts
recounted only where redaction changed a post, bank writes bundled over several blocks."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from personagen.config import load_config
from personagen.runtime.sinks import PartSink
from personagen.stages.ingest import read_histories, split_for_sink
from personagen.text.windowing import count_tokens


def test_history_tokens_are_those_of_the_redacted_posts(tmp_path):
    posts = [
        {"date": f"2020-01-{d:02d}", "text": text}
        for d, text in enumerate(
            [
                "Write to me at someone.long.name@example.com or call 555-123-4567 tonight.",
                "Nothing private here, just a walk in the park with the dog.",
                "My page is www.example.com/about-me and @handle_here on the site.",
            ],
            start=1,
        )
    ]
    pq.write_table(pa.table({"user_id": ["u1"], "posts": [posts]}), tmp_path / "u.parquet")
    batch = pa.Table.from_pylist([{"paths": [str(tmp_path / "u.parquet")], "first": 0}])
    histories, counts, _ = split_for_sink(
        pa.concat_tables(read_histories(batch, "parquet", load_config().ingest)), None
    )
    row = histories.to_pylist()[0]
    assert counts["redacted_email"] == counts["redacted_url"] == 1
    assert row["n_tokens"] == sum(count_tokens(p["text"]) for p in row["posts"])


@pytest.mark.usefixtures("ray_local")
def test_bank_writes_take_several_blocks_at_once(tmp_path):
    import ray

    def split(table):
        return {"": table}, {"rows": table.num_rows}, []

    rows = pa.table({"persona_id": [f"p{i}" for i in range(40)], "x": list(range(40))})
    blocks = ray.data.from_arrow(rows).repartition(target_num_rows_per_block=4)
    sink = PartSink(tmp_path, split, "test", min_rows=16)
    blocks.write_datasink(sink)
    parts = list(tmp_path.glob("*.parquet"))
    assert sink.counts["rows"] == 40
    assert 2 <= len(parts) <= 3  # 10 blocks of 4 rows: writes of 16, 16 and 8 rows
    written = pa.concat_tables(pq.read_table(p) for p in parts)
    assert sorted(written.column("x").to_pylist()) == list(range(40))
