"""Errors a user can fix. The CLI prints them as one line and exits with code 2."""

from __future__ import annotations

import errno

__all__ = ["ArchlabError", "DataError", "DiskFullError", "SpecError", "StoreError", "is_disk_full"]


class ArchlabError(Exception):
    """Base class for every error caused by user input (spec, data, store)."""

    exit_code = 2
    #: Every problem found, one line each, when there are several (a study's validation
    #: errors); empty when the message says it all. The CLI prints these instead of the message.
    lines: tuple[str, ...] = ()


class SpecError(ArchlabError):
    """The study file is malformed: the message names file, model, layer index, layer and field."""


class DataError(ArchlabError):
    """A dataset cannot be found, downloaded or verified."""


class StoreError(ArchlabError):
    """The run store cannot be opened or does not hold what was asked for."""


class DiskFullError(ArchlabError):
    """The disk (or quota) holding the study directory is full: free space and rerun."""


_DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# How the wrapped cases say it: safetensors re-raises io errors as SafetensorError text,
# SQLite as "database or disk is full".
_DISK_FULL_TEXT = ("no space left on device", "disk quota exceeded", "database or disk is full")


def is_disk_full(exc: BaseException) -> bool:
    """True when ``exc``, or an exception it wraps, says the disk (or quota) is full."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _DISK_FULL_ERRNOS:
            return True
        if any(text in str(current).lower() for text in _DISK_FULL_TEXT):
            return True
        current = current.__cause__ or current.__context__
    return False
