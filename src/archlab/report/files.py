"""Writing report and table files atomically: a temporary file beside the target, renamed over
it, and removed whatever interrupts the write (Ctrl-C included), so no ``.*.tmp`` survives."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["atomic_write", "remove_stale_temporaries"]

_TMP_SUFFIX = ".tmp"


def _tmp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}{_TMP_SUFFIX}")


def atomic_write(path: Path, data: str | bytes) -> None:
    """Replace ``path`` with ``data`` in one rename; readers see the old file or the new one.

    The temporary file is removed on any exception, ``KeyboardInterrupt`` and ``SystemExit``
    included, before the exception goes on.
    """
    tmp = _tmp_path(path)
    try:
        if isinstance(data, str):
            tmp.write_text(data, encoding="utf-8")
        else:
            tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_temporaries(directory: Path) -> list[Path]:
    """Remove ``.NAME.PID.tmp`` files in ``directory`` left by a writer that no longer runs
    (killed with SIGKILL, say, where no cleanup can run). Returns what was removed."""
    removed = []
    if not directory.is_dir():
        return removed
    for tmp in directory.glob(f".*{_TMP_SUFFIX}"):
        pid = tmp.name[: -len(_TMP_SUFFIX)].rsplit(".", 1)[-1]
        if pid.isdigit() and (int(pid) == os.getpid() or not _alive(int(pid))):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed
