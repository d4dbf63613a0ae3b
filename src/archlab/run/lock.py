"""The study directory: checked before anything is written, and locked while a process uses it.

Two `archlab run` processes on one study directory would each reset the runs the other finished
and retrain them. The lock is an ``fcntl.flock`` on ``<study dir>/.archlab.lock``: the kernel
releases it when its holder exits or dies (SIGKILL included), so a lock is never stale and
nothing has to clean it up. The file's content (pid, host, start time, command) only serves
the message that a second process prints.

Run workers are forked from a fork server, not from the process holding the lock, so they
never inherit it: when the holder dies, the lock goes with it (its orphaned workers notice
the death and stop at their next batch).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import threading
import time
from pathlib import Path
from types import TracebackType

from archlab.errors import ArchlabError, DiskFullError

__all__ = ["LOCK_FILE", "StudyBusyError", "StudyLock", "check_output_dir", "disk_full_error"]

LOCK_FILE = ".archlab.lock"


class StudyBusyError(ArchlabError):
    """Another process holds the study directory's lock."""


def check_output_dir(directory: str | Path) -> None:
    """Raise :class:`ArchlabError` (one line) unless ``directory`` is, or can be created as, a
    writable directory. Creates nothing: it runs before any timing or training."""
    path = Path(directory)
    try:
        if path.exists():
            if not path.is_dir():
                raise ArchlabError(f"{path}: exists and is not a directory; give a directory "
                                   "(or a new path) for the study")
            if not os.access(path, os.W_OK | os.X_OK):
                raise ArchlabError(f"{path}: the directory is not writable (read-only)")
            return
        for ancestor in path.absolute().parents:
            if not ancestor.exists():
                continue
            if not ancestor.is_dir():
                raise ArchlabError(f"{path}: cannot create it: {ancestor} is a file, not a "
                                   "directory")
            if not os.access(ancestor, os.W_OK | os.X_OK):
                raise ArchlabError(f"{path}: cannot create it: {ancestor} is not writable "
                                   "(read-only)")
            return
    except OSError as exc:  # e.g. no permission to look at an ancestor
        raise ArchlabError(f"{path}: cannot use it: {exc.strerror or exc}") from None


def disk_full_error(directory: str | Path, detail: str) -> DiskFullError:
    """The one line for a full disk: where, what failed, and that a rerun picks up from here."""
    return DiskFullError(f"disk full: no space left to write in {directory} ({detail}); free "
                         "some space and rerun the same command: finished runs are kept")


# Locks this process holds, by lock-file path: the CLI holds the lock for the whole command
# and run_study takes it again inside. flock locks belong to an open file, so a second open
# in the same process would conflict with the first; counting makes the lock reentrant.
_held: dict[str, list[int]] = {}  # path -> [fd, depth]
_held_guard = threading.Lock()


class StudyLock:
    """Exclusive, reentrant lock on a study directory (created if needed).

    ``with StudyLock(directory):`` raises :class:`StudyBusyError` at once, naming the holder,
    when another process holds it.
    """

    def __init__(self, directory: str | Path, command: str | None = None) -> None:
        self.directory = Path(directory)
        self.path = self.directory / LOCK_FILE
        self.command = command if command is not None else " ".join(sys.argv)
        self._key = ""

    def acquire(self) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ArchlabError(f"{self.directory}: cannot create the study directory: "
                               f"{exc.strerror or exc}") from None
        key = str(self.path.resolve())
        with _held_guard:
            if key in _held:
                _held[key][1] += 1
                self._key = key
                return
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as exc:
                raise ArchlabError(f"{self.path}: cannot open the study lock: "
                                   f"{exc.strerror or exc}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _describe_holder(fd)
                os.close(fd)
                raise StudyBusyError(f"{self.directory} is in use by another archlab process "
                                     f"({holder}); wait for it to finish or stop it, or write "
                                     "elsewhere (--out)") from None
            _write_holder(fd, self.command)
            _held[key] = [fd, 1]
            self._key = key

    def release(self) -> None:
        with _held_guard:
            entry = _held.get(self._key)
            if entry is None:
                return
            entry[1] -= 1
            if entry[1] == 0:
                del _held[self._key]
                # Closing the file releases the lock; the file stays (removing it would let a
                # third process lock a fresh inode while a second still waits on the old one).
                os.close(entry[0])

    def __enter__(self) -> StudyLock:
        self.acquire()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


def _write_holder(fd: int, command: str) -> None:
    info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(),
            "command": command[:300]}
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
    except OSError:  # only the busy message needs it; a full disk is reported by the study
        pass


def _describe_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(info["since"])))
        return (f"pid {int(info['pid'])} on {info['host']}, since {since}, running "
                f"`{info['command']}`")
    except (OSError, ValueError, KeyError, TypeError):
        # The holder has the lock but has not written its details yet (a moment after start).
        return "holder details not written yet"
