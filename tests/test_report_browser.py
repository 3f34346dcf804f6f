"""The align and evaluate reports in a real headless Chromium: offline, every figure shown, not
blank (`browser.assert_renders`); and the check itself catches a broken figure and a blank page."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from browser import PNG, assert_renders, chromium
from click.testing import CliRunner

from personagen import TRAITS
from personagen.cli import cli

FIGURES = {"align": 3, "evaluate": 2}
"""align: histograms, correlations, weights; evaluate: histograms, correlations."""


def _traits(path, rng, rows, shift):
    x = np.clip(rng.normal(3.2 + shift, 0.6, (rows, len(TRAITS))), 1, 5)
    columns = {t: x[:, j] for j, t in enumerate(TRAITS)}
    pq.write_table(pa.table({"persona_id": [f"p{i}" for i in range(rows)], **columns}), path)
    return path


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    """report.html of `personagen align` and of `personagen evaluate --before`."""
    chromium()  # skip (or fail, in CI) before building anything
    root = tmp_path_factory.mktemp("reports")
    rng = np.random.default_rng(0)
    personas = _traits(root / "personas.parquet", rng, 200, 0.4)
    ref = _traits(root / "ref.parquet", rng, 600, 0.0)
    runner = CliRunner()
    common = ["--reference", str(ref), "--seed", "1"]
    result = runner.invoke(
        cli,
        ["align", "--personas", str(personas), "--n", "40", "--out", str(root / "align"), *common],
    )
    assert result.exit_code == 0, result.output
    aligned = root / "align" / "personas.parquet"
    before = ["--before", str(personas), "--out", str(root / "evaluate")]
    result = runner.invoke(cli, ["evaluate", "--personas", str(aligned), *before, *common])
    assert result.exit_code == 0, result.output
    return {name: root / name / "report.html" for name in FIGURES}


@pytest.mark.parametrize("command", sorted(FIGURES))
def test_the_report_renders_in_a_browser(reports, tmp_path, command):
    page = assert_renders(reports[command], tmp_path, figures=FIGURES[command])
    assert page.screenshot.stat().st_size > 10_000


def test_a_figure_that_does_not_decode_is_caught(reports, tmp_path):
    html = reports["align"].read_text(encoding="utf-8")
    payload = PNG.search(html).group(1)
    broken = tmp_path / "broken.html"
    broken.write_text(html.replace(payload, payload[:40] + "A" * 200, 1), encoding="utf-8")
    with pytest.raises(AssertionError, match=r"figure 0 of .* does not decode"):
        assert_renders(broken, tmp_path / "work", figures=3)


def test_a_figure_the_browser_cannot_load_is_caught(reports, tmp_path):
    """The embedded PNG decodes, but the page points the browser at a file it cannot fetch."""
    html = reports["evaluate"].read_text(encoding="utf-8")
    elsewhere = tmp_path / "elsewhere.html"
    elsewhere.write_text(
        html.replace("</body>", '<img src="https://example.invalid/plot.png"></body>'),
        encoding="utf-8",
    )
    with pytest.raises(AssertionError, match=r"the page fetched .*example\.invalid"):
        assert_renders(elsewhere, tmp_path / "work", figures=2)


def test_a_blank_page_is_caught(reports, tmp_path):
    html = reports["evaluate"].read_text(encoding="utf-8")
    blank = tmp_path / "blank.html"
    start, end = html.index("<body>") + len("<body>"), html.index("</body>")
    hidden = '<div style="display:none">' + html[start:end] + "</div>" + "x" * 300
    blank.write_text(html[:start] + hidden + html[end:], encoding="utf-8")
    with pytest.raises(AssertionError, match="looks blank"):
        assert_renders(blank, tmp_path / "work", figures=2)
