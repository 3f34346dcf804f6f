"""One writer per bank: an exclusive lock on BANK/.lock while a command writes the bank.

Two commands writing one bank at once (two builds, a build and a `score`) would both append
parts, and each would take the other's rows for its own. The lock is `fcntl.flock` on BANK/.lock:
a second process asking for it is refused at once, and the kernel releases it when its holder's
process ends, however it ends (a SIGKILLed build leaves no stale lock behind). The file names its
holder (command, pid, host, since when) for the refusal's message. Within one process the lock
is re-entrant (a command that runs another on the same bank): counted, and released with the
last holder. A folder made only to hold the lock is removed with it (and the empty folders
made above it), so that a command that stops before writing anything leaves nothing behind. On
a network file system the lock is as good as its locks (NFSv4, e.g. EFS, has them; Linux maps
flock onto them).
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
    made: Path | None
    """The topmost folder made for the lock (the bank's folder or an ancestor), if any."""


_HELD: dict[Path, _Held] = {}
"""The banks this process holds, by resolved folder."""


def lock_bank(folder: Path, command: str) -> None:
    """Hold `folder`'s lock for `command` (made with the folder if need be); raises
    `PersonagenError` naming the holder when another process holds it."""
    folder = folder.resolve()
    if folder in _HELD:
        _HELD[folder].count += 1
        return
    made = _first_missing(folder)
    check_out(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PersonagenError(
            f"cannot make {folder}: {exc.strerror or exc}: choose another --out"
        ) from None
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
    _HELD[folder] = _Held(fd, 1, made)


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
        if held.made is not None and [p.name for p in folder.iterdir()] == [LOCK_FILE]:
            (folder / LOCK_FILE).unlink()
            folder.rmdir()
            while folder != held.made and not any(folder.parent.iterdir()):
                folder = folder.parent  # the (empty) folders made above it too
                folder.rmdir()
    os.close(held.fd)


def _first_missing(folder: Path) -> Path | None:
    """The topmost folder of `folder`'s path that does not exist yet (None: it exists)."""
    missing = None
    while not folder.exists() and folder != folder.parent:
        missing, folder = folder, folder.parent
    return missing


def check_out(path: str | Path, flag: str = "--out") -> None:
    """Refuse, before any work, an output path that cannot be made: one under a regular file,
    or under a folder this process may not write (`flag` names the option to change)."""
    path = Path(path).absolute()
    above = path
    while not above.exists() and above != above.parent:
        above = above.parent
    if above == path:
        return
    if not above.is_dir():
        raise PersonagenError(
            f"cannot write {path}: {above} is a file, not a folder: choose another {flag}"
        )
    if not os.access(above, os.W_OK | os.X_OK):
        raise PersonagenError(
            f"cannot write {path}: the folder {above} is not writable: choose another {flag}"
        )


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
