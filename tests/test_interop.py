"""Real servers installable here: llama-cpp-python's server started by hand with its default
flags (it answers `response_format: json_schema` with a 500 and a validation error), and the
embedded one. Structured answers must work against both, the rejected mode found with one
request per endpoint and run and never retried."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from pydantic import BaseModel
from synthetic import write_histories

from personagen.cli import cli
from personagen.config import load_config
from personagen.io.bank import read_bank, read_failures, read_manifest
from personagen.llm.client import Endpoint, LLMClient, negotiate_format
from personagen.llm.options import ClientOptions
from personagen.llm.server import default_model_path, free_port
from personagen.llm.usage import Usage
from personagen.stages.score import probe_logprobs

pytestmark = pytest.mark.slow  # the real SmolLM2-135M on the CPU

REJECTED = '"POST /v1/chat/completions HTTP/1.1" 500'
ANSWERED = '"POST /v1/chat/completions HTTP/1.1" 200'


class Ok(BaseModel):
    ok: bool


class HandStarted:
    """`python -m llama_cpp.server --model <the smollm2 GGUF> --port <free>`, nothing else; its
    access log (one line per request, with the status) in `log`."""

    def __init__(self, log: Path) -> None:
        self.port = free_port()
        self.log = log
        with log.open("w") as out:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "llama_cpp.server",
                    "--model",
                    str(default_model_path()),
                    "--port",
                    str(self.port),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 120
        while not self.ready():
            assert self.process.poll() is None, log.read_text()[-2000:]
            assert time.monotonic() < deadline, "the server did not answer /v1/models"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.base_url}/models", timeout=1) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def statuses(self) -> tuple[int, int]:
        """(requests rejected with a 500, requests answered) so far."""
        text = self.log.read_text()
        return text.count(REJECTED), text.count(ANSWERED)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


@pytest.fixture(scope="module")
def hand_started(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HandStarted]:
    server = HandStarted(tmp_path_factory.mktemp("llama") / "server.log")
    yield server
    server.stop()


def test_the_rejected_mode_is_found_with_one_request_and_never_retried(hand_started):
    cfg = ClientOptions(model="smollm2", timeout_s=120, max_tokens=16, temperature=0.0)
    endpoint = Endpoint.remote(hand_started.base_url)
    before = hand_started.statuses()
    assert asyncio.run(negotiate_format(cfg, endpoint)) == "json_object"
    rejected, answered = hand_started.statuses()
    assert (rejected - before[0], answered - before[1]) == (1, 1)

    async def structured() -> tuple[Ok, Usage, str]:
        client = LLMClient(cfg.model_copy(update={"response_format": "json_schema"}), endpoint)
        usage = Usage()
        try:
            answer = await client.structured(
                [{"role": "user", "content": 'Reply with {"ok": true}.'}],
                Ok,
                prompt_version="t",
                usage=usage,
            )
        finally:
            await client.aclose()
        return answer, usage, client.format_mode

    answer, usage, mode = asyncio.run(structured())
    assert isinstance(answer, Ok) and mode == "json_object"
    # the 500 is not retried: one rejected request, then the answer in JSON mode
    assert (usage.requests, usage.retries, usage.repairs) == (2, 0, 0)
    assert hand_started.statuses() == (rejected + 1, answered + 1)
    # its default flags give logprobs: scoring can read answers from token probabilities
    llm = load_config(None, [f"llm.base_url={hand_started.base_url}"]).stage_llm("score")
    supported, why, _ = asyncio.run(probe_logprobs(llm, endpoint, 5))
    assert (supported, why) == (True, "")


def mine_args(histories: Path, bank: Path, *settings: str) -> list[str]:
    common = ["mine.min_words=5", "mine.max_tokens=320", "judge.max_tokens=260"]
    common.append("llm.timeout_s=240")
    return [
        "mine",
        str(histories),
        "--out",
        str(bank),
        *(a for s in [*common, *settings] for a in ("--set", s)),
    ]


def assert_mined(bank: Path, rows: int, response_format: str) -> None:
    personas = read_bank(bank)
    assert personas.num_rows + read_failures(bank, "mine").num_rows == rows
    assert personas.num_rows >= 1, read_failures(bank).to_pylist()
    assert not [r for r in read_failures(bank).column("reason").to_pylist() if "HTTP" in r]
    manifest = read_manifest(bank)
    assert manifest["mine"]["response_format"] == response_format


def test_mine_and_judge_against_the_hand_started_server(hand_started, ray_local, tmp_path):
    histories = write_histories(tmp_path, 2) / "histories"
    before = hand_started.statuses()
    result = CliRunner().invoke(
        cli, mine_args(histories, tmp_path / "bank", f"llm.base_url={hand_started.base_url}")
    )
    assert result.exit_code == 0, result.output
    assert_mined(tmp_path / "bank", 2, "json_object")
    assert read_manifest(tmp_path / "bank")["judge"]["response_format"] == "json_object"
    # one probe for the endpoint the miner and the judge share, rejected once, in this run
    assert hand_started.statuses()[0] - before[0] == 1


def test_mine_against_the_embedded_server(ray_local, tmp_path):
    histories = write_histories(tmp_path, 2) / "histories"
    result = CliRunner().invoke(
        cli, [*mine_args(histories, tmp_path / "bank", "llm.embedded.n_ctx=2048"), "--no-judge"]
    )
    assert result.exit_code == 0, result.output
    assert_mined(tmp_path / "bank", 2, "auto")
