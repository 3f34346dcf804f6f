"""One writer per bank: a second command on a bank in use is refused, a killed holder frees it."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from llm_test_server import LLMTestServer
from synthetic import write_histories
from waiting import wait_until

from personagen.cli import cli
from personagen.commands.mine import mine
from personagen.config import load_config
from personagen.io.bank import Bank
from personagen.io.lock import LOCK_FILE
from personagen.runtime.context import RunContext

ROOT = Path(__file__).resolve().parents[1]


def holder(bank: Path) -> int | None:
    """The pid the bank's lock file names (None before a holder wrote it)."""
    try:
        return int(json.loads((bank / LOCK_FILE).read_text())["pid"])
    except (FileNotFoundError, ValueError, KeyError):
        return None


def free(bank: Path) -> bool:
    """Whether nobody holds the bank's lock (this process can take it, and lets go)."""
    fd = os.open(bank / LOCK_FILE, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


def test_a_context_is_reentrant_in_its_process_and_a_folder_made_for_it_goes_with_it(tmp_path):
    cfg = load_config(None, [])
    made = tmp_path / "new-bank"
    first = RunContext(cfg, made, "build")
    nested = RunContext(cfg, made, "consistency")  # one process: the same writer
    record = json.loads((made / LOCK_FILE).read_text())
    assert (record["command"], record["pid"], record["host"]) == (
        "build",
        os.getpid(),
        socket.gethostname(),
    )
    assert not free(made)
    del nested
    assert not free(made), "the outer context still holds it"
    del first
    assert not made.exists(), "a folder made only for the lock is removed with it"

    kept = tmp_path / "bank"
    kept.mkdir()
    (kept / "manifest.json").write_text("{}")
    ctx = RunContext(cfg, kept, "mine")
    Bank(kept).clear()  # --replace keeps the writer's lock
    assert sorted(p.name for p in kept.iterdir()) == [LOCK_FILE]
    del ctx
    assert free(kept) and kept.is_dir()


def test_a_command_that_fails_leaves_no_folder_behind(tmp_path):
    """The CLI lets go of the banks when a command ends, failed ones included (whose context
    lives on in the exception): a folder made only for the lock goes with it."""
    empty = tmp_path / "no-histories"
    empty.mkdir()
    out = tmp_path / "bank"
    result = CliRunner().invoke(cli, ["mine", str(empty), "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and result.output.count("\n") == 1
    assert not out.exists()


@pytest.mark.slow  # a personagen process, and a run of mine on the session's Ray
def test_a_second_command_is_refused_until_the_holder_is_killed(ray_local, tmp_path):
    histories = write_histories(tmp_path, 4) / "histories"
    bank = tmp_path / "bank"
    address = ray_local.get_runtime_context().gcs_address
    with LLMTestServer() as server:
        settings = [
            f"llm.base_url={server.base_url}",
            "mine.judge=false",
            "mine.min_words=10",
            f"ray.address={address}",
        ]
        server.hold()  # the first command waits on its first request, holding the bank
        args = [sys.executable, "-m", "personagen", "mine", str(histories), "--out", str(bank)]
        for item in settings:
            args += ["--set", item]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        log = (tmp_path / "first.err").open("w")
        first = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log, env=env)
        try:

            def running() -> None:
                assert first.poll() is None, (tmp_path / "first.err").read_text()[-2000:]

            wait_until(
                lambda: holder(bank) == first.pid,
                "the first command never took the bank",
                timeout_s=120,
                alive=running,
            )

            expected = (
                f"error: bank {bank.resolve()} is being written by `personagen mine` "
                f"(pid {first.pid} on {socket.gethostname()}, since "
            )
            way_out = (
                "): wait for it to end, or stop it and run this again (a stopped command "
                "releases the bank at once)\n"
            )
            for second in (
                ["score", str(bank)],
                ["mine", str(histories), "--out", str(bank), "--set", settings[0]],
            ):
                result = CliRunner().invoke(cli, second)
                assert result.exit_code == 2, result.output
                assert result.output.startswith(expected), result.output
                assert result.output.endswith(way_out) and result.output.count("\n") == 1

            first.send_signal(signal.SIGKILL)
            assert first.wait(timeout=60) == -signal.SIGKILL
        finally:
            if first.poll() is None:
                first.kill()
            log.close()
        assert free(bank), "the kernel released the killed command's lock"
        server.release()
        summary = mine(load_config(None, settings), histories, bank)
    assert (summary.counts["mine:in"], summary.counts["mine:out"]) == (4, 4)
    assert holder(bank) == os.getpid() and free(bank)
