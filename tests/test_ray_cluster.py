"""A real two-node Ray cluster on this machine (loopback only): `ray job submit` of a small build.

`ray start --head` plus a second `ray start --address ...` node, each with two logical CPUs (so a
task that claims a whole CPU finds one next to the fractional LLM actors), token
authentication on; the build job comes in through the job server with the repository as its
working directory and `jobs/runtime_env.yaml`, exactly as on a cloud cluster. The cluster's
processes are found by its own temporary folder and stopped at the end (`ray stop` would also stop
other Ray instances of the test session).
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest
from llm_test_server import Faults, LLMTestServer
from test_build import build_settings, ids, write_users
from test_mine import raw_ids, set_args

from personagen.io.bank import read_failures, read_manifest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).with_name("ray"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(args: list[str], env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess:
    result = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout)
    output = f"{result.stdout[-3000:]}\n{result.stderr[-2000:]}"
    assert result.returncode == 0, f"{' '.join(args[:3])} failed:\n{output}"
    return result


def stop_cluster(temp_dir: str) -> None:
    """Kill every process of the cluster whose temporary folder is `temp_dir`."""
    ours = [
        p
        for p in psutil.process_iter(["cmdline"])
        if any(temp_dir in part for part in (p.info["cmdline"] or []))
    ]
    for process in ours:
        for child in process.children(recursive=True):
            child.kill()
        process.kill()
    psutil.wait_procs(ours, timeout=30)


def alive_nodes(env: dict[str, str], address: str) -> int:
    status = subprocess.run(
        [RAY, "status", f"--address={address}"], env=env, capture_output=True, text=True, timeout=60
    )
    active = status.stdout.split("Active:")[-1].split("Pending:")[0]
    return active.count("node_")


def submit_when_ready(job: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    """`ray job submit`, again while the head's job agent has not registered yet."""
    deadline = time.monotonic() + 180
    while True:
        result = subprocess.run(job, env=env, capture_output=True, text=True, timeout=900)
        if "No available agent" not in result.stderr or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert result.returncode == 0, f"ray job submit failed:\n{result.stdout[-4000:]}"
    return result


@pytest.fixture
def two_node_cluster():
    # One temporary folder per node (short: Ray's socket paths): nodes sharing one would unpack
    # the job's working directory into the same path, each replacing the other's.
    head_dir, node_dir = (tempfile.mkdtemp(prefix="pgray", dir="/tmp") for _ in range(2))
    gcs, dashboard = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env |= {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    common = ["--num-cpus=2", "--node-ip-address=127.0.0.1", "--disable-usage-stats"]

    def own_ports() -> list[str]:
        """Free ports for a node's agents: the defaults (e.g. 52365) may be taken by another Ray
        on this machine, and the job agent then never registers ("No available agent")."""
        names = ("dashboard-agent-listen-port", "dashboard-agent-grpc-port",
                 "metrics-export-port", "runtime-env-agent-port")  # fmt: skip
        return [f"--{name}={free_port()}" for name in names]

    try:
        run(
            [
                RAY,
                "start",
                "--head",
                f"--port={gcs}",
                f"--dashboard-port={dashboard}",
                "--dashboard-host=127.0.0.1",
                "--include-dashboard=true",
                f"--temp-dir={head_dir}",
                *common,
                *own_ports(),
            ],
            env,
        )
        run(
            [RAY, "start", f"--address=127.0.0.1:{gcs}", f"--temp-dir={node_dir}", *common,
             *own_ports()],
            env,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while alive_nodes(env, f"127.0.0.1:{gcs}") < 2:
            assert time.monotonic() < deadline, "the second node did not join"
            time.sleep(1)
        yield env, f"http://127.0.0.1:{dashboard}"
    finally:
        for temp_dir in (head_dir, node_dir):
            stop_cluster(temp_dir)
            shutil.rmtree(temp_dir, ignore_errors=True)


def test_build_submitted_as_a_ray_job_to_a_two_node_cluster(two_node_cluster, tmp_path):
    env, dashboard = two_node_cluster
    n = 12
    src = write_users(tmp_path / "users.jsonl", n)
    bank = tmp_path / "bank"
    with LLMTestServer(Faults(latency_s=0.01, seed=5)) as server:
        settings = [s for s in build_settings(server) if not s.startswith("ray.")]
        submitted = submit_when_ready(
            [
                RAY,
                "job",
                "submit",
                f"--address={dashboard}",
                f"--working-dir={ROOT}",
                f"--runtime-env={ROOT / 'jobs' / 'runtime_env.yaml'}",
                "--",
                "python",
                "jobs/build_bank.py",
                "--input",
                str(src),
                "--out",
                str(bank),
                *set_args(settings),
            ],
            env,
        )
        assert "succeeded" in submitted.stdout + submitted.stderr
        assert len(server.records()) > n
    embedded = raw_ids(bank, "embeddings")
    failed = set(read_failures(bank, "mine").column("input_id").to_pylist())
    assert len(embedded) == len(set(embedded))
    assert set(embedded) | failed == set(ids(n))
    manifest = read_manifest(bank)
    assert manifest["build"]["finished"]
    assert (bank / "aligned" / "report.html").is_file()
    assert "aligned:" in submitted.stdout
