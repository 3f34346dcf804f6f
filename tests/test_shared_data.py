"""The ../shared/data gate of conftest: absent data skips a test, or fails it in CI
(PERSONAGEN_REQUIRE_SHARED_DATA=1), and a test that reads the data must carry the marker."""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent

TINY = """
import pytest
from conftest import shared_path


@pytest.mark.shared_data
def test_marked():
    assert shared_path("blogs").is_dir()


def test_unmarked():
    shared_path("blogs")
"""


def outcomes(tmp_path: Path, data: Path, **env: str) -> dict[str, tuple[str, str]]:
    """test name -> (passed | skipped | failed, message) of the tiny file, run by pytest with
    this repository's conftest as a plugin and `data` as the shared data folder."""
    (tmp_path / "test_tiny.py").write_text(TINY)
    report = tmp_path / "report.xml"
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PERSONAGEN_")}
    environ |= {"PYTHONPATH": str(TESTS), "PERSONAGEN_SHARED_DATA": str(data), **env}
    plugins = ["-p", "conftest", "-p", "no:cacheprovider"]
    subprocess.run(
        [sys.executable, "-m", "pytest", *plugins, f"--junitxml={report}", "test_tiny.py"],
        cwd=tmp_path,
        env=environ,
        capture_output=True,
        timeout=120,
        check=False,
    )
    results = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        found = [(child.tag, child.get("message", "")) for child in case]
        tag, message = found[0] if found else ("passed", "")
        results[case.get("name")] = ({"failure": "failed"}.get(tag, tag), message)
    return results


@pytest.mark.parametrize(
    ("present", "require", "marked"),
    [(False, False, "skipped"), (False, True, "failed"), (True, True, "passed")],
)
def test_absent_data_skips_or_fails_and_unmarked_readers_fail(tmp_path, present, require, marked):
    data = tmp_path / "data"
    if present:
        (data / "blogs").mkdir(parents=True)
    env = {"PERSONAGEN_REQUIRE_SHARED_DATA": "1"} if require else {}
    got = outcomes(tmp_path, data, **env)
    blogs = data / "blogs"
    expected = {
        "skipped": f"needs the shared data set {blogs} (absent on this machine)",
        "failed": f"Failed: the shared data set {blogs} is absent "
        "(PERSONAGEN_REQUIRE_SHARED_DATA=1)",
        "passed": "",
    }
    assert got["test_marked"] == (marked, expected[marked])
    unmarked = (
        "Failed: test_tiny.py::test_unmarked reads the shared data without the shared_data "
        "marker (mark the test; import the helper as `from conftest import shared_path`)"
    )
    assert got["test_unmarked"] == ("failed", unmarked)
