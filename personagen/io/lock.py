"""One writer per bank: an exclusive lock on BANK/.lock while a command writes the bank.

Two commands writing one bank at once (two builds, a build and a `score`) would both append
parts, and each would take the other's rows for its own. The lock is `fcntl.flock` on BANK/.lock:
a second process asking for it is refused at once, and the kernel releases it when its holder's
process ends, however it ends (a SIGKILLed build leaves no stale lock behind). The file names its
holder (command, pid, host, since when) for the refusal's message. Within one process the lock
is re-entrant (a command that runs another on the same bank): counted, and released with the
last holder. A folder made only to hold the lock is removed with it, so that a command that
stops before writing anything leaves nothing behind. On a network file system the lock is as
good as its locks (NFSv4, e.g. EFS, has them; Linux maps flock onto them).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from personagen.errors import PersonagenError

LOCK_FILE = ".lock"


@dataclass
class _Held:
    fd: int
    count: int
    made_folder: bool


_HELD: dict[Path, _Held] = {}
"""The banks this process holds, by resolved folder."""


def lock_bank(folder: Path, command: str) -> None:
    """Hold `folder`'s lock for `command` (made with the folder if need be); raises
    `PersonagenError` naming the holder when another process holds it."""
    folder = folder.resolve()
    if folder in _HELD:
        _HELD[folder].count += 1
        return
    made_folder = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise PersonagenError(
                f"bank {folder} is being written by {holder}: wait for it to end, or stop it "
                "and run this again (a stopped command releases the bank at once)"
            ) from None
        if _same_file(fd, path):
            break
        os.close(fd)  # its holder removed the file on release: lock the one there now
    record = {
        "command": command,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(record).encode(), 0)
    _HELD[folder] = _Held(fd, 1, made_folder)


def unlock_bank(folder: Path) -> None:
    """Let go of one hold of `folder`'s lock; the last one releases it (and removes the folder
    if it was made for the lock and holds nothing else)."""
    folder = folder.resolve()
    held = _HELD.get(folder)
    if held is None:
        return
    held.count -= 1
    if held.count:
        return
    _release(folder)


def release_all() -> None:
    """Let go of every bank this process holds, whoever holds them: for the CLI when its
    command has ended (a failed command's context, and so its hold, lives on in the exception
    until that is gone)."""
    for folder in list(_HELD):
        _release(folder)


def _release(folder: Path) -> None:
    """Close the lock's file (the kernel releases the lock); first remove the folder if it was
    made for the lock and holds nothing else."""
    held = _HELD.pop(folder)
    with contextlib.suppress(OSError):
        if held.made_folder and [p.name for p in folder.iterdir()] == [LOCK_FILE]:
            (folder / LOCK_FILE).unlink()
            folder.rmdir()
    os.close(held.fd)


def _holder(fd: int) -> str:
    """Who holds the lock, as its file says."""
    try:
        record = json.loads(os.pread(fd, 4096, 0))
        return (
            f"`personagen {record['command']}` (pid {record['pid']} on {record['host']}, "
            f"since {record['since']})"
        )
    except (ValueError, KeyError, OSError):
        return "another process (it has not said which yet)"


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False
