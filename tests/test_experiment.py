"""`personagen experiment`: the experiment file's checks, and the bundled example end to end."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from browser import assert_renders
from click.testing import CliRunner
from conftest import ROOT, shared_path
from llm_test_server import Faults, LLMTestServer
from synthetic import embed_and_index, stub_llm_sets, write_scored_bank

from personagen.cli import cli
from personagen.commands.experiment import experiment
from personagen.commands.experiment_spec import load_spec, resolve
from personagen.config import Config
from personagen.errors import PersonagenError
from personagen.evaluate.metrics import HEADLINE

EXAMPLE = ROOT / "examples" / "experiment.yaml"
MINIMAL = {
    "references": [{"name": "global", "reference": "builtin:global"}],
    "banks": {"b": {"path": "bank"}},
    "sets": [{"name": "all", "bank": "b"}],
}


def write_spec(tmp_path: Path, **changes) -> Path:
    spec = {**MINIMAL, **changes}
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"sets": [{"name": "x", "bank": "nowhere"}]}, "unknown bank 'nowhere'"),
        ({"banks": {"b": {"baseline": "llm-personas"}}}, "a baseline bank needs n"),
        ({"banks": {"b": {"path": "a", "build": "bundled"}}}, "exactly one of path, build"),
        ({"banks": {"b": {"baseline": "random", "n": 3}}}, "`from` names the bank"),
        ({"baseline": "gpt-4o"}, "baseline 'gpt-4o' is not one of the sets"),
        ({"sets": [{"name": "a", "bank": "b", "select": "adapt"}]}, "`query` goes with"),
        ({"sets": [{"name": "a", "bank": "b"}, {"name": "a", "bank": "b"}]}, "must differ: a"),
        ({"sets": [{"name": "a", "bank": "b", "references": ["mars"]}]}, "unknown references"),
        ({"n": 1}, "n: Input should be greater than or equal to 2"),
        ({"colour": "blue"}, "colour: Extra inputs are not permitted"),
    ],
)
def test_the_experiment_file_is_checked_with_the_key_named(tmp_path, changes, message):
    with pytest.raises(PersonagenError, match=r"^experiment file ") as error:
        load_spec(write_spec(tmp_path, **changes))
    assert message in str(error.value)


def test_paths_are_read_from_the_experiment_files_folder(tmp_path):
    spec, folder = load_spec(write_spec(tmp_path))
    assert spec.n == 100 and spec.banks["b"].path == "bank"
    assert folder == tmp_path.resolve()
    assert resolve(folder, "bank") == str(folder / "bank")
    assert resolve(folder, "spi:data/spi.csv") == f"spi:{folder / 'data/spi.csv'}"
    assert resolve(folder, "builtin:east-asia") == "builtin:east-asia"
    assert resolve(folder, "ipip-50") == "ipip-50" and resolve(folder, "bundled") == "bundled"
    assert resolve(folder, "/abs/bank") == "/abs/bank"
    (tmp_path / "bad.yaml").write_text("sets: [unclosed")
    with pytest.raises(PersonagenError, match="is not YAML"):
        load_spec(tmp_path / "bad.yaml")


@pytest.mark.slow
@pytest.mark.shared_data
def test_the_bundled_example_runs_end_to_end(ray_local, tmp_path):
    """examples/experiment.yaml as shipped, its held-out data where the tests keep it, against
    the stub server (the embedded model's run is in benchmarks/RESULTS.md)."""
    spi = shared_path("ipip", "sapa-spi")
    spec = yaml.safe_load(EXAMPLE.read_text())
    spec["held_out"] = {"instrument": f"spi:{spi}", "reference": f"spi:{spi / 'spi.csv'}"}
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = tmp_path / "out"
    with LLMTestServer(Faults(seed=4)) as server:
        sets = [*stub_llm_sets(server), "progress_s=5"]
        args = [
            "experiment",
            str(path),
            "--out",
            str(out),
            *[a for s in sets for a in ("--set", s)],
        ]
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, result.output
        report = json.loads((out / "report.json").read_text())
        requests = len(server.records())

        # a re-run asks nothing: every step resumes from the banks
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, result.output
        assert len(server.records()) == requests

    names = [s["name"] for s in spec["sets"]]
    table = report["references"]["global"]
    assert list(table["sets"]) == names and table["baseline"] == "llm-personas"
    assert report["info"]["held_out_instrument"] == "sapa-spi-135-big5"
    assert table["n_held_out_reference"] > 3000
    for name, row in table["sets"].items():
        n = row["n"]
        assert n == 8, name
        assert row["in_distribution"]["x_floor"]["energy"] > 0
        assert row["held_out"]["n"] == 8 and row["held_out"]["x_floor"]["energy"] > 0
        assert 0 <= row["diversity"]["coverage"] <= 1
        assert 0 <= row["diversity"]["uniformity"] <= 1
    baseline = table["sets"]["llm-personas"]
    assert baseline["in_distribution"]["reduction_pct"] == dict.fromkeys(HEADLINE, 0.0)
    assert table["sets"]["no-persona"]["narratives"] is None  # the bare model has none
    assert 1 <= table["sets"]["mined-random"]["narratives"]["vendi"] <= 8
    for method in ("is", "ot", "is+ot"):
        aligned = out / "sets" / f"aligned-{method}" / "global"
        assert (aligned / "personas.parquet").is_file() and (aligned / "report.html").is_file()

    page = (out / "report.html").read_text()
    assert all(name in page for name in names) and page.count("data:image/png;base64,") == 1
    assert_renders(out / "report.html", tmp_path / "browser", figures=1)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["experiment_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    origins = {name: bank["origin"] for name, bank in manifest["banks"].items()}
    assert origins == {
        "mined": "mined",
        "written": "baseline:llm-personas",
        "bare": "baseline:no-persona",
    }


@pytest.mark.slow
def test_existing_banks_with_aligned_and_adapted_sets_need_no_llm(tmp_path):
    """A scored, embedded bank used where it is: every select kind, one reference restricted to
    a set, and no LLM anywhere (the bank is scored; adaptation without revision)."""
    bank = tmp_path / "bank"
    write_scored_bank(bank, 120)
    embed_and_index(bank)
    spec = {
        "n": 10,
        "references": [
            {"name": "global", "reference": "builtin:global"},
            {"name": "east-asia", "reference": "builtin:east-asia"},
        ],
        "banks": {"b": {"path": "bank"}},
        "sets": [
            {"name": "everyone", "bank": "b"},
            {"name": "drawn", "bank": "b", "select": "random"},
            {"name": "aligned", "bank": "b", "select": "align", "method": "ot"},
            {
                "name": "adapted",
                "bank": "b",
                "select": "adapt",
                "query": "a nurse who likes hiking",
                "references": ["east-asia"],
            },
        ],
        "baseline": "drawn",
        "settings": {"adapt.revise": False, "adapt.filters": [], "adapt.k": 40},
    }
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(spec))
    summary = experiment(Config(), path, tmp_path / "out")
    report = summary.outputs["report"]["references"]
    assert list(report["global"]["sets"]) == ["everyone", "drawn", "aligned"]
    assert list(report["east-asia"]["sets"]) == ["everyone", "drawn", "aligned", "adapted"]
    assert report["global"]["sets"]["everyone"]["n"] == 120
    for table in report.values():
        drawn = table["sets"]["drawn"]["in_distribution"]["reduction_pct"]
        assert drawn == dict.fromkeys(HEADLINE, 0.0)
        assert all(row["held_out"] is None for row in table["sets"].values())
        assert all(row["narratives"]["vendi"] > 1 for row in table["sets"].values())
    adapted = pq.read_table(
        tmp_path / "out" / "sets" / "adapted" / "east-asia" / "personas.parquet"
    )
    assert adapted.num_rows == 10
    assert (tmp_path / "out" / "sets" / "aligned" / "global" / "report.json").is_file()
    assert not (tmp_path / "out" / "banks").exists(), "a path bank is used where it is"
