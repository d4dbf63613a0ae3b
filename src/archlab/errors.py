"""Errors a user can fix. The CLI prints them as one line and exits with code 2."""

from __future__ import annotations


class ArchlabError(Exception):
    """Base class for every error caused by user input (spec, data, store)."""

    exit_code = 2


class SpecError(ArchlabError):
    """The study file is malformed: the message names file, model, layer index, layer and field."""


class DataError(ArchlabError):
    """A dataset cannot be found, downloaded or verified."""


class StoreError(ArchlabError):
    """The run store cannot be opened or does not hold what was asked for."""
