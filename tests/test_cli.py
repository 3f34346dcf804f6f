import re
import subprocess
import sys

import pytest
from click.testing import CliRunner

from personagen import __version__
from personagen.cli import cli


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """The real console entry point in a subprocess (exit codes, stderr, no traceback)."""
    return subprocess.run(
        [sys.executable, "-m", "personagen", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_help_lists_every_subcommand_with_one_line():
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    listed = re.findall(r"^  (\S+)\s+(\S.*)$", result.output.split("Commands:")[1], re.M)
    assert {name for name, _ in listed} == set(cli.commands)
    for name, line in listed:
        assert not line.endswith("..."), f"help line of {name} is cut: {line}"


def test_version():
    result = CliRunner().invoke(cli, ["--version"])
    assert __version__ in result.output


def test_each_command_has_common_flags():
    for name, command in cli.commands.items():
        commands = command.commands.values() if hasattr(command, "commands") else [command]
        for sub in commands:
            opts = {opt for param in sub.params for opt in getattr(param, "opts", [])}
            assert {"--config", "--set", "--seed", "-v"} <= opts, f"{name} {sub.name}"


def test_config_show_masks_the_key(monkeypatch):
    env = {"PERSONAGEN_TEST_KEY": "sk-abcdefghijklmnop", "PATH": ""}
    result = run_cli(
        "config", "show", "--set", "llm.api_key_env=PERSONAGEN_TEST_KEY", env={**env, **_base_env()}
    )
    assert result.returncode == 0, result.stderr
    assert "sk-abcdefghijklmnop" not in result.stdout + result.stderr
    assert "api_key: '****'" in result.stdout
    assert "api_key_env: PERSONAGEN_TEST_KEY" in result.stdout


def test_errors_are_one_line_without_traceback_and_traceback_with_verbose(tmp_path):
    result = run_cli("config", "show", "--set", "llm.concurrency=0", env=_base_env())
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert result.stderr.startswith("error: invalid config llm.concurrency")
    assert "Traceback" not in result.stderr

    verbose = run_cli("config", "show", "--set", "llm.concurrency=0", "-v", env=_base_env())
    assert verbose.returncode == 2
    assert "Traceback" in verbose.stderr


def test_usage_errors_exit_non_zero():
    result = run_cli("ingest", env=_base_env())
    assert result.returncode == 2
    assert "Missing argument" in result.stderr


@pytest.fixture(autouse=True)
def _no_ray_address(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)


def _base_env() -> dict:
    import os

    return {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
