"""`personagen align` end to end on small inputs: a bank, a Parquet file, and each bad input."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from personagen import TRAITS
from personagen.cli import cli
from personagen.io.bank import GROUPS, write_group


def _traits(rng, rows, shift=0.0):
    return np.clip(rng.normal(3.2 + shift, 0.6, (rows, 5)), 1, 5)


def _reference(path, rng, rows=600, **extra):
    y = _traits(rng, rows)
    pq.write_table(pa.table({**{t: y[:, j] for j, t in enumerate(TRAITS)}, **extra}), path)
    return path


def _personas(path, rng, rows=300, ids=None, x=None, **extra):
    x = _traits(rng, rows, shift=0.3) if x is None else x
    ids = ids or [f"p{i}" for i in range(rows)]
    pq.write_table(
        pa.table({"persona_id": ids, **{t: x[:, j] for j, t in enumerate(TRAITS)}, **extra}), path
    )
    return path


def _bank(folder, rng, rows=240):
    ids = [f"u{i}/0" for i in range(rows)]
    personas = pa.table(
        {
            name: pa.nulls(rows, field.type)
            for name, field in ((f.name, f) for f in GROUPS["personas"])
        }
    ).set_column(0, "persona_id", pa.array(ids))
    write_group(folder, "personas", personas)
    scored = ids[:-10]
    x = _traits(rng, len(scored), shift=0.3)
    flags = [["all_same_answer"] if i % 20 == 0 else [] for i in range(len(scored))]
    scores = {
        name: pa.nulls(len(scored), f.type) for name, f in ((f.name, f) for f in GROUPS["scores"])
    }
    scores.update({"persona_id": pa.array(scored), "score_flags": pa.array(flags)})
    scores.update({t: pa.array(x[:, j]) for j, t in enumerate(TRAITS)})
    write_group(folder, "scores", pa.table(scores))
    quality = {name: pa.nulls(rows, f.type) for name, f in ((f.name, f) for f in GROUPS["quality"])}
    quality.update(
        {"persona_id": pa.array(ids), "kept": pa.array([i % 12 != 5 for i in range(rows)])}
    )
    write_group(folder, "quality", pa.table(quality))
    return folder


def _run(*args):
    return CliRunner().invoke(cli, ["align", *map(str, args)], catch_exceptions=False)


def test_align_a_bank_end_to_end(tmp_path):
    rng = np.random.default_rng(0)
    bank = _bank(tmp_path / "bank", rng)
    ref = _reference(tmp_path / "ref.parquet", rng)
    out = tmp_path / "out"
    result = _run(
        "--personas", bank, "--reference", ref, "--n", 80, "--out", out, "--exclude-flagged"
    )
    assert result.exit_code == 0, result.output
    chosen = pq.read_table(out / "personas.parquet")
    weights = pq.read_table(out / "weights.parquet")
    report = json.loads((out / "report.json").read_text())
    counts = report["info"]["counts"]
    assert counts["read"] == 240 and counts["unscored"] == 10
    assert counts["not_kept"] == 20 - sum(1 for i in range(230, 240) if i % 12 == 5)
    assert counts["flagged"] == 12  # scored ids 0, 20, ..., 220; all kept (i % 12 != 5)
    assert (
        counts["candidates"]
        == counts["read"] - counts["unscored"] - counts["not_kept"] - counts["flagged"]
    )
    assert chosen.num_rows == 80 and len(set(chosen["persona_id"].to_pylist())) == 80
    assert {"narrative", "quality", "kept", "score_flags", *TRAITS} <= set(chosen.column_names)
    assert all(k is not False for k in chosen["kept"].to_pylist())
    assert all(not f for f in chosen["score_flags"].to_pylist())
    assert weights.num_rows == counts["candidates"]
    assert sum(weights["weight"].to_pylist()) == pytest.approx(1.0)
    assert sum(weights["chosen"].to_pylist()) == 80
    assert report["info"]["method"] == "ot" and "benchmark" in report["info"]["method_reason"]
    assert (out / "report.html").read_text().startswith("<!")
    after = report["sets"]["after"]["metrics"]["energy"]
    before = report["sets"]["before"]["metrics"]["energy"]
    assert after < before


@pytest.mark.parametrize("method", ["is", "is+ot"])
def test_align_parquet_with_replace_and_other_methods(tmp_path, method):
    rng = np.random.default_rng(1)
    personas = _personas(tmp_path / "p.parquet", rng, rows=60)
    ref = _reference(tmp_path / "ref.parquet", rng)
    out = tmp_path / "out"
    result = _run(
        "--personas",
        personas,
        "--reference",
        ref,
        "--n",
        100,
        "--out",
        out,
        "--replace",
        "--method",
        method,
        "--seed",
        3,
    )
    assert result.exit_code == 0, result.output
    chosen = pq.read_table(out / "personas.parquet")
    assert chosen.num_rows == 100 and len(set(chosen["persona_id"].to_pylist())) < 100
    assert json.loads((out / "report.json").read_text())["info"]["method"] == method


def test_align_unbalanced_reports_what_the_pool_does_not_cover(tmp_path):
    """--method ot-unbalanced on a pool without low scorers: report.json and the console say how
    much reference mass is uncovered and where (its trait means against the reference's)."""
    rng = np.random.default_rng(5)
    ref = _reference(tmp_path / "ref.parquet", rng)
    x = np.clip(rng.normal(3.9, 0.4, (300, 5)), 1, 5)
    personas = _personas(tmp_path / "p.parquet", rng, x=x)
    out = tmp_path / "out"
    result = _run(
        "--personas",
        personas,
        "--reference",
        ref,
        "--n",
        100,
        "--out",
        out,
        "--method",
        "ot-unbalanced",
    )
    assert result.exit_code == 0, result.output
    info = json.loads((out / "report.json").read_text())["info"]
    assert info["method"] == "ot-unbalanced" and info["method_reason"] == "ot-unbalanced requested"
    cover = info["diagnostics"]["ot"]["uncovered"]
    assert info["diagnostics"]["ot"]["marginal"] == "unbalanced" and cover["mass"] > 0.01
    assert all(cover["region"]["mean"][t] < cover["reference_mean"][t] for t in TRAITS)
    assert f"uncovered: {cover['mass']:.1%} of the reference mass" in result.output
    assert "where: trait means O " in result.output


def test_align_also_on_demographics(tmp_path):
    rng = np.random.default_rng(2)
    genders = rng.choice(["male", "female"], 600, p=[0.5, 0.5]).tolist()
    ref = _reference(tmp_path / "ref.parquet", rng, gender=genders, age=rng.integers(18, 70, 600))
    pool_gender = rng.choice(["M", "F"], 400, p=[0.8, 0.2]).tolist()
    personas = _personas(
        tmp_path / "p.parquet",
        rng,
        rows=400,
        gender=pool_gender,
        age=rng.integers(18, 70, 400).astype(float),
    )
    out = tmp_path / "out"
    result = _run(
        "--personas", personas, "--reference", ref, "--n", 120, "--out", out, "--also", "age,gender"
    )
    assert result.exit_code == 0, result.output
    chosen = pq.read_table(out / "personas.parquet")["gender"].to_pylist()
    assert abs(chosen.count("F") / 120 - 0.5) < 0.1


def test_exclude_flagged_without_the_column_is_a_noted_no_op(tmp_path):
    rng = np.random.default_rng(3)
    personas = _personas(tmp_path / "p.parquet", rng)
    ref = _reference(tmp_path / "ref.parquet", rng)
    result = _run(
        "--personas",
        personas,
        "--reference",
        ref,
        "--n",
        50,
        "--out",
        tmp_path / "out",
        "--exclude-flagged",
    )
    assert result.exit_code == 0 and "no score_flags column" in result.output


def _bad_cases(tmp_path, rng):
    x = _traits(rng, 300, shift=0.3)
    nan, high = x.copy(), x.copy()
    nan[3, 2] = np.nan
    high[4, 0] = 5.5
    ids = [f"p{i}" for i in range(300)]
    return {
        "NaN trait": (_personas(tmp_path / "nan.parquet", rng, x=nan), 10, "NaN"),
        "out of range": (_personas(tmp_path / "hi.parquet", rng, x=high), 10, "outside 1-5"),
        "missing column": (
            _drop(_personas(tmp_path / "m.parquet", rng), "neuroticism"),
            10,
            "lack column",
        ),
        "duplicate ids": (
            _personas(tmp_path / "d.parquet", rng, ids=[*ids[:-1], "p0"]),
            10,
            "duplicate",
        ),
        "n too large": (_personas(tmp_path / "n.parquet", rng), 301, "cannot choose 301 distinct"),
    }


def _drop(path, column):
    pq.write_table(pq.read_table(path).drop_columns([column]), path)
    return path


@pytest.mark.parametrize(
    "case",
    [
        "NaN trait",
        "out of range",
        "missing column",
        "duplicate ids",
        "n too large",
        "empty reference",
    ],
)
def test_bad_input_is_one_clear_error(tmp_path, case):
    rng = np.random.default_rng(4)
    ref = _reference(tmp_path / "ref.parquet", rng)
    if case == "empty reference":
        personas, n, message = _personas(tmp_path / "p.parquet", rng), 10, "0 usable rows"
        ref = _reference(tmp_path / "empty.parquet", rng, rows=0)
    else:
        personas, n, message = _bad_cases(tmp_path, rng)[case]
    result = _run("--personas", personas, "--reference", ref, "--n", n, "--out", tmp_path / "o")
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines[-1].startswith("error: ") and message in lines[-1], result.output
    assert not (tmp_path / "o" / "personas.parquet").exists()
