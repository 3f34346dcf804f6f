"""A persistent cache of LLM answers: re-runs and resumed runs make no request twice.

One SQLite file in WAL mode per host (`<folder>/<hostname>.sqlite`): the LLM actors of one machine
share it safely (WAL allows one writer and many readers across processes; writes wait up to
`busy_timeout`). Keys are SHA-256 digests of everything that determines an answer: the endpoint
identity, the model, the messages, the sampling parameters, the response format and the stage's
prompt version. Values are the parts of the response the stages use (text, finish reason, usage,
logprobs). Neither keys nor values contain the API key.

Multi-node caveat: SQLite must not be shared between machines (WAL needs shared memory, and
network file systems break its locks). So each host writes its own file; on a cluster whose bank
folder is on a shared file system every node has its own cache, and an answer obtained on one
node is not reused by another. Resuming still works there: finished rows are found in the bank
itself, and the cache only spares the rows that were answered but not yet written.
"""

from __future__ import annotations

import hashlib
import json
import socket
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    created REAL NOT NULL
)
"""


def cache_key(parts: dict[str, Any]) -> str:
    """A stable digest of a request's identity (canonical JSON, sorted keys)."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def host_cache_path(folder: str | Path) -> Path:
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in socket.gethostname())
    return Path(folder) / f"{name or 'host'}.sqlite"


class ResponseCache:
    """Get/put answers by key; safe across threads of one process and processes of one host."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self.path, timeout=60, check_same_thread=False)
        with self._lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute(_SCHEMA)
            self._conn.commit()

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._conn.execute("SELECT value FROM answers WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, key: str, value: dict[str, Any]) -> None:
        blob = json.dumps(value, ensure_ascii=False)
        with self._lock:
            self._conn.execute(
                "INSERT OR REPLACE INTO answers (key, value, created) VALUES (?, ?, ?)",
                (key, blob, time.time()),
            )
            self._conn.commit()

    def __len__(self) -> int:
        with self._lock:
            return self._conn.execute("SELECT COUNT(*) FROM answers").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._conn.close()
